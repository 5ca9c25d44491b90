"""``python -m device.integrity``: the first break of a chain, in an outbox or a hall server's db."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
import uuid6

from device import integrity
from device.config import Secret
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader

KEY = "integrity-key"


def rating(i, device_id="d1"):
    return {"id": str(uuid6.uuid7()), "type": "rating", "device_id": device_id, "window_no": "01",
            "staff_no": "7", "staff_name": "张三", "level": "satisfied", "satisfaction": 4,
            "channel": "5", "assess_number": 1, "suspect": False,
            "occurred_at": "2026-11-25T10:00:00.000+08:00", "clock_synced": True,
            "boot_id": "b", "mono_ms": 1000 + i}


def make_outbox(path, n, device_id="d1"):
    box = Outbox(path)
    events = [box.append(rating(i, device_id)) for i in range(n)]
    return box, events


def run(*files):
    result = subprocess.run([sys.executable, "-m", "device.integrity", *map(str, files)],
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def test_a_whole_outbox_passes_and_the_file_is_not_touched(tmp_path):
    box, _ = make_outbox(tmp_path / "o.db", 5)
    box.close()
    path = tmp_path / "o.db"
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    rc, out, _ = run(path)
    assert rc == 0 and out == "d1: ok, 5 events, seq 1..5"
    # SQLite may open an empty -wal/-shm beside it to read; the database itself is untouched.
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_an_edited_event_is_the_first_break(tmp_path):
    box, events = make_outbox(tmp_path / "o.db", 5)
    edited = dict(events[2], level="very_satisfied", satisfaction=5)
    box._conn.execute("UPDATE events SET body = ? WHERE seq = 3", [json.dumps(edited, ensure_ascii=False)])
    box.close()
    rc, out, _ = run(tmp_path / "o.db")
    assert rc == 1 and out.splitlines() == ["d1: BREAK at seq 3: hash does not match the event's contents",
                                            "d1: damage: 1 altered (seq 3)"]


def test_a_deleted_event_is_a_seq_gap(tmp_path):
    box, _ = make_outbox(tmp_path / "o.db", 5)
    box._conn.execute("DELETE FROM events WHERE seq = 2")
    box.close()
    rc, out, _ = run(tmp_path / "o.db")
    assert rc == 1 and out.startswith("d1: BREAK at seq 3: seq gap: missing 2")


def test_pruned_runs_are_not_gaps_but_a_deletion_beside_them_is(tmp_path):
    box, events = make_outbox(tmp_path / "o.db", 9)
    box.claim(9)
    box.mark_delivered([e["id"] for e in events[:3] + events[4:7]], 100.0)
    box.release(e["id"] for e in events)
    assert box.prune(older_than=200.0, limit=2) == 2      # 1..2
    assert box.prune(older_than=200.0) == 4               # 3, then 5..7 around pending 4
    assert box.pruned_runs() == [(1, 3, events[2]["hash"]), (5, 7, events[6]["hash"])]
    kind, check, (report,) = integrity.verify(box.path)
    assert (kind, check, report.ok, report.pruned, report.events) == ("outbox", "ok", True, 6, 3)
    assert report.line() == "d1: ok, 3 events, seq 4..9, 6 delivered events pruned before"
    box._conn.execute("DELETE FROM events WHERE seq = 8")
    box.close()
    rc, out, _ = run(tmp_path / "o.db")
    assert rc == 1 and out.startswith("d1: BREAK at seq 9: seq gap: missing 8")


def test_pruning_merges_runs_and_the_chain_continues_when_all_is_pruned(tmp_path):
    box, events = make_outbox(tmp_path / "o.db", 6)
    box.claim(6)
    box.mark_delivered([e["id"] for e in events], 100.0)
    box.flush_marks()                                      # the marks on disk, to be edited below
    for first, last in ((1, 2), (5, 6), (3, 4)):
        box._conn.execute("UPDATE events SET delivered_at = 50 WHERE seq BETWEEN ? AND ?", [first, last])
        assert box.prune(older_than=75.0) == 2
        box._conn.execute("UPDATE events SET delivered_at = 100 WHERE delivered_at = 50")
    assert box.pruned_runs() == [(1, 6, events[-1]["hash"])] and box.events() == []
    box.close()
    box = Outbox(tmp_path / "o.db")                        # the head survives a restart
    nxt = box.append(rating(7))
    assert nxt["seq"] == 7 and nxt["prev_hash"] == events[-1]["hash"]
    box.close()
    assert run(tmp_path / "o.db")[:2] == (0, "d1: ok, 1 events, seq 7..7, 6 delivered events pruned before")


def test_the_hall_servers_database_one_line_per_device(tmp_path, hall):
    for device_id in ("d1", "d2"):
        box, _ = make_outbox(tmp_path / f"{device_id}.db", 4, device_id)
        hall.set_key(device_id, KEY)
        up = Uploader(box, HttpTransport(hall.url, device_id, Secret(KEY), timeout=2), device_id,
                      synced=lambda: True, heartbeat_s=0, retain_days=0)
        assert up.drain()
        box.close()
    db = hall._storage._db.execute("PRAGMA database_list").fetchone()[2]
    rc, out, _ = run(db)
    assert rc == 0 and out.splitlines() == ["d1: ok, 4 events, seq 1..4", "d2: ok, 4 events, seq 1..4"]
    hall._storage._db.execute("DELETE FROM events WHERE device_id = 'd2' AND seq = 1")
    rc, out, _ = run(db)
    assert rc == 1 and out.splitlines()[1] == "d2: BREAK at seq 2: seq gap: missing 1 (expected 1, found 2)"


def test_a_reused_seq_in_the_servers_database_is_a_break(tmp_path, hall):
    box, events = make_outbox(tmp_path / "d1.db", 2)
    box.close()
    db = tmp_path / "server.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE events (device_id TEXT, seq INTEGER, id TEXT UNIQUE, type TEXT, "
                 "received_at TEXT, json TEXT)")
    other = dict(events[1], id=str(uuid6.uuid7()))
    for e in (events[0], events[1], other):
        conn.execute("INSERT INTO events VALUES ('d1', ?, ?, 'rating', '', ?)", [e["seq"], e["id"], json.dumps(e)])
    conn.commit()
    conn.close()
    rc, out, _ = run(db)
    assert rc == 1 and out.splitlines() == ["d1: BREAK at seq 2: seq 2 used again (expected 3)",
                                            "d1: damage: 1 reused (seq 2)"]


def test_unreadable_or_foreign_files_exit_2(tmp_path):
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE events (x)")
    conn.close()
    rc, _, err = run(tmp_path / "other.db", tmp_path / "missing.db")
    assert rc == 2 and "neither an outbox nor a hall server database" in err and "no such file" in err
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("empty", ["outbox", "server"])
def test_an_empty_database_is_fine(tmp_path, empty):
    if empty == "outbox":
        Outbox(tmp_path / "e.db").close()
        assert run(tmp_path / "e.db")[:2] == (0, "outbox: ok, no events")
    else:
        from hall import HallServer
        HallServer(tmp_path / "e.db").close()
        assert run(tmp_path / "e.db")[:2] == (0, "no events (server database)")
