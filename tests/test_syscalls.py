"""The unit's system-call filter allows every call the device makes (DESIGN.md "On a Raspberry Pi, as installed").

The allowed set comes from the shipped unit itself (``tools/syscalls.py``
expands each ``SystemCallFilter=`` line with ``systemd-analyze
syscall-filter``); the calls made come from ``strace -f`` on the doctor and
on the production entry point (``python -m device``) running on the fake
Pi: started, a button pressed, the rating delivered to the hall, stopped by
SIGTERM as systemd stops it (about 25 s under strace: ``make syscalls``, in
CI; the default run checks how the filter is read and the clock's call). A call the unit denies fails with EPERM under
systemd, silently: ``clock_adjtime`` denied left the device stamping every
rating unsynchronised.
"""

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from device.clock import kernel_clock_synced
from sim.fakepi.pi import FakePi

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "window-evaluator.service"
KEY = "syscall-test-key"

sys.path.insert(0, str(REPO / "tools"))
import syscalls  # noqa: E402

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("strace") is None or shutil.which("systemd-analyze") is None,
                       reason="needs strace and systemd-analyze (make setup installs them)"),
]


def write_config(folder: Path, hall) -> Path:
    key = folder / "device.key"
    key.write_text(KEY)
    key.chmod(0o600)
    hall.set_key("WE-0001", KEY)
    data = folder / "data"
    data.mkdir(mode=0o700)
    config = folder / "evaluator.toml"
    config.write_text(
        f'[device]\nid = "WE-0001"\n[session]\nsource = "free"\nmin_interval_s = 0\n'
        f'[upload]\nserver = "{hall.url}"\nkey_file = "{key}"\nbackoff_min_s = 0.1\nbackoff_max_s = 0.5\n'
        f'[outbox]\npath = "{data / "outbox.db"}"\n'
        f'[console]\nport = "{folder / "no-console"}"\nsettings_path = "{data / "settings.toml"}"\n')
    return config


def traced_on_the_fake_pi(tmp_path: Path, args: list[str], work) -> set[str]:
    folder = tmp_path / "pi"
    folder.mkdir(parents=True)
    trace = tmp_path / "trace"
    pi = FakePi()
    try:
        child = pi.start(args, cwd=str(folder), log_path=str(tmp_path / "child.log"),
                         wrapper=("strace", "-f", "-qq", "-o", str(trace)))
        work(pi, child)
        child.stop(timeout=20)
        text = trace.read_text(errors="replace")
        # SQLite gives a journal or WAL it made to root (fchown(fd, 0, 0)) only when it runs as root, as the
        # test does; the unit runs as the user evaluator, where SQLite makes no such call.
        text = re.sub(r"(?m)^.*\bfchown\(\d+, 0, 0\).*$", "", text) if os.geteuid() == 0 else text
        return syscalls.calls_in(text)
    finally:
        pi.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The system calls made by the doctor and by a device that took a rating, on the fake Pi."""
    from sim.hall import HallServer

    tmp = tmp_path_factory.mktemp("syscalls")
    hall = HallServer(tmp / "hall.db", default_key=KEY)
    hall.start()
    try:
        config = write_config(tmp, hall)

        def doctor(pi, child):
            child.proc.wait(90)

        def device(pi, child):
            child.wait_for(r"screen: idle", timeout=60)
            pi.press(5, ms=80)
            deadline = time.monotonic() + 30
            while not [e for e in hall.events("WE-0001") if e["type"] == "rating"]:
                assert time.monotonic() < deadline, child.log()[-3000:]
                time.sleep(0.1)

        calls = traced_on_the_fake_pi(tmp / "doctor", ["doctor", "--config", str(config)], doctor)
        calls |= traced_on_the_fake_pi(tmp / "device", ["--config", str(config)], device)
        return calls
    finally:
        hall.close()


@pytest.mark.slow
def test_the_shipped_unit_allows_every_call_the_doctor_and_the_device_make(made):
    assert "clock_adjtime" in made or "adjtimex" in made     # the device asks whether its clock is synced
    assert len(made) > 40
    assert syscalls.denied(UNIT.read_text(), made) == set()


@pytest.mark.slow
def test_the_check_fails_on_a_unit_that_denies_clock_adjtime(made):
    unit = UNIT.read_text()
    for line in syscalls.filter_lines(unit):
        if not line.startswith("~"):
            unit = unit.replace(f"SystemCallFilter={line}\n",
                                "SystemCallFilter=" + " ".join(w for w in line.split() if "clock_adjtime" not in w)
                                + "\n")
    assert "clock_adjtime" in syscalls.denied(unit, made)


def test_the_filter_is_read_as_systemd_reads_it():
    unit = "[Service]\nSystemCallFilter=@clock read\nSystemCallFilter=~@clock\nSystemCallFilter=adjtimex\n"
    assert syscalls.allowed(unit) == {"read", "adjtimex"}
    with pytest.raises(ValueError):
        syscalls.allowed("[Service]\nSystemCallFilter=~@clock\n")


def test_under_the_units_filter_the_device_learns_the_clocks_sync_state(tmp_path):
    # The call the device makes to ask is one the unit allows: adjtimex() in glibc is clock_adjtime.
    calls, out = syscalls.traced([sys.executable, "-c",
                                  "from device.clock import kernel_clock_synced; print(kernel_clock_synced())"],
                                 env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.strip() in ("True", "False") and out.strip() == str(kernel_clock_synced())
    assert calls & {"clock_adjtime", "adjtimex", "clock_adjtime64"}
    assert not calls & {"clock_adjtime", "adjtimex", "clock_adjtime64"} - syscalls.allowed(UNIT.read_text())
