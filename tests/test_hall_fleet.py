"""The fleet view (issue 18.3): every device the hall knows, silent ones first, then those with a backlog."""

import csv
import datetime
import io
import json
import os
import subprocess
import sys

import hall_month
import pytest

from hall.desk import HallDesk
from hall.fleet import format_fleet
from hall.store import Storage

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)


def ago(minutes):
    return (NOW - datetime.timedelta(minutes=minutes)).isoformat()


def beat(firmware="1.2.0", backlog=0, **more):
    return {"firmware": firmware, "uptime_s": 3600, "backlog": backlog, "oldest_pending_age_s": 600 if backlog
            else None, "rejected": 0, "clock_synced": True, "clock_source": "ntp", "faults": [], **more}


@pytest.fixture
def db(tmp_path):
    """WE-0001 went silent 2 hours ago; WE-0002 is heard but 40 events behind; WE-0003 is fine and sent a gap."""
    path = str(tmp_path / "hall.db")
    storage = Storage(path)
    storage.put_heartbeat("WE-0001", beat(), ago(120))
    storage.put_heartbeat("WE-0002", beat(backlog=40, faults=["uplink_slow"]), ago(1))
    storage.put_heartbeat("WE-0003", beat(firmware="1.1.9", clock_synced=False, damage={"unreadable_rows": 1}),
                          ago(1))
    events = [hall_month.rating("WE-0003", "town-1", "2026-12-01T17:00:00+08:00", "satisfied", session=False),
              {**hall_month.event("WE-0003", "town-gap", "gap", "2026-12-01T17:10:00+08:00", session=False),
               "from_seq": None, "to_seq": None, "count": 3, "reason": "lost_wal"}]
    hall_month.seal(events)
    storage.store("WE-0003", events, ago(2))
    storage.close()
    with HallDesk(path) as desk:
        for device, hall in (("WE-0001", "HQ"), ("WE-0002", "HQ"), ("WE-0003", "TOWN")):
            desk.register(device, hall)
        # The hall engineer's registry of device public keys (interface 1): read when present.
        desk.connection().executescript(
            "CREATE TABLE IF NOT EXISTS device_keys (device_id TEXT NOT NULL, public_key TEXT NOT NULL, "
            "fingerprint TEXT NOT NULL, added_at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '', "
            "PRIMARY KEY (device_id, public_key));"
            "INSERT INTO device_keys VALUES ('WE-0002', 'k', 'SHA256:abc', '2026-11-01', 'provision');")
    return path


def test_silent_first_then_backlog_then_the_rest(db):
    with HallDesk(db) as desk:
        rows = desk.fleet(now=NOW)
    assert [(r["device_id"], r["status"]) for r in rows] == [
        ("WE-0001", "silent"), ("WE-0002", "backlog"), ("WE-0003", "ok")]
    silent, behind, fine = rows
    assert (silent["silent_s"], silent["hall"], silent["firmware"]) == (7200, "HQ", "1.2.0")
    assert (behind["backlog"], behind["oldest_pending_age_s"], behind["faults"], behind["fingerprints"]) == (
        40, 600, ["uplink_slow"], ["SHA256:abc"])
    assert (fine["window_no"], fine["gaps"], fine["lost"], fine["damage"], fine["clock"]) == ("01", 1, 3, 1, "未对时")
    assert fine["last_heartbeat"] == "2026-12-01 17:59:00"  # China time
    text = format_fleet(rows)
    assert text.startswith("设备一览 3 台：失联 1，积压 1\n")
    lines = text.splitlines()
    assert lines[2].split()[:2] == ["失联", "WE-0001"] and lines[3].split()[:2] == ["积压", "WE-0002"]
    assert "2 小时 0 分钟" in lines[2]


def test_a_lower_threshold_makes_more_devices_silent(db):
    with HallDesk(db) as desk:
        assert [r["status"] for r in desk.fleet(silent_after_s=30, now=NOW)] == ["silent"] * 3


def test_the_command_in_json_csv_and_text(db):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(*args):
        answer = subprocess.run([sys.executable, "-m", "hall", *args, "--db", db], capture_output=True,
                                text=True, env=env, timeout=30)
        assert answer.returncode == 0, answer.stderr
        return answer.stdout
    # Run now, not at NOW: all three are silent by now unless the threshold is long.
    rows = json.loads(run("fleet", "--format", "json", "--silent-after", str(10 ** 9)))
    assert [r["device_id"] for r in rows] == ["WE-0002", "WE-0001", "WE-0003"]  # none silent: backlog first
    table = list(csv.reader(io.StringIO(run("设备", "--format", "csv", "--silent-after", str(10 ** 9)))))
    assert table[0][:4] == ["状态", "设备", "大厅", "窗口"] and [r[1] for r in table[1:]] == [
        "WE-0002", "WE-0001", "WE-0003"]
    assert run("设备").startswith("设备一览 3 台：失联 3，积压 0\n")
    assert "<table>" in run("fleet", "--format", "html")
