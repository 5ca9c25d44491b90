"""The unit's system-call filter allows every call the device makes (DESIGN.md "On a Raspberry Pi, as installed").

The allowed set comes from the shipped unit itself (``tools/syscalls.py``
expands each ``SystemCallFilter=`` line with ``systemd-analyze
syscall-filter``). Two ways to hold the device to it:

- enforced: ``tools/under_filter.py`` loads that set into the kernel
  (seccomp, EPERM for the rest, as systemd does) and the production entry
  point (``python -m device``) runs under it on the fake Pi, takes a rating
  and delivers it; the device gets the kernel's answer about the clock
  (``clock_adjtime``), which a copy of the unit without it turns into EPERM
  (a device that never sees NTP). In the default run: a few seconds.
- traced: ``strace -f`` of the doctor and of the device taking a rating,
  every call made compared with the set; a copy of the unit that denies
  ``clock_adjtime`` fails. About 25 s under strace: ``make syscalls``.

A call the unit denies fails with EPERM under systemd, silently:
``clock_adjtime`` denied left the device stamping every rating unsynchronised.
"""
import os
import re
import shutil
import subprocess
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
    from hall import HallServer

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


# --- the unit's filter enforced by the kernel (seccomp), as systemd loads it -----------------------------

ENFORCE = ["/usr/bin/python3", str(REPO / "tools" / "under_filter.py")]
ASK_THE_CLOCK = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                 "print(libc.adjtimex(ctypes.create_string_buffer(512)), ctypes.get_errno())")


def seccomp_missing() -> bool:
    return subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True).returncode != 0


needs_seccomp = pytest.mark.skipif(not os.path.exists("/usr/bin/python3") or seccomp_missing(),
                                   reason="needs Debian's python3-seccomp (make setup installs it)")


def under(unit: Path, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*ENFORCE, str(unit), "--", *command], capture_output=True, text=True, timeout=60,
                          **kwargs)


@needs_seccomp
def test_under_the_enforced_filter_the_device_gets_the_kernels_answer_about_the_clock(tmp_path):
    answer = under(UNIT, sys.executable, "-c", ASK_THE_CLOCK).stdout.split()
    assert answer and answer[0] != "-1", answer          # 0 (synced) or 5 (TIME_ERROR): the kernel's own answer
    denied = tmp_path / "window-evaluator.service"
    denied.write_text(UNIT.read_text().replace("SystemCallFilter=adjtimex clock_adjtime clock_adjtime64",
                                               "SystemCallFilter=adjtimex"))
    assert under(denied, sys.executable, "-c", ASK_THE_CLOCK).stdout.split() == ["-1", "1"]   # EPERM: never synced


@needs_seccomp
def test_the_device_takes_a_rating_under_the_enforced_filter_on_the_fake_pi(tmp_path, hall):
    hall.set_key("WE-0001", KEY)
    config = write_config(tmp_path, hall)
    pi = FakePi()
    try:
        child = pi.start(["--config", str(config)], cwd=str(tmp_path), log_path=str(tmp_path / "device.log"),
                         wrapper=(*ENFORCE, str(UNIT), "--"))
        child.wait_for(r"screen: idle", timeout=60)
        pi.press(5, ms=80)
        deadline = time.monotonic() + 30
        while not [e for e in hall.events("WE-0001") if e["type"] == "rating"]:
            assert time.monotonic() < deadline, child.log()[-3000:]
            time.sleep(0.1)
        assert "Operation not permitted" not in child.log() and "Traceback" not in child.log()
        assert child.stop(timeout=20) == 0
    finally:
        pi.close()


def test_under_the_units_filter_the_device_learns_the_clocks_sync_state(tmp_path):
    # The call the device makes to ask is one the unit allows: adjtimex() in glibc is clock_adjtime.
    calls, out = syscalls.traced([sys.executable, "-c",
                                  "from device.clock import kernel_clock_synced; print(kernel_clock_synced())"],
                                 env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.strip() in ("True", "False") and out.strip() == str(kernel_clock_synced())
    assert calls & {"clock_adjtime", "adjtimex", "clock_adjtime64"}
    assert not calls & {"clock_adjtime", "adjtimex", "clock_adjtime64"} - syscalls.allowed(UNIT.read_text())
