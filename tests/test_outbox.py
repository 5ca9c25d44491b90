"""The outbox contract: durability settings, states, order, the chain."""

import sqlite3
import uuid

import pytest

from device.errors import OutboxFull, StorageError
from device.queue.outbox import Outbox
from device.records import GENESIS_HASH, first_break


def fields(n=0):
    return {"id": str(uuid.uuid4()), "type": "rating", "device_id": "d1", "level": "satisfied", "n": n}


def test_every_connection_is_wal_and_synchronous_full(outbox, tmp_path):
    assert outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_append_makes_a_gapless_hash_chain_from_seq_1(outbox):
    events = [outbox.append(fields(i)) for i in range(5)]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev_hash"] == GENESIS_HASH
    assert first_break(outbox.events()) is None


def test_an_edited_or_deleted_event_is_detectable(outbox):
    for i in range(4):
        outbox.append(fields(i))
    events = outbox.events()
    edited = [dict(e) for e in events]
    edited[1]["level"] = "very_satisfied"
    assert (first_break(edited) or (None,))[0] == 2
    assert (first_break(events[:1] + events[2:]) or (None,))[0] == 3


def test_claim_is_oldest_first_and_only_acknowledged_ids_are_delivered(outbox):
    ids = [outbox.append(fields(i))["id"] for i in range(5)]
    batch = outbox.claim(3)
    assert [e["id"] for e in batch] == ids[:3]
    outbox.mark_delivered([ids[0], ids[2]], 1.0)
    outbox.release([ids[1]])
    assert outbox.counts() == {"pending": 3, "sending": 0, "delivered": 2, "rejected": 0}
    assert [e["id"] for e in outbox.claim(10)] == [ids[1], ids[3], ids[4]]


def test_sending_goes_back_to_pending_on_restart(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for i in range(3):
        box.append(fields(i))
    box.claim(2)
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.counts()["pending"] == 3 and box.waiting() == 3
    box.close()


def test_rejected_events_are_kept_and_not_retried_by_themselves(outbox):
    a = outbox.append(fields(1))
    outbox.claim(1)
    outbox.mark_rejected({a["id"]: "bad level"})
    assert outbox.claim(10) == []
    assert outbox.counts()["rejected"] == 1 and outbox.waiting() == 0
    assert outbox.retry_rejected() == 1
    assert [e["id"] for e in outbox.claim(10)] == [a["id"]]


def test_pruning_delivered_events_keeps_the_chain_going(outbox):
    first = [outbox.append(fields(i)) for i in range(3)]
    outbox.claim(3)
    outbox.mark_delivered([e["id"] for e in first], 100.0)
    assert outbox.prune(older_than=200.0) == 3
    nxt = outbox.append(fields(9))
    assert nxt["seq"] == 4 and nxt["prev_hash"] == first[-1]["hash"]


def test_undelivered_events_are_never_pruned(outbox):
    outbox.append(fields(1))
    assert outbox.prune(older_than=1e12) == 0
    assert outbox.waiting() == 1


def test_a_full_outbox_refuses_appends_and_keeps_what_it_has(tmp_path):
    box = Outbox(tmp_path / "o.db", max_events=2)
    box.append(fields(1))
    box.append(fields(2))
    with pytest.raises(OutboxFull):
        box.append(fields(3))
    assert box.waiting() == 2 and len(box.events()) == 2
    box.close()


def test_a_duplicate_id_is_refused_without_losing_the_chain(outbox):
    a = outbox.append(fields(1))
    with pytest.raises(StorageError):
        outbox.append(dict(fields(2), id=a["id"]))
    b = outbox.append(fields(3))
    assert b["seq"] == 2 and first_break(outbox.events()) is None


def test_events_survive_in_the_file(tmp_path):
    box = Outbox(tmp_path / "o.db")
    e = box.append(fields(1))
    box.close()
    with sqlite3.connect(tmp_path / "o.db") as conn:
        assert conn.execute("select id from events").fetchone()[0] == e["id"]
