"""The serial console over a real pty, with a fake device behind it.

The test plays the technician: it opens the pty's slave path with pyserial,
as picocom or the provisioning command would, and reads one JSON line per
command.
"""

import json
import logging
import os
import queue
import stat

import pytest
import serial

from device.console import Console
from device.handlers.commands import CommitSettings, EraseSettings
from device.queue.health import uplink_check
from device.queue.transport import HttpTransport
from device.settings import PinStore, SettingsStore
from sim.pty_port import PtyPort
from sim.wifi import FakeNetworkBackend

pytestmark = pytest.mark.timeout(30)

KEY = "k3y-0123456789abcdef-SECRET"
PIN = "8642"


class FakeDeviceControl:
    """A DeviceControl that records what the console asked of it."""

    def __init__(self, config, restart_keys=("display.model",)):
        self.config = config
        self.restart_keys = restart_keys
        self.applied = []
        self.keys = []
        self.presses: queue.Queue[object] = queue.Queue()
        self.button_test_active = False
        self.display_tests = 0
        self.uploads = 0
        self.restarts = 0
        self.resets = 0
        self.uplink = {"ok": True, "status": 200, "server": "http://hall.test", "elapsed_ms": 3}

    def ask(self, request):
        """The owner of the settings and keys carries out a request: here, at once, on the asking thread."""
        if isinstance(request, CommitSettings):
            request.write()
            return self.apply(request.config, request.key)
        if isinstance(request, EraseSettings):
            request.erase()
            return None
        raise TypeError(f"unknown request {type(request).__name__}")

    def current_config(self):
        return self.config

    def status(self):
        # A careless implementation could include a secret; the console drops such fields.
        return {"uptime_s": 42, "backlog": 0, "online": True, "device_key": KEY}

    def queue(self):
        return {"pending": 2, "delivered": 10, "rejected": 0}

    def upload_now(self):
        self.uploads += 1

    def apply(self, config, key=None):
        old, self.config = self.config, config
        self.applied.append(config)
        self.keys.append(key)
        return [k for k in self.restart_keys
                if getattr(getattr(old, k.split(".")[0]), k.split(".")[1])
                != getattr(getattr(config, k.split(".")[0]), k.split(".")[1])]

    def test_display(self):
        self.display_tests += 1
        return {"pattern": "checkerboard"}

    def test_uplink(self):
        return dict(self.uplink)

    def button_test(self, active):
        self.button_test_active = active

    def wait_button(self, timeout):
        try:
            return self.presses.get(timeout=timeout)
        except queue.Empty:
            return None

    def restart(self):
        self.restarts += 1

    def factory_reset(self):
        self.resets += 1


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def ask(tech, line, timeout=5):
    """Send a command line (unless None) and return the JSON answer line."""
    if line is not None:
        tech.write(line.encode("utf-8") + b"\r\n")
    tech.timeout = timeout
    while True:
        raw = tech.readline()
        assert raw.endswith(b"\n"), f"no answer to {line!r}"
        if raw.startswith(b"{"):
            return json.loads(raw)


class Rig:
    def __init__(self, tmp_path, clock=None, wall=None, pin=None, extra=(), auth_idle_s=600):
        self.dir = tmp_path
        self.key_file = tmp_path / "device.key"
        self.overrides = [f'upload.key_file="{self.key_file}"', 'session.source="free"',
                          f'outbox.path="{tmp_path / "outbox.db"}"',
                          f'console.settings_path="{tmp_path / "settings.toml"}"', *extra]
        self.store = SettingsStore(tmp_path / "settings.toml", [], self.overrides)
        self.device = FakeDeviceControl(self.store.load())
        self.wall = wall or Clock(1_700_000_000.0)
        self.pins = PinStore(tmp_path / "console.pin", clock=self.wall)
        if pin:
            self.pins.set(pin)
        self.clock = clock or Clock()
        self.port = PtyPort()
        self.console = Console(self.port, self.device, self.store, self.pins, network=FakeNetworkBackend(),
                               clock=self.clock, frame_timeout=0.2, auth_idle_s=auth_idle_s)
        self.console.start()
        self.tech = serial.Serial(self.port.path, 115200, timeout=5)
        self.sent = []

    def ask(self, line, timeout=5):
        self.sent.append(line)
        return ask(self.tech, line, timeout)

    def close(self):
        self.tech.close()
        self.console.stop()
        self.port.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def locked(tmp_path):
    r = Rig(tmp_path, pin=PIN)
    yield r
    r.close()


# --- reading ------------------------------------------------------------------

def test_status_needs_no_authorisation_and_shows_no_secret(locked):
    answer = locked.ask("Status")
    assert answer["ok"] is True
    assert answer["device_id"] == "WE-0001" and answer["uptime_s"] == 42
    assert answer["pin_set"] is True and answer["authorized"] is False
    assert "device_key" not in answer and KEY not in json.dumps(answer)


def test_commands_are_case_insensitive_and_reads_answer_one_json_line(rig):
    for line in ("staffname", "STAFFNAME", "StaffName"):
        assert rig.ask(line) == {"ok": True, "key": "staff.name", "value": "张三"}
    assert rig.ask("GET device.window_no") == {"ok": True, "key": "device.window_no", "value": "01"}
    assert rig.ask("Window") == {"ok": True, "values": {"device.window_no": "01", "device.window_name": "综合受理"}}
    everything = rig.ask("get")
    assert everything["config"]["buttons"]["pins"] == [5, 6, 13, 19, 26]
    assert rig.ask("Help")["ok"] is True


def test_unknown_commands_and_keys_are_refused_without_echo(rig):
    answer = rig.ask("1234secret")
    assert answer["error"] == "unknown_command" and "1234secret" not in json.dumps(answer)
    assert rig.ask("Get device.nothing")["error"] == "unknown_key"
    assert rig.ask("Set nosuch.key 1")["error"] == "unknown_key"


# --- staging and committing -------------------------------------------------------

def test_staged_settings_commit_atomically_and_apply(rig):
    assert rig.ask("StaffName 李四") == {"ok": True, "key": "staff.name", "staged": "李四"}
    assert rig.ask("Staff 0123 欧阳 娜娜")["staged"] == {"staff.no": "0123", "staff.name": "欧阳 娜娜"}
    assert rig.ask('Server "https://hall.example.org"')["staged"] == "https://hall.example.org"
    assert rig.ask("Set session.rating_window_s 45")["staged"] == 45.0
    assert rig.ask("Set buttons.pins [4, 17, 27, 22, 23]")["staged"] == [4, 17, 27, 22, 23]
    assert rig.ask("Display sh1106")["staged"] == "sh1106"
    # Before Commit the device still runs the old values; reads show both.
    assert rig.ask("StaffName") == {"ok": True, "key": "staff.name", "value": "张三", "staged": "欧阳 娜娜"}
    assert rig.device.applied == []

    answer = rig.ask("Commit")
    assert answer["ok"] is True
    assert set(answer["committed"]) == {"staff.no", "staff.name", "upload.server", "session.rating_window_s",
                                        "buttons.pins", "display.model"}
    assert answer["restart_needed"] == ["display.model"]
    applied = rig.device.applied[-1]
    assert (applied.staff.no, applied.staff.name) == ("0123", "欧阳 娜娜")
    assert applied.upload.server == "https://hall.example.org"
    assert applied.buttons.pins == (4, 17, 27, 22, 23)
    # What was written is what the device loads after a restart.
    assert rig.store.load() == applied
    assert stat.S_IMODE(os.stat(rig.store.path).st_mode) == 0o600
    assert rig.ask("StaffName") == {"ok": True, "key": "staff.name", "value": "欧阳 娜娜"}
    assert rig.ask("Commit")["message"] == "nothing staged"


def test_values_are_checked_when_staged(rig):
    answer = rig.ask("Source nowhere")
    assert answer["ok"] is False and answer["error"] == "invalid_value"
    assert "session.source" in answer["message"]
    assert rig.ask("Set session.rating_window_s soon")["error"] == "invalid_value"
    assert rig.ask("Server ftp://x")["error"] == "invalid_value"
    assert rig.ask('StaffName "unbalanced')["error"] == "invalid_value"
    assert rig.ask("Status")["staged"] == []


def test_commit_validates_the_whole_and_lists_every_bad_key(rig):
    # A value whose own key is wrong is refused at once ...
    assert rig.ask("Set session.source staff_button")["ok"]
    assert rig.ask("Set buttons.staff_pin 5")["error"] == "invalid_value"
    rig.ask("Discard")
    # ... but a change that breaks another key surfaces at Commit: the staff key
    # only collides with a rating button once staff_button is the source, and
    # the backoff bounds cross.
    assert rig.ask("Set buttons.staff_pin 5")["ok"]
    assert rig.ask("Set session.source staff_button")["ok"]
    assert rig.ask("Set upload.backoff_min_s 500")["ok"]
    answer = rig.ask("Commit")
    assert answer["ok"] is False and answer["error"] == "invalid_config"
    assert {p["key"] for p in answer["problems"]} == {"buttons.staff_pin", "upload.backoff_max_s"}
    assert not os.path.exists(rig.store.path) and rig.device.applied == []
    assert rig.ask("Discard")["discarded"] == ["buttons.staff_pin", "session.source", "upload.backoff_min_s"]
    assert rig.ask("Commit")["committed"] == []


def test_device_key_is_write_only_and_saved_with_mode_0600(rig, caplog):
    caplog.set_level(logging.DEBUG)
    assert rig.ask("DeviceKey") == {"ok": True, "key": "device_key", "value": "****", "set": False}
    assert rig.ask(f"DeviceKey {KEY}") == {"ok": True, "key": "device_key", "staged": "****"}
    assert rig.ask("DeviceKey short")["error"] == "invalid_value"
    assert rig.ask("Commit")["committed"] == ["device_key"]
    assert rig.key_file.read_text() == KEY
    assert stat.S_IMODE(os.stat(rig.key_file).st_mode) == 0o600
    assert rig.device.keys[-1].reveal() == KEY
    assert rig.ask("DeviceKey") == {"ok": True, "key": "device_key", "value": "****", "set": True}
    assert KEY not in caplog.text


def test_a_failed_write_keeps_the_old_settings_and_the_staged_values(rig, monkeypatch):
    assert rig.ask("StaffName 李四")["ok"]
    assert rig.ask("Commit")["ok"]

    def refuse(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", refuse)
    assert rig.ask("StaffName 王五")["ok"]
    answer = rig.ask("Commit")
    assert answer["error"] == "commit_failed" and "No space left" in answer["message"]
    assert rig.store.load().staff.name == "李四"
    assert rig.ask("Status")["staged"] == ["staff.name"]
    monkeypatch.undo()
    assert rig.ask("Commit")["ok"] and rig.store.load().staff.name == "王五"


# --- authorisation -----------------------------------------------------------------

def test_factory_new_device_accepts_changes_then_the_pin_is_needed(rig):
    assert rig.ask("Status")["pin_set"] is False
    assert rig.ask("StaffName 李四")["ok"]
    assert rig.ask(f"Pin {PIN}")["pin_set"] is True
    assert rig.ask("Pin") == {"ok": True, "pin": "****", "pin_set": True}
    assert rig.ask("StaffNo 7")["ok"], "whoever set the PIN stays authorised"
    assert rig.ask("Lock")["authorized"] is False
    refused = rig.ask("StaffName 王五")
    assert refused["error"] == "not_authorized" and "Auth" in refused["message"]
    assert rig.ask("Commit")["error"] == "not_authorized"
    assert rig.ask("Pin 9999")["error"] == "not_authorized"
    assert rig.ask("Test display")["error"] == "not_authorized"
    assert rig.ask("FactoryReset yes")["error"] == "not_authorized"
    assert rig.ask("Restart")["error"] == "not_authorized"
    assert rig.ask(f"DeviceKey {KEY}")["error"] == "not_authorized"
    # Reads still work while locked.
    assert rig.ask("StaffName")["value"] == "张三"
    assert rig.ask(f"Auth {PIN}")["authorized"] is True
    assert rig.ask("Commit")["ok"]
    assert rig.device.config.staff.name == "李四"


def test_wrong_pins_lock_out_with_a_growing_delay(locked):
    wall = locked.wall
    for tries_left in (2, 1):
        answer = locked.ask("Auth 0000")
        assert answer["error"] == "wrong_pin" and answer["tries_left"] == tries_left
    answer = locked.ask("Auth 0000")
    assert answer["error"] == "wrong_pin" and answer["retry_after_s"] == 30
    # Even the right PIN is not checked during the lockout.
    answer = locked.ask(f"Auth {PIN}")
    assert answer["error"] == "locked_out" and answer["retry_after_s"] == 30
    wall.t += 31
    assert locked.ask("Auth 1111")["retry_after_s"] == 60
    wall.t += 61
    assert locked.ask("Auth 1111")["retry_after_s"] == 120
    wall.t += 119
    assert locked.ask(f"Auth {PIN}")["error"] == "locked_out"
    wall.t += 2
    assert locked.ask(f"Auth {PIN}")["authorized"] is True
    # Success clears the count: the next mistake has free tries again.
    assert locked.ask("Auth 0000")["tries_left"] == 2


def test_a_wrong_pin_ends_an_earlier_authorisation(locked):
    assert locked.ask(f"Auth {PIN}")["authorized"]
    assert locked.ask("Auth 0000")["error"] == "wrong_pin"
    assert locked.ask("StaffName x")["error"] == "not_authorized"


def test_authorisation_lapses_after_idle_time(locked):
    assert locked.ask(f"Auth {PIN}")["authorized"]
    locked.clock.t += 599
    assert locked.ask("StaffName a")["ok"], "each command restarts the idle time"
    locked.clock.t += 599
    assert locked.ask("StaffName b")["ok"]
    locked.clock.t += 601
    assert locked.ask("StaffName c")["error"] == "not_authorized"


def test_physical_presence_authorises_for_a_while(locked):
    assert locked.ask("StaffName x")["error"] == "not_authorized"
    locked.console.grant_presence(300)
    assert locked.ask("Auth")["presence"] is True
    assert locked.ask("StaffName x")["ok"]
    locked.clock.t += 301
    assert locked.ask("StaffName y")["error"] == "not_authorized"


def test_discard_and_upload_need_the_pin_once_one_is_set(locked):
    assert locked.ask("Discard")["error"] == "not_authorized"
    assert locked.ask("Upload")["error"] == "not_authorized" and locked.device.uploads == 0
    assert locked.ask(f"Auth {PIN}")["authorized"]
    assert locked.ask("Discard") == {"ok": True, "discarded": []}
    assert locked.ask("Upload")["upload"] == "started"


# --- self-tests and actions ------------------------------------------------------

def test_button_test_reports_each_pin_in_turn(rig):
    for n in (1, 2, 3, 4, 5):
        rig.device.presses.put(n)
    first = rig.ask("Test buttons 5")
    assert first == {"ok": True, "test": "buttons", "waiting_for": 1, "pin": 5, "timeout_s": 5.0,
                     "message": first["message"]}
    lines = [ask(rig.tech, None) for _ in range(5)]
    assert [(line["button"], line["pin"], line["ok"]) for line in lines[:4]] == [
        (1, 5, True), (2, 6, True), (3, 13, True), (4, 19, True)]
    assert lines[0]["waiting_for"] == 2 and lines[0]["next_pin"] == 6
    final = ask(rig.tech, None)
    assert final["ok"] is True and final["done"] is True and final["result"] == "pass"
    assert [b["pin"] for b in final["buttons"]] == [5, 6, 13, 19, 26]
    assert rig.device.button_test_active is False


def test_button_test_reports_a_wrong_button_and_a_timeout(rig):
    rig.device.presses.put(1)
    rig.device.presses.put(3)
    rig.ask("Test buttons 0.3")
    assert ask(rig.tech, None)["ok"] is True
    wrong = ask(rig.tech, None)
    assert wrong["error"] == "wrong_button" and wrong["button"] == 2 and wrong["pressed"] == 3
    final = ask(rig.tech, None)
    assert final["ok"] is False and final["error"] == "timeout" and "button 3" in final["message"]
    assert rig.device.button_test_active is False


def test_display_uplink_queue_upload(rig):
    assert rig.ask("Test display")["result"] == "shown" and rig.device.display_tests == 1
    assert rig.ask("Test uplink")["status"] == 200
    rig.device.uplink = {"ok": False, "status": 401, "message": "the server refused the device id or key"}
    failed = rig.ask("Test uplink")
    assert failed["ok"] is False and failed["error"] == "uplink_failed" and failed["test"] == "uplink"
    assert rig.ask("Test")["error"] == "missing_value"
    assert rig.ask("Queue") == {"ok": True, "pending": 2, "delivered": 10, "rejected": 0}
    assert rig.ask("Upload") == {"ok": True, "upload": "started"} and rig.device.uploads == 1


def test_restart_and_factory_reset(rig):
    rig.ask(f"Pin {PIN}")
    rig.ask(f"DeviceKey {KEY}")
    rig.ask("StaffName 李四")
    rig.ask("Commit")
    assert rig.ask("Restart") == {"ok": True, "restarting": True, "discarded": []}
    assert rig.device.restarts == 1
    assert rig.ask("FactoryReset")["error"] == "confirm_needed"
    assert rig.ask("FactoryReset yes")["factory_reset"] is True
    assert rig.device.resets == 1
    assert not rig.key_file.exists() and not os.path.exists(rig.store.path) and not rig.pins.is_set()


def test_uplink_check_sends_a_signed_heartbeat_to_the_hall_server(tmp_path):
    from hall import HallServer

    hall = HallServer(tmp_path / "hall.db", default_key=KEY)
    hall.start()
    try:
        good = uplink_check(HttpTransport(hall.url, "WE-0001", KEY), "WE-0001", {"firmware": "t"})
        assert good["ok"] is True and good["status"] == 200
        assert hall.heartbeats["WE-0001"]["firmware"] == "t"
        bad = uplink_check(HttpTransport(hall.url, "WE-0001", "wrong-key-0123456789"), "WE-0001", {})
        # A wrong key: the hall refuses it, and its answer cannot verify with that key either.
        assert bad["ok"] is False and "key" in bad["message"]
        assert KEY not in json.dumps(good) + json.dumps(bad)
    finally:
        hall.stop()
    down = uplink_check(HttpTransport(hall.url, "WE-0001", KEY, timeout=1), "WE-0001", {})
    assert down["ok"] is False and down["error"] == "uplink_failed"


# --- field survival: checks at Commit, Lock, a silent client, a reset that keeps every rating ----------

RARE = "王\U00020000"  # 𠀀: the bitmap font lacks it


def test_commit_refuses_what_would_stop_the_next_start_saying_why(rig):
    # A place no file of the device may be is refused as it is staged, naming the key.
    refused = rig.ask("Set outbox.path /proc/nope/outbox.db")
    assert refused["error"] == "invalid_value" and refused["key"] == "outbox.path" and "/proc" in refused["message"]
    for line in (f"StaffName {RARE}", "Set qr.url https://hall.example.org/r?w=" + "x" * 300):
        assert rig.ask(line)["ok"], line
    answer = rig.ask("Commit")
    assert answer["ok"] is False and answer["error"] == "invalid_config"
    problems = {p["key"]: p["message"] for p in answer["problems"]}
    assert set(problems) == {"staff.name", "qr.url"}
    assert "U+20000" in problems["staff.name"] and "too long" in problems["qr.url"]
    assert rig.device.applied == [] and not os.path.exists(rig.store.path)
    # The key file and the outbox must each be a file of their own.
    for line, key, why in ((f"Set upload.key_file {rig.dir / 'outbox.db'}", "upload.key_file", "the outbox"),
                           (f"Set outbox.path {rig.dir / 'settings.toml'}", "outbox.path", "the settings file")):
        assert rig.ask("Discard")["ok"] and rig.ask(line)["ok"]
        answer = rig.ask("Commit")
        assert answer["error"] == "invalid_config" and why in answer["message"] and key in answer["message"]
    assert rig.ask("Discard")["ok"] and rig.ask("StaffName 王五")["ok"] and rig.ask("Commit")["ok"]


def test_a_new_outbox_path_asks_the_outbox_to_follow(rig):
    from device.queue.outbox import Outbox

    box = Outbox(rig.dir / "outbox.db")
    box.close()
    moved = rig.dir / "sd2" / "outbox.db"
    answer = rig.ask(f"Set outbox.path {moved}") and rig.ask("Commit")
    assert answer["ok"]
    assert (rig.dir / "sd2" / "outbox.db-move-from").read_text() == str(rig.dir / "outbox.db")
    other = Outbox(rig.dir / "other.db")
    other.append({"id": "x", "type": "rating"})
    other.close()
    refused = rig.ask(f"Set outbox.path {rig.dir / 'other.db'}") and rig.ask("Commit")
    assert refused["error"] == "invalid_config" and "already holds an outbox with 1 events" in refused["message"]


def test_lock_ends_the_session_and_it_locks_itself_after_auto_lock_s(tmp_path):
    rig = Rig(tmp_path, pin=PIN, extra=["console.auto_lock_s=120"], auth_idle_s=None)
    try:
        assert rig.ask(f"Auth {PIN}")["authorized"]
        rig.clock.t += 100
        assert rig.ask("Status")["authorized"], "any input starts the idle time again"
        rig.clock.t += 100
        assert rig.ask("StaffNo 5")["ok"]
        rig.clock.t += 121
        assert rig.ask("StaffNo 6")["error"] == "not_authorized"
        assert rig.ask(f"Auth {PIN}")["authorized"] and rig.ask("Lock")["authorized"] is False
        assert rig.ask("Discard")["error"] == "not_authorized" and rig.ask("Upload")["error"] == "not_authorized"
    finally:
        rig.close()


def test_a_client_that_never_reads_cannot_stall_the_console(rig):
    import time

    silent = serial.Serial(rig.port.path, timeout=0)
    try:
        started = time.monotonic()
        for _ in range(100):
            silent.write(b"Get\r\n")                  # about 1.5 kB of answer each, never read
        deadline = time.monotonic() + 10
        while rig.console.status.answered < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rig.console.status.answered == 100
        assert time.monotonic() - started < 3, "answers are dropped at once, not waited on"
        assert rig.port.gate.dropped > 0
    finally:
        silent.close()
    rig.tech.reset_input_buffer()
    import time as _t
    _t.sleep(0.1)
    rig.tech.reset_input_buffer()
    assert rig.ask("Status")["ok"], "a client that reads again gets whole answers"


def test_factory_reset_keeps_every_rating_and_never_deletes_a_data_file(tmp_path):
    from device.queue.outbox import Outbox
    from helpers import rating

    box = Outbox(tmp_path / "outbox.db")
    events = [box.append(rating(i)) for i in range(5)]
    box.close()
    # A configuration file that (wrongly) names the outbox as the key file: the reset must not delete it.
    rig = Rig(tmp_path, extra=[f'upload.key_file="{tmp_path / "outbox.db"}"'])
    try:
        elsewhere = tmp_path / "elsewhere" / "outbox.db"
        rig.store.save({"outbox": {"path": str(elsewhere)}})
        rig.device.config = rig.store.load()
        assert rig.ask("FactoryReset yes")["factory_reset"]
    finally:
        rig.close()
    box = Outbox(tmp_path / "outbox.db")
    assert [e["id"] for e in box.events()] == [e["id"] for e in events]
    box.close()


def test_factory_reset_brings_a_moved_outbox_back_and_erases_the_key(rig):
    from device.queue.outbox import Outbox
    from helpers import rating

    elsewhere = rig.dir / "elsewhere" / "outbox.db"
    assert rig.ask(f"DeviceKey {KEY}")["ok"] and rig.ask(f"Set outbox.path {elsewhere}")["ok"]
    assert rig.ask("Commit")["ok"]
    box = Outbox(elsewhere)                                 # the device ran there and kept ratings
    events = [box.append(rating(i)) for i in range(3)]
    box.close()
    assert rig.ask("FactoryReset yes")["factory_reset"] is True
    assert not rig.key_file.exists()
    box = Outbox(rig.dir / "outbox.db")                     # the next start, at the default place
    assert [e["id"] for e in box.events()] == [e["id"] for e in events]
    box.close()
    for path in rig.dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_new_key_file_place_leaves_no_key_behind(rig):
    assert rig.ask(f"DeviceKey {KEY}")["ok"] and rig.ask("Commit")["ok"]
    moved = rig.dir / "keys" / "device.key"
    assert rig.ask(f"Set upload.key_file {moved}")["ok"] and rig.ask("Commit")["ok"]
    assert moved.read_text() == KEY and not rig.key_file.exists()         # the key moved along
    other = "another-key-0123456789abcdef"
    rig.device.config = rig.store.load()
    assert rig.ask(f"Set upload.key_file {rig.key_file}")["ok"] and rig.ask(f"DeviceKey {other}")["ok"]
    assert rig.ask("Commit")["ok"]
    assert rig.key_file.read_text() == other and not moved.exists()       # the old key is gone
