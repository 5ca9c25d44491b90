"""The supervisor keeps the console up whatever fails, and the device repairable over it.

Each test runs the supervisor in a thread on simulated pins and a luma
dummy panel, with the technician's console on a real pty and the stand-in
hall server on loopback: what a technician types and what the hall stores
are what is asserted.
"""

import json
import os
import queue
import threading
import time
from typing import Any

import pytest
import serial

from device.clock import Clocks
from device.errors import DisplayError
from device.hardware import Hardware, staff_request
from device.settings import SettingsStore
from device.supervisor import RECOVERY, RUNNING, Supervisor
from helpers import PINS
from provision.session import DeviceSession
from sim.hardware import make_sim_hardware
from sim.pty_port import PtyPort

KEY = "supervisor-test-key"
RARE = "王\U00020000"  # 𠀀: a rare character (生僻字) the bitmap font lacks

pytestmark = pytest.mark.timeout(60)


class Technician:
    """A terminal on the console's pty: one command line out, its JSON answer back."""

    def __init__(self, path):
        self.port = serial.Serial(path, timeout=0.2)
        self.session = DeviceSession(self.port, timeout=10.0)

    def __call__(self, line, timeout=10.0):
        self.port.reset_input_buffer()
        return self.session.ask(line, timeout)

    def close(self):
        self.port.close()


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class Rig:
    """A supervisor with its console on a pty, run in a thread until closed."""

    def __init__(self, tmp_path, hall, make_hardware=None, panel=None, **supervisor_args):
        self.panel = panel
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        key_file = data / "device.key"
        key_file.write_text(KEY)
        hall.set_key("WE-0001", KEY)
        self.store = SettingsStore(data / "settings.toml", overrides=[
            f"outbox.path={json.dumps(str(data / 'outbox.db'))}",
            f"upload.key_file={json.dumps(str(key_file))}",
            f"upload.server={json.dumps(hall.url)}",
            'session.source="free"', "session.min_interval_s=0", "buttons.bounce_ms=0",
            "upload.backoff_min_s=0.1", "upload.backoff_max_s=0.5"])
        self.events: queue.Queue[object] = queue.Queue()
        self.factory: Any = None
        self.port = PtyPort()
        self.supervisor = Supervisor(
            self.store, make_hardware or self._sim_hardware, events=self.events, console_port=self.port,
            clocks=Clocks(synced=lambda: True), rebuild_hardware=False, **supervisor_args)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.supervisor.run, args=(self.stop,), daemon=True)
        self.thread.start()
        self.tech = Technician(self.port.path)

    def _sim_hardware(self, config):
        hardware, self.factory = make_sim_hardware(config, self.events, staff_request)
        if self.panel is not None:
            hardware = Hardware(hardware.buttons, self.panel, hardware.size, hardware.events)
        return hardware

    def press(self, n):
        pin = self.factory.pin(PINS[n - 1])
        pin.drive_low()
        pin.drive_high()

    def wait_mode(self, mode):
        assert wait_for(lambda: self.supervisor.mode == mode), f"mode {self.supervisor.mode}, not {mode}"

    def close(self):
        self.stop.set()
        self.supervisor.request_rebuild()
        self.thread.join(10)
        self.tech.close()
        self.port.close()


@pytest.fixture
def rig(tmp_path, hall):
    made = []

    def make(**kwargs):
        r = Rig(tmp_path, hall, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def fault_keys(status):
    return {f.get("key") for f in status["faults"]}


def test_committed_values_that_cannot_start_leave_the_console_up_and_repairable(rig, hall, tmp_path):
    r = rig()
    r.wait_mode(RUNNING)
    long_url = "https://hall.example.org/rate?w=" + "x" * 300
    assert r.tech(f"StaffName {RARE}")["ok"]
    assert r.tech(f"Set qr.url {long_url}")["ok"]
    assert r.tech("Set outbox.path /proc/nope/outbox.db")["key"] == "outbox.path"  # refused as staged
    answer = r.tech("Commit")
    # Commit runs the checks a start runs: refused, naming each key, nothing written.
    assert answer["error"] == "invalid_config"
    assert {p["key"] for p in answer["problems"]} >= {"staff.name", "qr.url"}
    assert r.tech("Discard")["ok"]
    # The same values in a settings file edited by hand (Commit no longer writes them): the start fails.
    r.store.save({"staff": {"name": RARE}, "qr": {"url": long_url}})
    r.tech("Restart")
    r.wait_mode(RECOVERY)

    status = r.tech("Status")
    assert status["ok"] and status["mode"] == RECOVERY
    assert {"staff.name", "qr.url"} <= fault_keys(status)
    assert all(f["fix"] for f in status["faults"])          # every fault says what fixes it
    assert r.supervisor.app is None

    # Presses in recovery are not ratings.
    r.press(1)
    time.sleep(0.3)

    for line in ("StaffName 王五", "Set qr.url https://hall.example.org/rate?w=01",
                 f"Set outbox.path {tmp_path / 'data' / 'outbox.db'}"):
        assert r.tech(line)["ok"], line
    assert r.tech("Commit")["ok"]
    r.wait_mode(RUNNING)
    status = r.tech("Status")
    assert status["mode"] == RUNNING and not fault_keys(status) - {None}

    r.press(2)
    assert wait_for(lambda: len(hall.events("WE-0001")) == 1)
    (event,) = hall.events("WE-0001")
    assert event["level"] == "satisfied" and event["staff_name"] == "王五"


class BrokenDisplay:
    """A panel whose every call raises, as one with a loose cable does."""

    size = (128, 64)
    asleep = False

    def _fail(self, *args):
        raise DisplayError("ssd1306: I2C write failed: [Errno 121] Remote I/O error")

    show = contrast = sleep = wake = _fail

    def close(self):
        pass


def test_a_display_that_fails_on_every_call_leaves_the_console_up_and_rating(rig, hall):
    r = rig(panel=BrokenDisplay())
    r.wait_mode(RUNNING)
    assert wait_for(lambda: r.supervisor.app is not None and r.supervisor.app.loop.status.display_fault)
    status = r.tech("Status")
    assert status["ok"] and any(f["code"] == "display" for f in status["faults"])
    r.press(3)
    assert wait_for(lambda: len(hall.events("WE-0001")) == 1)
    assert hall.events("WE-0001")[0]["level"] == "basically_satisfied"


def test_a_panel_that_cannot_be_opened_starts_recovery_with_the_console_up(rig):
    def no_panel(config):
        raise DisplayError("cannot open the i2c bus for the ssd1306 display: [Errno 2] No such file")

    r = rig(make_hardware=no_panel, retry_s=0.5)
    r.wait_mode(RECOVERY)
    status = r.tech("Status")
    assert status["mode"] == RECOVERY
    (fault,) = [f for f in status["faults"] if f["code"] == "display"]
    assert "i2c" in fault["message"] and "display" in fault["fix"]
    # The console still takes settings in recovery.
    assert r.tech("StaffNo 42")["ok"] and r.tech("Commit")["ok"]
    assert r.tech("StaffNo")["value"] == "42"


def test_settings_that_keep_failing_to_start_go_back_to_the_last_good_ones(rig, hall):
    r = rig(max_failed_starts=3)
    r.wait_mode(RUNNING)
    assert r.tech("StaffName 李四")["ok"] and r.tech("Commit")["ok"]
    r.tech("Restart")
    r.wait_mode(RUNNING)
    assert wait_for(lambda: r.supervisor.starts.read().get("good", {}).get("staff", {}).get("name") == "李四")

    assert r.tech(f"StaffName {RARE}")["ok"]
    assert r.tech("Commit")["error"] == "invalid_config"   # Commit runs a start's checks
    r.tech("Discard")
    # Settings that fail to start from elsewhere (a file edited by hand, a newer font missing a glyph).
    r.store.save({**r.store.read(), "staff": {"name": RARE}})
    for n in (1, 2, 3):
        r.tech("Restart")
        assert wait_for(lambda n=n: r.supervisor.starts.read().get("failures", 0) >= n
                        or r.supervisor.reverted is not None)
    r.wait_mode(RUNNING)
    status = r.tech("Status")
    assert any(f["code"] == "reverted" for f in status["faults"])
    assert r.tech("StaffName")["ok"]
    assert r.supervisor.config.staff.name == "李四"
    with open(os.path.join(os.path.dirname(r.store.path), "settings.failed.json"), encoding="utf-8") as f:
        failed = json.load(f)
    assert failed["staff"]["name"] == RARE
    r.press(4)
    assert wait_for(lambda: len(hall.events("WE-0001")) == 1)
    assert hall.events("WE-0001")[0]["staff_name"] == "李四"
