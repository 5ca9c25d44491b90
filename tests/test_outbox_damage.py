"""Storage damage in the outbox: found, counted and recorded, never silent, and no seq used twice.

Each test damages a real outbox file the way a bad day would (a kill and a
lost WAL, a flipped page, a truncated file, an edited row) and asserts what
the outbox then reports (``damage()``), what it still delivers, the next
``seq`` and what ``evaluator-verify`` prints.
"""

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys

import pytest

from device import integrity
from device.errors import StorageDamaged, StorageError
from device.queue import repair
from device.queue.outbox import CHECKPOINT_COMMITS, Outbox
from device.records import seal_text
from helpers import rating

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A child that appends ``n`` events, delivers the first ``delivered`` and is killed (SIGKILL) before closing.
KILLED = f"""
import json, os, signal, sys
sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]
from device.queue.outbox import Outbox
from helpers import rating
box = Outbox(sys.argv[1])
n, delivered = int(sys.argv[2]), int(sys.argv[3])
events = [box.append(rating(i)) for i in range(n)]
box.mark_delivered([e["id"] for e in box.claim(delivered)], 1.0) if delivered else None
print(json.dumps(events), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_after(path, n, delivered=0):
    """The events a killed process committed (its WAL never checkpointed)."""
    done = subprocess.run([sys.executable, "-c", KILLED, str(path), str(n), str(delivered)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return json.loads(done.stdout)


def filled(path, n, delivered=0):
    """An outbox with ``n`` events, the first ``delivered`` delivered, closed (everything in the file)."""
    box = Outbox(path)
    events = [box.append(rating(i)) for i in range(n)]
    if delivered:
        box.mark_delivered([e["id"] for e in box.claim(delivered)], 1.0)
    box.checkpoint()
    box.close()
    return events


def verify_lines(path, *args):
    done = subprocess.run([sys.executable, "-m", "device.integrity", str(path), *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)
    return done.returncode, done.stdout.splitlines()


def ratings(events):
    """The events that are not ``gap`` events (which the outbox appends for each loss it finds)."""
    return [e for e in events if e.get("type") != "gap"]


def gaps(box):
    return [(e["from_seq"], e["to_seq"], e["count"], e["reason"]) for e in box.events() if e.get("type") == "gap"]


def drain(box):
    sent = []
    while batch := box.claim(50):
        box.mark_delivered([e["id"] for e in batch], 2.0)
        sent += batch
    return sent


def test_a_wal_deleted_after_a_kill_is_counted_and_no_seq_is_used_again(tmp_path):
    path = tmp_path / "outbox.db"
    events = killed_after(path, 10, delivered=4)
    os.unlink(f"{path}-wal")
    rc, lines = verify_lines(path)                   # before the device opens it again
    assert rc == 1 and any("the witness saw seq 10 committed; the file ends at seq 0" in line for line in lines)

    box = Outbox(path, device_id="d1")
    damage = box.damage()
    # The kill came right after the delivery: the witness had not recorded it yet.
    assert (damage["lost"], damage["lost_delivered"], damage["reused_seq_prevented"]) == (10, 0, 10)
    assert "10 events missing (seq 1..10)" in damage["last"]
    box.note_acknowledged_head(4, events[3]["hash"])   # the hall's next answer: it holds 1..4
    damage = box.damage()
    assert (damage["lost"], damage["lost_delivered"]) == (6, 4)
    # The loss travels in the chain: a gap event right after the lost run (the hall tells which of them it holds).
    (gap,) = [e for e in box.events() if e["type"] == "gap"]
    assert (gap["seq"], gap["prev_hash"], gap["from_seq"], gap["to_seq"], gap["count"], gap["reason"]) == \
        (11, events[-1]["hash"], 1, 10, 10, "lost_wal")
    nxt = box.append(rating(99))
    assert nxt["seq"] == 12 and nxt["prev_hash"] == gap["hash"]
    assert box.lost_runs() == [(1, 10, events[-1]["hash"])]
    box.close()
    box = Outbox(path)                                # found once, not again at every start
    assert box.damage()["lost"] == 6 and box.damage()["incidents"] == 2
    box.close()
    rc, lines = verify_lines(path)
    assert rc == 1 and lines[0] == "d1: BREAK at seq 1: seq 1..10 recorded as lost by the device"
    assert lines[1] == "d1: damage: 6 lost (seq 1), 4 lost delivered (seq 1), 1 gaps (seq 11)"


def test_a_truncated_wal_loses_only_its_tail_and_says_how_many(tmp_path):
    path = tmp_path / "outbox.db"
    events = killed_after(path, 40)
    wal = f"{path}-wal"
    os.truncate(wal, os.path.getsize(wal) // 2)
    box = Outbox(path)
    kept = box.head()[0]
    lost = box.damage()["lost"]
    assert lost > 0 and len(ratings(box.events())) + lost == 40
    assert gaps(box) == [(41 - lost, 40, lost, "lost_wal")]
    assert [e["id"] for e in ratings(drain(box))] == [e["id"] for e in events[:40 - lost]]
    nxt = box.append(rating(99))
    assert nxt["seq"] == 42 and nxt["prev_hash"] != events[-1]["hash"] and kept == 41
    box.close()


@pytest.mark.parametrize("page", [3, 10, 20])
def test_a_flipped_page_is_kept_aside_the_rest_salvaged_and_every_loss_counted(tmp_path, page):
    path = tmp_path / "outbox.db"
    events = filled(path, 300)
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        data = f.read(4096)
        f.seek(page * 4096)
        f.write(bytes(b ^ 0xFF for b in data))
    box = Outbox(path)
    damage = box.damage()
    assert damage["replaced"] == 1 and damage["quick_check"] != "ok" and damage["kept_aside"]
    assert os.path.exists(damage["kept_aside"][0])
    sent = drain(box)
    assert len(ratings(sent)) + damage["lost"] + damage["set_aside"] == 300
    assert {e["id"] for e in ratings(sent)} <= {e["id"] for e in events}
    assert sum(count for _, _, count, _ in gaps(box)) == damage["lost"] + damage["set_aside"]
    assert box.append(rating(99))["seq"] == 301 + len(gaps(box)) and box.integrity_check() == "ok"
    box.close()


@pytest.mark.parametrize("size", ["zero", "half"])
def test_a_truncated_database_is_counted_and_the_chain_goes_on(tmp_path, size):
    path = tmp_path / "outbox.db"
    events = filled(path, 300, delivered=100)
    os.truncate(path, 0 if size == "zero" else os.path.getsize(path) // 2)
    box = Outbox(path)
    damage = box.damage()
    sent = drain(box)
    # Every undelivered event is either delivered now or counted as lost.
    assert len(ratings(sent)) + damage["lost"] + damage["set_aside"] == 200
    assert damage["lost"] + damage["lost_delivered"] + len(ratings(box.events())) == 300
    assert sum(count for _, _, count, _ in gaps(box)) >= damage["lost"] + damage["set_aside"]
    nxt = box.append(rating(99))
    assert nxt["seq"] == 301 + len(gaps(box)) and (events[-1]["hash"] == nxt["prev_hash"] or gaps(box))
    box.close()


def test_a_flipped_header_is_kept_aside_repaired_and_shown_once_as_a_start_failure(tmp_path):
    path = tmp_path / "outbox.db"
    filled(path, 50)
    with open(path, "r+b") as f:
        f.write(b"\xff" * 16)
    with pytest.raises(StorageDamaged, match="could not be opened"):
        Outbox(path)
    box = Outbox(path)                                # the next start: a new file with everything salvaged
    damage = box.damage()
    assert damage["replaced"] == 1 and damage["lost"] == 0 and len(drain(box)) == 50
    box.close()


def test_a_poison_row_is_set_aside_and_never_blocks_the_rows_behind_it(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    events = [box.append(rating(i)) for i in range(10)]
    body = box._conn.execute("SELECT body FROM events WHERE seq = 3").fetchone()[0]
    box._conn.execute("UPDATE events SET body = ? WHERE seq = 3", [body.replace("satisfied", "XXXXXXXXd", 1)])
    sent = drain(box)
    assert [e["seq"] for e in sent] == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert gaps(box) == [(3, 3, 1, "unreadable_row")] and sent[-1]["type"] == "gap"
    assert box.damage()["set_aside"] == 1 and box.counts()["rejected"] == 1
    assert box.retry_rejected() == 0                  # a row that cannot be read is not sent again
    box.close()
    rc, lines = verify_lines(path)
    assert rc == 1 and "1 set aside (seq 3)" in lines[1]
    assert events[2]["id"] not in {e["id"] for e in sent}


def test_a_full_disk_keeps_delivery_going_and_writes_the_marks_later(tmp_path, monkeypatch):
    box = Outbox(tmp_path / "outbox.db")
    events = [box.append(rating(i)) for i in range(6)]
    wal = tmp_path / "outbox.db-wal"
    before = os.stat(wal).st_size, os.stat(wal).st_mtime_ns
    first = box.claim(3)
    assert (os.stat(wal).st_size, os.stat(wal).st_mtime_ns) == before   # a claim writes nothing
    real = box._update_marks

    def full(*args):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(box, "_update_marks", full)
    assert box.mark_delivered([e["id"] for e in first], 2.0) == 3
    assert box.flush_marks() == 0 and box.damage()["marks_unsaved"] == 3
    assert box.waiting() == 3 and box.storage_state()[0] == "full"
    assert [e["seq"] for e in box.claim(10)] == [4, 5, 6]          # delivery goes on past them
    monkeypatch.setattr(box, "_update_marks", real)
    box.mark_delivered([e["id"] for e in events[3:]], 3.0)
    assert box.flush_marks() == 6 and box.damage()["marks_unsaved"] == 0
    assert box.counts() == {"pending": 0, "sending": 0, "delivered": 6, "rejected": 0}
    box.close()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    assert conn.execute("SELECT count(*) FROM events WHERE state = 'delivered'").fetchone()[0] == 6
    conn.close()


def test_delivered_marks_ride_with_the_next_append(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.append(rating(1))
    box.mark_delivered([e["id"] for e in box.claim(5)], 2.0)
    assert box.counts()["delivered"] == 1 and box.events("delivered")[0]["seq"] == 1
    stored = lambda: box._conn.execute("SELECT state FROM events WHERE seq = 1").fetchone()[0]  # noqa: E731
    assert stored() == "pending"                        # not written yet: sent again after a power cut
    box.append(rating(2))
    assert stored() == "delivered"                      # written in the same transaction as seq 2
    box.close()


def test_a_rewritten_and_rechained_history_is_caught_for_every_event_the_hall_holds(tmp_path, hall):
    from device.config import Secret
    from device.queue.transport import HttpTransport
    from device.queue.uploader import Uploader

    path = tmp_path / "outbox.db"
    box = Outbox(path)
    events = [box.append(rating(i, device_id="WE-0001", level="very_dissatisfied", satisfaction=1))
              for i in range(8)]
    hall.set_key("WE-0001", "test-key")
    up = Uploader(box, HttpTransport(hall.url, "WE-0001", Secret("test-key"), timeout=5), "WE-0001",
                  heartbeat_s=0, retain_days=0)
    assert up.drain()
    box.close()
    # Someone with the card and the key: every 差评 becomes 非常满意, the chain recomputed.
    conn = sqlite3.connect(path)
    prev = "0" * 64
    for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall():
        fields = {k: v for k, v in json.loads(body).items() if k not in ("seq", "prev_hash")}
        event, text = seal_text(dict(fields, level="very_satisfied", satisfaction=5), seq, prev)
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = ?", [text, event["hash"], seq])
        prev = event["hash"]
    conn.commit()
    conn.close()
    assert verify_lines(path)[0] == 1                 # the witness remembers the head it committed
    os.unlink(f"{path}-witness")                      # ... so the rewriter deletes it too
    rc, lines = verify_lines(path)
    assert rc == 0, lines                             # on its own, the file looks whole
    rc, lines = verify_lines(path, "--hall", tmp_path / "hall.db")
    assert rc == 1 and "8 rewritten (seq 1, 2, 3, 4, 5, ...)" in lines[1]
    box = Outbox(path)                                # the device learns it from the hall's next answer
    box.note_acknowledged_head(8, events[-1]["hash"])
    box.note_acknowledged_head(8, events[-1]["hash"])
    assert box.damage()["rewritten"] == 1
    box.close()


def test_the_halls_head_beyond_ours_is_counted_and_no_seq_is_used_twice(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.note_acknowledged_head(40, "ab" * 32)         # the outbox and its witness were both lost
    damage = box.damage()
    assert (damage["lost_delivered"], damage["reused_seq_prevented"], damage["reused_seq"]) == (40, 40, 0)
    # What was sealed after seq 40 and never delivered cannot be known here: a gap says so, end and count unknown.
    nxt = box.append(rating(1))                       # the gap goes first (after a reseal, had there been one)
    gap, _ = box.events()
    assert (gap["seq"], gap["prev_hash"], gap["from_seq"], gap["to_seq"], gap["count"], gap["reason"]) == \
        (41, "ab" * 32, 41, None, 0, "lost_wal")
    assert nxt["seq"] == 42 and nxt["prev_hash"] == gap["hash"]
    box.close()


def test_a_missing_or_damaged_witness_is_written_again_without_counting_damage(tmp_path):
    path = tmp_path / "outbox.db"
    filled(path, 5)
    os.unlink(f"{path}-witness")
    box = Outbox(path)
    assert box.damage()["witness"] == "missing" and box.damage()["incidents"] == 0
    box.close()
    with open(f"{path}-witness", "r+b") as f:
        f.write(b"garbage")
    box = Outbox(path)
    assert box.damage()["witness"] == "damaged" and box.damage()["incidents"] == 0
    box.close()
    box = Outbox(path)
    assert box.damage()["witness"] == "ok" and box.head()[0] == 5
    box.close()


def test_a_new_outbox_path_takes_the_pending_events_along(tmp_path):
    old, new = tmp_path / "a" / "outbox.db", tmp_path / "b" / "outbox.db"
    os.makedirs(old.parent)
    events = filled(old, 6, delivered=2)
    repair.request_move(str(old), str(new))
    box = Outbox(new)
    assert [e["id"] for e in box.events("pending")] == [e["id"] for e in events[2:]]
    assert box.append(rating(7))["seq"] == 7 and box.damage()["incidents"] == 0
    box.close()
    assert not old.exists() and not os.path.exists(f"{new}-move-from")
    # Going back to the old place (the last settings that started) brings it back.
    box = Outbox(old)
    assert len(box.events()) == 7
    box.close()


def test_a_move_is_refused_where_another_outbox_has_events(tmp_path):
    old, new = tmp_path / "a.db", tmp_path / "b.db"
    filled(old, 3)
    filled(new, 2)
    repair.request_move(str(old), str(new))
    with pytest.raises(StorageError, match="already holds an outbox with 2 events"):
        Outbox(new)
    assert len(Outbox(old).events()) == 3


def test_the_outbox_files_are_private(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    box = Outbox(folder / "outbox.db")
    box.append(rating(1))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for name in os.listdir(folder):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    box.close()


def test_passive_checkpoints_wait_until_they_are_worth_their_writes(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    for i in range(CHECKPOINT_COMMITS - 1):
        box.append(rating(i))
    assert box.checkpoint(passive=True) == 0
    box.append(rating(99))
    assert box.checkpoint(passive=True) > 0
    assert box.checkpoint(passive=True) == 0 and box.checkpoint() == 0
    box.close()


def test_verify_reports_a_clean_outbox_with_its_witness_as_ok(tmp_path):
    path = tmp_path / "outbox.db"
    filled(path, 4)
    kind, check, (report,) = integrity.verify(path)
    assert (kind, check, report.ok, report.lines()) == ("outbox", "ok", True, ["d1: ok, 4 events, seq 1..4"])
