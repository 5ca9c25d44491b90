"""``Outbox.reseal``: after the hall answers ``seq_taken``, the undelivered events are sealed again onto its head.

Real outbox files; the hall's side is played by the events a second copy of
the folder delivered (its seqs and hashes), as a restored or cloned card would.
"""

import shutil

import pytest

from device import integrity
from device.queue.outbox import Outbox
from device.records import GENESIS_HASH, event_hash, first_break
from helpers import rating

pytestmark = pytest.mark.timeout(60)


def deliver(box, n):
    batch = box.claim(n)
    box.mark_delivered([e["id"] for e in batch], 1.0)
    return batch


def test_reseal_moves_pending_and_sending_events_onto_the_halls_head_and_keeps_their_content(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    first = [box.append(rating(i)) for i in range(3)]
    deliver(box, 3)
    box.close()
    shutil.copytree(tmp_path, tmp_path / "clone")          # the same folder on a second card
    other = Outbox(tmp_path / "clone" / "outbox.db")
    theirs = [other.append(rating(10 + i)) for i in range(4)]   # seq 4..7, delivered by the clone
    other.close()

    box = Outbox(path)
    ours = [box.append(rating(20 + i)) for i in range(5)]   # seq 4..8: 4..7 are taken at the hall
    claimed = box.claim(2)                                  # two of them in flight when the answer comes
    n = box.reseal(7, theirs[-1]["hash"])

    assert n == 5
    pending = box.events()
    moved = [e for e in pending if e["seq"] > 3 and e["type"] == "rating"]
    assert [e["seq"] for e in moved] == [8, 9, 10, 11, 12]
    # The hall learns that this folder is an older copy: what its newer copy sealed after seq 7 is unknown here.
    gap = pending[-1]
    assert (gap["seq"], gap["type"], gap["reason"], gap["from_seq"], gap["to_seq"], gap["count"]) == \
        (13, "gap", "restored_copy", 8, None, 0)
    assert gap["device_id"] == "d1" and gap["prev_hash"] == moved[-1]["hash"] and "level" not in gap
    assert [e["id"] for e in moved] == [e["id"] for e in ours]
    assert moved[0]["prev_hash"] == theirs[-1]["hash"]
    assert first_break(theirs + moved) is None or first_break(first + theirs + moved) is None
    for before, after in zip(ours, moved, strict=True):
        assert after["hash"] == event_hash(after)
        assert {k: v for k, v in before.items() if k not in ("seq", "prev_hash", "hash")} == \
            {k: v for k, v in after.items() if k not in ("seq", "prev_hash", "hash")}
    assert box.head() == (13, gap["hash"])
    nxt = box.append(rating(99))
    assert nxt["seq"] == 14 and nxt["prev_hash"] == gap["hash"]

    # The two in flight are acknowledged by id under their new seqs; the rest is claimed next.
    assert box.mark_delivered([e["id"] for e in claimed], 2.0) == 2
    rest = box.claim(50)
    assert [e["seq"] for e in rest] == [10, 11, 12, 13, 14]
    assert box.damage()["reused_seq_prevented"] == 5
    box.close()

    # Each seq once, the chain checkable across the seqs the hall holds: delivered elsewhere, nothing lost.
    box = Outbox(path)
    seqs = [e["seq"] for e in box.events()]
    assert len(seqs) == len(set(seqs))
    assert box.damage()["lost"] == 0
    assert box.lost_runs() == [(4, 7, theirs[-1]["hash"])]
    box.close()
    _kind, _check, (report,) = integrity.verify(path)
    assert report.counts["missing"] == report.counts["unlinked"] == report.counts["altered"] == 0
    assert report.counts["lost"] == report.counts["lost_delivered"] == 0 and not report.problem
    assert report.counts["gaps"] == 1                       # the restored_copy gap: evaluator-verify exits 1
    assert any("seq 4..7 are held by the hall" in note for note in report.notes)


def test_reseal_never_touches_delivered_or_rejected_events_and_never_gives_a_seq_twice(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    events = [box.append(rating(i)) for i in range(6)]
    deliver(box, 2)                                            # 1, 2 delivered (marks still in memory)
    batch = box.claim(1)
    box.mark_rejected({batch[0]["id"]: "invalid: level"})     # 3 a dead letter
    n = box.reseal(1, events[0]["hash"])                       # a hall whose head is lower than ours
    assert n == 3                                              # 4, 5, 6
    kept = box.events()
    seqs = [e["seq"] for e in kept]
    assert len(seqs) == len(set(seqs))
    assert [e["id"] for e in kept[:3]] == [e["id"] for e in events[:3]]
    assert [e["seq"] for e in kept[3:6]] == [4, 5, 6]              # after our own dead letter at 3
    assert kept[6]["type"] == "gap" and kept[6]["seq"] == 7          # announced once per open
    assert box.count("delivered") == 2 and box.count("rejected") == 1
    assert box.reseal(100, "ab" * 32) == 4                     # the gap event too: not delivered yet
    assert [e["seq"] for e in box.events("pending")] == [101, 102, 103, 104]
    assert box.reseal(0, GENESIS_HASH) == 4                    # lower again: after what is kept or recorded
    assert [e["seq"] for e in box.events("pending")] == [101, 102, 103, 104]
    assert box.append(rating(9))["seq"] == 105
    box.close()


def test_reseal_with_nothing_waiting_changes_nothing(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.append(rating(0))
    deliver(box, 1)
    head = box.head()
    assert box.reseal(5, "cd" * 32) == 0
    assert box.head() == head
    box.close()


def test_a_restored_copy_learns_the_halls_head_then_reseals_as_the_uploader_calls_them(tmp_path):
    """The uploader's order: the verified answer's head first, then ``reseal`` for the ``seq_taken`` ids."""
    path = tmp_path / "outbox.db"
    box = Outbox(path, device_id="d1")
    [box.append(rating(i)) for i in range(3)]
    deliver(box, 3)
    box.close()
    shutil.copytree(tmp_path, tmp_path / "backup")         # the older copy
    box = Outbox(path, device_id="d1")
    newer = [box.append(rating(10 + i)) for i in range(4)]  # seq 4..7, delivered: the hall holds 1..7
    deliver(box, 4)
    box.close()
    shutil.rmtree(tmp_path / "outbox.db-witness", ignore_errors=True)
    for name in ("outbox.db", "outbox.db-witness", "outbox.db-wal", "outbox.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).unlink()
        if (tmp_path / "backup" / name).exists():
            shutil.copyfile(tmp_path / "backup" / name, tmp_path / name)

    box = Outbox(path, device_id="d1")                      # restored: head 3, nothing seems wrong
    assert box.head()[0] == 3
    mine = [box.append(rating(20 + i)) for i in range(2)]   # seq 4, 5: the hall holds both
    box.release(e["id"] for e in box.claim(10))             # the answer: seq_taken for both, head 7
    box.note_acknowledged_head(7, newer[-1]["hash"])
    assert box.damage()["rewritten"] == 0                   # a taken seq, not a rewritten history
    assert box.reseal(7, newer[-1]["hash"]) == 2
    sent = box.claim(10)
    assert [(e["seq"], e["type"]) for e in sent] == [(8, "rating"), (9, "rating"), (10, "gap")]
    assert [e["id"] for e in sent[:2]] == [e["id"] for e in mine] and sent[0]["prev_hash"] == newer[-1]["hash"]
    assert (sent[2]["reason"], sent[2]["from_seq"], sent[2]["to_seq"]) == ("restored_copy", 8, None)
    damage = box.damage()
    assert damage["reused_seq"] == 0 and damage["lost"] == 0
    box.close()
