"""The console as a person at a terminal reads it, over a real pty.

``Help <command>``, a typo's nearest name, ``Status <section>``, ``Wifi``,
a ``Commit`` of a hall that cannot be reached, a test command registered
without touching the dispatch, and a flood of refused input that never
fills the disk.
"""

import datetime
import json
import logging
import socket
import threading
import time

import pytest
from test_console import PIN, Rig

from device.console import improv
from device.console.commands import Command, Needs

pytestmark = pytest.mark.timeout(60)

WIFI_PASSWORD = "hall-password"


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_help_explains_one_command_with_usage_and_example(rig):
    answer = rig.ask("Help Server")
    assert answer["ok"] is True
    assert answer["command"] == "Server" and answer["usage"] == "Server [value]"
    assert answer["example"].startswith("Server https://") and "upload.server" in answer["summary"]
    assert answer["authorisation"] == "needed to change, not to read"
    # Help alone lists every command in one short line each.
    listing = rig.ask("Help")
    assert {"Status", "Commit", "Wifi", "StaffName", "Help", "Test"} <= set(listing["commands"])
    assert "Help <command>" in listing["message"]


def test_a_typo_gets_the_nearest_name_and_never_echoes_the_word(rig):
    answer = rig.ask("StafName 李四")
    assert answer == {"ok": False, "error": "unknown_command", "did_you_mean": "StaffName",
                      "message": "unknown command; did you mean StaffName? send Help for the list"}
    assert rig.ask("Comit")["did_you_mean"] == "Commit"
    assert rig.ask("Help Stauts")["did_you_mean"] == "Status"
    far = rig.ask("8642")  # a PIN typed on its own: no suggestion, no echo
    assert "did_you_mean" not in far and "8642" not in json.dumps(far)


def test_status_network_shows_ssid_signal_and_ip_after_wifi(rig):
    before = rig.ask("Status network")
    assert before["ok"] and before["section"] == "network"
    assert before["wifi"] == "not joined" and before["ssid"] == "unknown yet" and "Wifi <ssid>" in before["message"]

    joined = rig.ask(f"Wifi HallNet {WIFI_PASSWORD}")
    assert joined["ok"] is True and joined["joined"] == "HallNet"
    assert WIFI_PASSWORD not in json.dumps(joined)
    answer = rig.ask("Status network")
    assert (answer["wifi"], answer["ssid"], answer["signal_dbm"], answer["signal"], answer["ip"]) == (
        "joined", "HallNet", -60, "good", "127.0.0.1")

    wrong = rig.ask('Wifi "HallNet" wrong-password')
    assert wrong["ok"] is False and wrong["error"] == "wifi_failed" and "wrong-password" not in json.dumps(wrong)


def test_an_improv_client_hears_of_wi_fi_joined_with_the_command(rig):
    request_state = improv.encode_frame(improv.PacketType.RPC, improv.encode_rpc(improv.Command.REQUEST_STATE))
    rig.tech.write(request_state + b"\n")
    time.sleep(0.3)
    assert improv.state_frame(improv.State.READY) in rig.tech.read(rig.tech.in_waiting)
    assert rig.ask(f"Wifi HallNet {WIFI_PASSWORD}")["ok"]
    rig.tech.write(request_state + b"\n")
    time.sleep(0.3)
    assert improv.state_frame(improv.State.PROVISIONED) in rig.tech.read(rig.tech.in_waiting)


def test_wifi_needs_authorisation_and_never_logs_the_password(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    r = Rig(tmp_path, pin=PIN)
    try:
        assert r.ask(f"Wifi HallNet {WIFI_PASSWORD}")["error"] == "not_authorized"
        assert r.ask("Wifi")["ok"] is True  # reading needs nothing
        assert r.ask(f"Auth {PIN}")["ok"]
        assert r.ask(f"Wifi HallNet {WIFI_PASSWORD}")["ok"]
    finally:
        r.close()
    assert WIFI_PASSWORD not in caplog.text and PIN not in caplog.text


def test_status_sections_speak_local_time_and_never_null(rig):
    rig.device.status = lambda: {"online": None, "last_upload_at": None, "clock_synced": True, "backlog": 3,
                                 "mode": "running", "faults": [], "last_error": ""}
    whole = rig.ask("Status")
    assert whole["online"] == "unknown yet"
    assert set(whole["sections"]) == {"network", "uplink", "storage", "clock", "faults"}
    offset = datetime.datetime.now().astimezone().strftime("%z")
    assert whole["time"].endswith(offset[:3] + ":" + offset[3:])
    uplink = rig.ask("Status uplink")
    assert uplink["online"] == "unknown yet" and uplink["last_upload_at"] == "unknown yet" and uplink["backlog"] == 3
    assert None not in uplink.values()
    clock = rig.ask("Status clock")
    assert clock["synced"] is True and datetime.datetime.fromisoformat(clock["time"]).tzinfo is not None
    assert rig.ask("Status storage")["pending"] == 2
    assert rig.ask("Status faults") == {"ok": True, "section": "faults", "mode": "running", "faults": [], "count": 0}
    rig.device.status = lambda: {"online": True, "last_upload_at": "2026-12-06T02:00:00.000+00:00"}
    shown = rig.ask("Status uplink")["last_upload_at"]
    assert datetime.datetime.fromisoformat(shown) == datetime.datetime(2026, 12, 6, 2, tzinfo=datetime.UTC)
    assert rig.ask("Status netwrk")["did_you_mean"] == "network"


def test_get_shows_what_a_number_or_path_key_accepts(rig):
    assert rig.ask("Get session.thanks_s") == {"ok": True, "key": "session.thanks_s", "value": 3.0,
                                               "rule": "must be greater than 0 and at most 60 s"}
    assert "absolute path" in rig.ask("Get outbox.path")["rule"]


def test_commit_of_a_hall_that_cannot_be_reached_says_so_and_still_commits(rig):
    assert rig.ask("Server http://127.0.0.1:9")["ok"]
    answer = rig.ask("Commit")
    assert answer["ok"] is True and answer["committed"] == ["upload.server"]
    assert answer["reachable"] is False and "Test uplink" in answer["warning"]
    assert rig.device.applied[-1].upload.server == "http://127.0.0.1:9"

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert rig.ask(f"Server http://127.0.0.1:{port}")["ok"]
        answer = rig.ask("Commit")
    assert answer["ok"] is True and answer["reachable"] is True and "warning" not in answer


def test_a_command_registered_from_outside_is_dispatched_with_its_help(rig):
    seen = []

    def hello(ctx, arg):
        seen.append(arg)
        return {"ok": True, "hello": arg or "world"}

    rig.console.register("Hello", Command(hello, Needs.NOTHING, name="Hello", summary="say hello",
                                          usage="Hello [name]", example="Hello 李四"))
    assert rig.ask("hello 李四") == {"ok": True, "hello": "李四"}
    assert rig.ask("Help Hello")["example"] == "Hello 李四"
    assert "Hello" in rig.ask("Help")["commands"]
    assert rig.ask("Helo")["did_you_mean"] in ("Hello", "Help")
    with pytest.raises(ValueError, match="twice"):
        rig.console.register("status", Command(hello))
    assert seen == ["李四"]


def test_a_flood_of_refused_input_logs_at_most_a_line_a_minute(tmp_path):
    """Unknown commands, garbage, bad frames and changes without the PIN, as fast as the pty takes them."""
    log = tmp_path / "device.log"
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    r = Rig(tmp_path, clock=time.monotonic, pin=PIN)
    lines = [b"nosuchcommand %d\r\n", b"\xff\xfe\x00garbage %d\r\n", b"IMPROV\x01\x03\x20\x01\x00%d\n",
             b"Set staff.name x%d\r\n", b"Commit %d\r\n"]
    sent = 0
    answers = 0
    stop = threading.Event()

    def drain():
        nonlocal answers
        while not stop.is_set():
            answers += r.tech.read(65536).count(b"\n")

    r.tech.timeout = 0.05
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        handler.flush()
        before = log.stat().st_size  # the start's own lines are not the flood's
        start = time.monotonic()
        while time.monotonic() - start < 2.0:
            chunk = b"".join(lines[i % len(lines)] % i for i in range(sent, sent + 200))
            r.tech.write(chunk)
            sent += 200
        elapsed = time.monotonic() - start
        time.sleep(0.5)
        stop.set()
        reader.join(2)
        r.tech.timeout = 5
        r.tech.reset_input_buffer()
        assert r.ask("Status")["ok"] is True  # the console still answers
    finally:
        r.close()
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
    size = log.stat().st_size - before
    per_hour = size * 3600 / elapsed
    print(f"\n{sent} refused lines in {elapsed:.1f} s ({answers} answers read): {size} log bytes, "
          f"{per_hour / 1e6:.3f} MB per hour projected (a line a minute at most: {size * 60 / 1e3:.1f} kB an hour)")
    assert answers > 1000
    assert per_hour <= 1e6
    assert sum(1 for line in log.read_text(encoding="utf-8").splitlines() if "refused" in line) <= 1
