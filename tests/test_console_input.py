"""The console fed garbage, fuzz and a device in recovery: it always answers, never leaks.

Most tests here feed the console directly (:meth:`Console.feed`) through an
in-memory port; the pty tests use the rig of ``test_console``.
"""

import json
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_console import KEY, PIN, Clock, FakeDeviceControl, Rig, ask

from device.console import Console
from device.settings import PinStore, SettingsStore
from sim.wifi import FakeNetworkBackend

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


# --- bad input ------------------------------------------------------------------

def test_garbage_gets_clear_errors_and_the_console_keeps_answering(rig):
    tech = rig.tech
    cases = [
        (b"\x00\x01\x02\xff\xfe\r\n", "bad_encoding"),
        (b"Sta\x01tus\r\n", "bad_input"),
        (b"A" * 600 + b"\r\n", "line_too_long"),
        (b"IMPROV\x01\x03\x02\x02\x00\x00\n", "bad_frame"),
    ]
    for data, code in cases:
        tech.write(data)
        assert ask(tech, None)["error"] == code
    # A half frame followed by a command line: dropped, and the line still served.
    tech.write(b"IMPROV\x01\x03\x05\x02\nStatus\r\n")
    assert ask(tech, None)["error"] == "bad_frame"
    assert ask(tech, None)["device_id"] == "WE-0001"
    # A half frame alone times out (on the real clock).
    rig.console.clock = time.monotonic
    tech.write(b"IMPROV\x01\x03\x40abc")
    assert ask(tech, None)["error"] == "half_frame"
    assert rig.ask("Status")["ok"] is True


def test_backspace_edits_the_line(rig):
    rig.tech.write(b"StaffNamx\x7fe\r\n")
    assert ask(rig.tech, None)["value"] == "张三"


class MemoryPort:
    """An in-memory port for feeding the console directly."""

    timeout: float | None = 0

    def __init__(self):
        self.out = bytearray()

    def read(self, size=1):
        return b""

    def write(self, data):
        self.out += data
        return len(data)


def fed_console(tmp_path):
    store = SettingsStore(tmp_path / "settings.toml", [], [f'upload.key_file="{tmp_path / "device.key"}"',
                                                           f'outbox.path="{tmp_path / "outbox.db"}"'])
    clock = Clock()
    port = MemoryPort()
    console = Console(port, FakeDeviceControl(store.load()), store, PinStore(tmp_path / "console.pin"),
                      network=FakeNetworkBackend(), clock=clock)
    return console, port, clock


half_frames = st.builds(lambda n, body: b"IMPROV\x01\x03" + bytes([n]) + body,
                        st.integers(0, 255), st.binary(max_size=20))
junk = st.lists(st.one_of(
    st.binary(max_size=64),
    half_frames,
    st.just(b"\xff\xfe\xc3(\n"),
    st.just(b"x" * 700),
    st.just(b"\n"),
    st.sampled_from([b"Status\n", b"Get staff.name\r\n", b"Auth\n", b"IMPRO", b"IMPROV"]),
), max_size=8).map(b"".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=junk)
def test_fuzzed_input_never_stops_the_console(tmp_path_factory, data):
    console, port, clock = fed_console(tmp_path_factory.mktemp("fuzz"))
    console.feed(data)
    console.feed(b"\n")
    # Let any half frame time out; what is read again may start another, so repeat.
    for _ in range(200):
        if console.splitter.idle:
            break
        clock.t += 1.0
        console.feed(b"\n")
    assert console.splitter.idle
    port.out.clear()
    console.feed(b"Status\r\n")
    answer = json.loads(bytes(port.out).decode("utf-8"))
    assert answer["ok"] is True and answer["device_id"] == "WE-0001"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=junk)
def test_fuzzed_input_over_the_pty(rig, data):
    tech = rig.tech
    tech.write(data + b"\n")
    # Wait out half frames on the console's real clock: then a probe must be answered.
    rig.console.clock = time.monotonic
    tech.timeout = 0.3
    for _ in range(40):
        tech.write(b"\r\nStatus\r\n")
        got = b""
        while True:
            line = tech.readline()
            if not line:
                break
            got = line
            if b'"device_id"' in line:
                break
        if b'"device_id"' in got:
            return
    pytest.fail("the console stopped answering after fuzzed input")


def test_no_secret_reaches_the_output_or_the_log(rig, caplog):
    caplog.set_level(logging.DEBUG)
    out = []
    for line in (f"Pin {PIN}", "Lock", "Auth 0000", f"Auth {PIN}", f"DeviceKey {KEY}", "Commit", "DeviceKey",
                 "Pin", "Status", "Get", PIN, KEY):
        out.append(json.dumps(rig.ask(line), ensure_ascii=False))
    text = "\n".join(out) + caplog.text
    assert PIN not in text and KEY not in text


# --- recovery, secrets and the published status ------------------------------------

def test_a_device_in_recovery_answers_unavailable_and_the_console_goes_on(tmp_path):
    from device.errors import DeviceUnavailable

    console, port, _ = fed_console(tmp_path)

    def unavailable():
        raise DeviceUnavailable("Queue needs the running device; it is in recovery (display)")
    console.device.queue = unavailable
    console.feed(b"Queue\r\nStatus\r\n")
    first, second = (json.loads(line) for line in bytes(port.out).decode().splitlines())
    assert first == {"ok": False, "error": "unavailable",
                     "message": "Queue needs the running device; it is in recovery (display)"}
    assert second["ok"] is True


def test_secrets_in_what_the_device_reports_are_shown_as_stars(tmp_path):
    from device.config import Secret

    console, port, _ = fed_console(tmp_path)
    console.device.status = lambda: {"uplink": {"server": "https://hall", "credential": Secret(KEY)}}
    console.feed(b"Status\r\n")
    answer = json.loads(bytes(port.out))
    assert answer["uplink"] == {"server": "https://hall", "credential": "****"}
    assert KEY not in bytes(port.out).decode()


def test_the_console_publishes_what_it_owns(tmp_path):
    console, _, _ = fed_console(tmp_path)
    assert console.status.staged == () and console.status.answered == 0
    console.feed(f"StaffName 李四\r\nDeviceKey {KEY}\r\n".encode())
    assert console.status.staged == ("staff.name", "device_key")
    assert console.status.authorized is True and console.status.answered == 2
    assert KEY not in repr(console.status)


def test_refused_input_is_logged_once_a_minute_at_most(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="device.console")
    console, port, clock = fed_console(tmp_path)
    for _ in range(20):
        console.feed(b"\xff\xfe\r\nSta\x01tus\r\n")
    clock.t += 61
    console.feed(b"\xff\r\n")
    summaries = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert summaries == ["console input refused: 1 bad_encoding, 1 bad_input",
                         "console input refused: 20 bad_encoding, 19 bad_input"]
    assert bytes(port.out).count(b'"bad_encoding"') == 21, "every refused line is still answered"


def test_every_command_has_one_handler_and_help_names_them():
    from device.console.commands import table
    from device.console.port import default_commands

    commands = default_commands()
    for name in ("status", "get", "set", "staffname", "window", "devicekey", "auth", "lock", "pin", "commit",
                 "discard", "factoryreset", "test", "queue", "upload", "restart", "help"):
        assert name in commands, name
    # Every command is one entry with its own help: a summary, a usage and an example.
    assert [name for name, c in commands.items() if not (c.summary and c.usage and c.example)] == []
    with pytest.raises(ValueError, match="twice"):
        table(commands, {"status": commands["status"]})
