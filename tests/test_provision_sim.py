"""A technician provisions the running simulator over its real pty console.

The provisioning command applies a profile (new device id, window, staff
and device key, and a first PIN), commits, reads back and runs the uplink
self-test; the device then rates as the new window and staff, shows them on
the idle screen, and still does after a restart.
"""

import subprocess
import sys
import threading
import time

import pytest

import provision
from device.ui.care import apply_shift, shift_cycle
from device.ui.models import IdleScreen, Indicators
from device.ui.screens import render
from provision.cli import main

KEY = "factory-key"
NEW_KEY = "hall-12-key-7f3a9c"
PIN = "2468"

pytestmark = pytest.mark.timeout(120)


class Sim:
    """The simulator as a process fed on stdin, its console path read from stdout."""

    def __init__(self, tmp_path, hall, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "--data", str(tmp_path / "data"), "--server", hall.url,
             "--frames", str(tmp_path / "frames"), "--set", "session.thanks_s=0.3",
             "--set", "session.source=free", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.console = ""
        for line in self.proc.stdout:
            if line.startswith("console: "):
                self.console = line.split(": ", 1)[1].strip()
                break
        assert self.console, self.proc.stderr.read()
        self.stderr: list[str] = []
        stderr = self.proc.stderr
        threading.Thread(target=lambda: self.stderr.extend(stderr), daemon=True).start()

    def finish(self, script):
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.close()
        assert self.proc.wait(60) == 0, "".join(self.stderr)
        return "".join(self.stderr)


def idle_frames_match(frames_dir, model):
    """Whether some saved frame is ``model`` rendered (at any OLED-care shift)."""
    want = render(model, (128, 64))
    shifted = {apply_shift(want, s).tobytes() for s in shift_cycle(1)}
    return any(
        _load(p) in shifted for p in sorted(frames_dir.glob("frame-*.png")))


def _load(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("1").tobytes()


def test_provisioning_round_trip_over_the_pty(tmp_path, hall, capsys):
    hall.set_key("HALL-12", NEW_KEY)
    profile = tmp_path / "window12.toml"
    profile.write_text(
        f'device_key = "{NEW_KEY}"\n'
        '[device]\nid = "HALL-12"\nwindow_no = "12"\nwindow_name = "社保医保"\n'
        '[staff]\nno = "0777"\nname = "王小明"\n', encoding="utf-8")

    sim = Sim(tmp_path, hall, "--device-key", KEY)
    code = main(["--port", sim.console, "--profile", str(profile), "--pin", PIN,
                           "--timeout", "15"])
    report = capsys.readouterr()
    assert code == 0, report.out + report.err
    assert NEW_KEY not in report.out + report.err and PIN not in report.out + report.err
    log = sim.finish("press 1\nwait 1\n")
    assert NEW_KEY not in log and PIN not in log

    (rating,) = hall.events("HALL-12")
    assert (rating["window_no"], rating["staff_no"], rating["staff_name"]) == ("12", "0777", "王小明")
    # The clock mark depends on this machine's NTP, or on whether the hall's signed time came yet.
    idles = [IdleScreen("12", "社保医保", "王小明", "0777", "https://hcp.example.org/w/01",
                        Indicators(offline=False, backlog=0, clock_unset=unset)) for unset in (False, True)]
    assert any(idle_frames_match(tmp_path / "frames", idle) for idle in idles)

    # Power off and on: the committed settings and key are still in use.
    for old in (tmp_path / "frames").glob("*.png"):
        old.unlink()
    again = Sim(tmp_path, hall)
    again.finish("press 2\nwait 1\n")
    # A clock event may come between them (this machine's clock unsynced: hall time); ratings are the point.
    assert [(e["seq"], e["staff_name"], e["level"]) for e in hall.events("HALL-12") if e["type"] == "rating"] == [
        (1, "王小明", "very_satisfied"), (2, "王小明", "satisfied")]
    assert any(idle_frames_match(tmp_path / "frames", idle) for idle in idles)

    # Once the PIN is set, a change without it is refused.
    third = Sim(tmp_path, hall)
    code = main(["--port", third.console, "--profile", str(profile), "--timeout", "15",
                           "--no-tests"])
    assert code == provision.EXIT_PIN
    third.finish("")


def test_garbage_on_the_console_leaves_the_device_answering_and_rating(tmp_path, hall):
    import random

    import serial

    sim = Sim(tmp_path, hall, "--device-key", KEY)
    rnd = random.Random(2026)
    junk = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(40)]
    junk += [b"A" * 5000 + b"\n", b"\xff\xfe\xc3\x28 status\n", b"IMPROV\x01\x03\x20\x01",
             b"IMPROV\x01\x03\x05\x01\x03ab", b"\x00" * 64 + b"\r\n", "状态\n".encode("gb18030")]
    with serial.Serial(sim.console, 115200, timeout=0.2) as port:
        for chunk in junk:
            port.write(chunk)
        port.write(b"\n")
        port.reset_input_buffer()
        deadline = time.monotonic() + 10
        answer = b""
        while b'"device_id"' not in answer and time.monotonic() < deadline:
            port.write(b"\nStatus\n")
            answer += port.read(4096)
    assert b'"device_id": "WE-0001"' in answer or b'"device_id":"WE-0001"' in answer, answer[-500:]
    sim.finish("press 5\nwait 0.5\n")
    assert [e["level"] for e in hall.events()] == ["very_dissatisfied"]
