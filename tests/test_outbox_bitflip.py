"""One flipped byte inside a stored row, the commonest SD-card damage: never a brick.

The row becomes a dead letter with its reason and a ``gap`` event; the
outbox opens, takes new events and delivers every other one;
``evaluator-verify`` reports it and exits 1, never crashes. The byte is
flipped in the database file (after a checkpoint) and in the WAL (a killed
device, nothing checkpointed).
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from device.queue.outbox import Outbox
from helpers import rating

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KILLED = f"""
import json, os, signal, sys
sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]
from device.queue.outbox import Outbox
from helpers import rating
box = Outbox(sys.argv[1], device_id="d1")
events = [box.append(rating(i)) for i in range(10)]
box.mark_delivered([e["id"] for e in box.claim(3)], 1.0)
box.append(rating(10))
print(json.dumps(events), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def flip(path, marker, offset=3, bit=0x80):
    """XOR one byte ``offset`` bytes into the last copy of ``marker`` in the file (a row's JSON)."""
    with open(path, "rb") as f:
        at = f.read().rindex(marker) + offset
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ bit]))


def marker(event):
    return b'"id":"' + event["id"].encode()


def verify(path):
    done = subprocess.run([sys.executable, "-m", "device.integrity", str(path)], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def drain(box):
    sent = []
    while batch := box.claim(50):
        box.mark_delivered([e["id"] for e in batch], 2.0)
        sent += batch
    return sent


@pytest.mark.parametrize("bit", [0x80, 0x01], ids=["not-utf8", "still-utf8"])
def test_a_flipped_byte_in_a_checkpointed_row_is_a_dead_letter_and_a_gap_never_a_brick(tmp_path, bit):
    path = tmp_path / "outbox.db"
    box = Outbox(path, device_id="d1", window_no="01")
    events = [box.append(rating(i)) for i in range(10)]
    box.mark_delivered([e["id"] for e in box.claim(3)], 1.0)
    box.checkpoint()
    box.close()
    flip(path, marker(events[5]), bit=bit)                 # seq 6, pending

    rc, out, err = verify(path)                            # before the device opens it
    assert rc == 1 and "Traceback" not in err, err
    assert "altered (seq 6)" in out

    box = Outbox(path, device_id="d1", window_no="01")     # starts: no exception
    damage = box.damage()
    assert damage["set_aside"] == 1 and "seq 6" in damage["last"]
    new = box.append(rating(99))                           # rates again
    sent = drain(box)
    ids = [e["id"] for e in sent]
    assert ids[:6] == [e["id"] for e in events[3:5] + events[6:]] and events[5]["id"] not in ids
    gap = next(e for e in sent if e["type"] == "gap")
    assert (gap["from_seq"], gap["to_seq"], gap["count"], gap["reason"]) == (6, 6, 1, "unreadable_row")
    assert (gap["device_id"], gap["window_no"], gap["seq"]) == ("d1", "01", 11)
    assert new["id"] in ids and new["seq"] == 12
    assert box.counts()["rejected"] == 1
    (dead,) = box.events("rejected")
    assert dead["seq"] == 6 and dead["damaged"].startswith("damaged:")
    box.close()

    rc, out, err = verify(path)
    assert rc == 1 and "Traceback" not in err, err
    assert "1 set aside (seq 6)" in out

    box = Outbox(path, device_id="d1")                     # found once: no second gap at the next start
    assert box.damage()["set_aside"] == 1 and box.waiting() == 0
    box.close()


def test_a_flipped_byte_in_the_wal_loses_its_tail_counted_with_a_gap_never_a_brick(tmp_path):
    path = tmp_path / "outbox.db"
    done = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == -signal.SIGKILL, done.stderr
    events = json.loads(done.stdout)
    flip(f"{path}-wal", marker(events[7]))                 # seq 8: its frame and every later one fail the checksum

    rc, out, err = verify(path)
    assert rc == 1 and "Traceback" not in err, err

    box = Outbox(path, device_id="d1", window_no="01")
    damage = box.damage()
    assert damage["lost"] >= 1
    first_lost = 12 - damage["lost"]
    new = box.append(rating(99))
    sent = drain(box)
    gap = next(e for e in sent if e["type"] == "gap")
    assert (gap["from_seq"], gap["to_seq"], gap["count"], gap["reason"]) == \
        (first_lost, 11, damage["lost"], "lost_wal")
    assert new["id"] in {e["id"] for e in sent} and new["seq"] == 13
    seqs = [e["seq"] for e in box.events()]
    assert len(seqs) == len(set(seqs))
    box.close()
    rc, out, err = verify(path)
    assert rc == 1 and "Traceback" not in err and f"{damage['lost']} lost" in out, out


def test_a_flipped_byte_in_the_id_column_is_read_not_a_crash(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path, device_id="d1")
    events = [box.append(rating(i)) for i in range(5)]
    box.checkpoint()
    box.close()
    # The id column of seq 2 (the unique index holds a copy too; the row's is flipped).
    flip(path, events[1]["id"].encode(), offset=2)
    box = Outbox(path, device_id="d1")
    assert {e["id"] for e in drain(box)} >= {e["id"] for e in events[2:]}
    box.close()
    rc, _out, err = verify(path)
    assert rc in (0, 1) and "Traceback" not in err, err


def test_an_outbox_of_another_device_is_kept_aside_and_a_gap_says_how_many_wait_there(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path, device_id="WE-0002")
    [box.append(rating(i, device_id="WE-0002")) for i in range(5)]
    box.mark_delivered([e["id"] for e in box.claim(2)], 1.0)
    box.close()

    box = Outbox(path, device_id="WE-0001", window_no="07")   # the card carried to another device
    damage = box.damage()
    assert damage["foreign"] == 1 and "WE-0002" in damage["last"]
    (gap,) = box.events()
    assert (gap["seq"], gap["device_id"], gap["window_no"], gap["reason"], gap["count"]) == \
        (1, "WE-0001", "07", "foreign_folder", 3)
    assert box.append(rating(0, device_id="WE-0001"))["seq"] == 2
    box.close()
    kept = [name for name in os.listdir(tmp_path) if ".foreign-WE-0002-" in name]
    assert any(name.endswith("-witness") for name in kept) and len(kept) >= 2
    aside = next(os.path.join(tmp_path, n) for n in kept if n.count("-") == 3 and not n.endswith(("-witness",)))
    left = Outbox(aside, device_id="WE-0002")                 # nothing in it was sent or lost: 3 still pending
    assert left.waiting() == 3
    left.close()


def test_evaluator_verify_exits_1_for_a_dead_letter_the_hall_refused(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path, device_id="d1")
    [box.append(rating(i)) for i in range(3)]
    batch = box.claim(1)
    box.mark_rejected({batch[0]["id"]: "invalid: level"})
    box.close()
    rc, out, _err = verify(path)
    assert rc == 1 and "1 dead letters (seq 1)" in out
