"""The outbox contract: what any storage behind the uploader must do.

As huey runs one storage test suite against every backend, the tests below
take the backend from the ``open_box`` fixture, parametrised over
``BACKENDS``. A new backend (another file format, an in-memory store for a
test) joins by adding one entry; it passes when every test here does.

``open_box(path, **options)`` opens (or re-opens, for a restart) the outbox
kept at ``path``; the options are ``max_events``, ``min_free_bytes``,
``statvfs`` and ``clock`` as :class:`device.queue.outbox.Outbox` takes them.
"""

import os

import pytest

from device.errors import OutboxFull, StorageError
from device.queue.outbox import Outbox
from device.records import GENESIS_HASH, first_break
from helpers import rating

BACKENDS = {
    "sqlite": Outbox,
}

MB = 1024 * 1024


@pytest.fixture(params=sorted(BACKENDS))
def open_box(request, tmp_path):
    """Open an outbox of the backend under test; every one opened is closed at the end."""
    opened = []

    def open_(path=tmp_path / "outbox.db", **options):
        box = BACKENDS[request.param](path, **options)
        opened.append(box)
        return box

    yield open_
    for box in opened:
        box.close()             # closing twice (a test closed it to restart) is harmless


@pytest.fixture
def box(open_box):
    return open_box()


class FakeDisk:
    """``os.statvfs`` of a disk whose free space the test sets."""

    def __init__(self, free):
        self.free = free

    def __call__(self, path):
        return os.statvfs_result((4096, 4096, 0, 0, self.free // 4096, 0, 0, 0, 0, 255))


def ids(events):
    return [e["id"] for e in events]


def fill(box, n):
    return [box.append(rating(i)) for i in range(n)]


class TestOutboxContract:
    def test_appends_make_one_gapless_chain_from_seq_1(self, box):
        events = fill(box, 4)
        assert [e["seq"] for e in events] == [1, 2, 3, 4]
        assert events[0]["prev_hash"] == GENESIS_HASH
        assert box.head() == (4, events[-1]["hash"])
        assert box.events() == events and first_break(box.events()) is None

    def test_claims_are_oldest_first_and_never_hand_out_an_event_twice(self, box):
        events = fill(box, 5)
        assert ids(box.claim(2)) == ids(events[:2])
        assert ids(box.claim(10)) == ids(events[2:])
        assert box.claim(10) == []
        assert box.counts() == {"pending": 0, "sending": 5, "delivered": 0, "rejected": 0}
        assert box.waiting() == 5

    def test_only_acknowledged_ids_are_delivered_and_released_ones_come_back_in_order(self, box):
        events = fill(box, 4)
        box.claim(4)
        assert box.mark_delivered([events[1]["id"], events[3]["id"], "no-such-id"], 100.0) == 2
        box.release([events[0]["id"], events[2]["id"]])
        assert box.count("delivered") == 2 and box.waiting() == 2
        assert box.oldest_waiting() == events[0]
        assert ids(box.claim(10)) == [events[0]["id"], events[2]["id"]]

    def test_a_dead_letter_is_kept_visible_and_sent_again_only_on_command(self, box):
        events = fill(box, 3)
        box.claim(3)
        assert box.mark_rejected({events[1]["id"]: "bad level"}) == 1
        box.release([events[0]["id"], events[2]["id"]])
        assert ids(box.events("rejected")) == [events[1]["id"]]
        assert ids(box.claim(10)) == [events[0]["id"], events[2]["id"]]
        assert box.waiting() == 2 and box.count("rejected") == 1
        box.mark_delivered(ids(events), 100.0)
        assert box.count("rejected") == 1         # a dead letter is not delivered by accident
        assert box.retry_rejected() == 1
        assert ids(box.claim(10)) == [events[1]["id"]]

    def test_after_a_restart_in_flight_events_are_pending_and_the_chain_goes_on(self, open_box, tmp_path):
        box = open_box(tmp_path / "o.db")
        events = fill(box, 3)
        box.claim(2)
        box.close()
        box = open_box(tmp_path / "o.db")
        assert box.counts()["pending"] == 3 and box.waiting() == 3
        assert ids(box.claim(10)) == ids(events)
        nxt = box.append(rating(9))
        assert nxt["seq"] == 4 and nxt["prev_hash"] == events[-1]["hash"]

    def test_pruning_deletes_only_old_deliveries_and_keeps_the_chain_checkable(self, box):
        events = fill(box, 6)
        box.claim(6)
        box.mark_delivered(ids(events[:2]), 100.0)
        box.mark_delivered([events[4]["id"]], 100.0)
        box.mark_delivered([events[5]["id"]], 500.0)
        box.mark_rejected({events[3]["id"]: "bad"})
        box.release([events[2]["id"]])
        assert box.prune(older_than=200.0, limit=1) == 1
        assert box.prune(older_than=200.0) == 2
        assert box.prune(older_than=200.0) == 0
        assert ids(box.events()) == [events[2]["id"], events[3]["id"], events[5]["id"]]
        assert box.pruned_runs() == [(1, 2, events[1]["hash"]), (5, 5, events[4]["hash"])]
        nxt = box.append(rating(9))
        assert nxt["seq"] == 7 and nxt["prev_hash"] == events[-1]["hash"]

    def test_the_chain_continues_when_every_event_was_pruned(self, open_box, tmp_path):
        box = open_box(tmp_path / "o.db")
        events = fill(box, 2)
        box.claim(2)
        box.mark_delivered(ids(events), 100.0)
        assert box.prune(older_than=200.0) == 2
        box.close()
        box = open_box(tmp_path / "o.db")
        assert box.head() == (2, events[-1]["hash"])
        assert box.append(rating(9))["prev_hash"] == events[-1]["hash"]

    def test_deliveries_without_a_trusted_clock_are_kept_until_stamped(self, box):
        events = fill(box, 2)
        box.claim(2)
        box.mark_delivered(ids(events), None)
        assert box.prune(older_than=1e12) == 0
        assert box.stamp_delivered(100.0) == 2
        assert box.prune(older_than=200.0) == 2

    def test_a_full_outbox_refuses_appends_keeps_what_it_has_and_has_room_after_delivery(self, open_box):
        box = open_box(max_events=2)
        events = fill(box, 2)
        assert box.storage_state()[0] == "full"
        with pytest.raises(OutboxFull):
            box.append(rating(3))
        assert box.events() == events and box.waiting() == 2
        box.claim(1)
        box.mark_delivered([events[0]["id"]], 100.0)
        assert box.storage_state()[0] != "full"
        assert box.append(rating(4))["seq"] == 3

    def test_a_full_disk_pauses_appends_but_never_delivery(self, open_box):
        disk = FakeDisk(free=100 * MB)
        now = [0.0]
        box = open_box(min_free_bytes=16 * MB, statvfs=disk, clock=lambda: now[0])
        events = fill(box, 2)
        assert box.storage_state() == ("ok", "")
        disk.free = 40 * MB
        assert box.storage_state()[0] == "low"
        disk.free = 8 * MB
        now[0] += 60.0
        assert box.storage_state()[0] == "full"
        with pytest.raises(OutboxFull):
            box.append(rating(3))
        assert ids(box.claim(10)) == ids(events)
        assert box.mark_delivered(ids(events), 100.0) == 2
        assert box.waiting() == 0

    def test_a_duplicate_id_is_refused_and_the_chain_stays_whole(self, box):
        first = box.append(rating(1))
        with pytest.raises(StorageError):
            box.append(dict(rating(2), id=first["id"]))
        assert box.append(rating(3))["seq"] == 2
        assert first_break(box.events()) is None and box.waiting() == 2

    def test_counts_agree_and_an_unknown_state_is_refused(self, box):
        fill(box, 3)
        box.claim(1)
        counts = box.counts()
        assert counts == {state: box.count(state) for state in counts}
        with pytest.raises(ValueError):
            box.count("lost")
