"""The HallClient seam: the uploader and the hall link run unchanged on an in-memory hall.

Also the rules that hold whatever carries the words: only the hall naming an
event in a verified answer makes it a dead letter; a refusal of the whole
request never costs an event; ``seq_taken`` seals the unacknowledged events
again after the hall's head; every dead letter shows in Status and the
heartbeat; and a synced clock that disagrees with the hall is not believed.
"""

import dataclasses
import datetime
import queue
from typing import Any

import pytest
from memory_hall import MemoryHall, refuse

from device import clock
from device.levels import Level
from device.queue.client import WAIT, Delivery, HallClient, HttpHallClient, Refusal
from device.queue.hall import AssignmentChanged, HallLink
from device.queue.outbox import Outbox
from device.queue.uploader import Uploader
from device.records import Origin, RecordFactory, first_break
from helpers import rating

pytestmark = pytest.mark.timeout(60)

UTC = datetime.UTC
HALL_TIME = datetime.datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC)


def make_uploader(outbox, hall, **kw):
    kw.setdefault("rand", lambda: 1.0)
    kw.setdefault("backoff_min_s", 1.0)
    kw.setdefault("backoff_max_s", 60.0)
    return Uploader(outbox, hall, "d1", synced=lambda: True, **kw)


def fill(outbox, n, **extra):
    return [outbox.append(rating(i, **extra)) for i in range(n)]


def test_the_memory_hall_is_a_hall_client_and_the_http_one_too():
    assert isinstance(MemoryHall(), HallClient)
    assert isinstance(HttpHallClient(transport=None), HallClient)  # type: ignore[arg-type]


def test_ratings_are_delivered_through_an_in_memory_hall_without_http(outbox):
    events = fill(outbox, 7)
    hall = MemoryHall()
    up = make_uploader(outbox, hall, batch_size=3)
    assert up.drain()
    assert [e["id"] for e in hall.held("d1")] == [e["id"] for e in events]
    assert first_break(hall.held("d1")) is None and hall.requests == 3
    assert outbox.counts()["delivered"] == 7 and up.status.hall_head == (7, events[-1]["hash"])


@pytest.mark.parametrize("status", [400, 413, 500, 404, 401])
def test_a_whole_request_refusal_never_costs_an_event(outbox, status):
    fill(outbox, 5)
    hall = MemoryHall(refusals=[refuse(status) for _ in range(12)])
    up = make_uploader(outbox, hall, batch_size=5)
    for _ in range(12):
        up.send_batch()
    assert outbox.count("rejected") == 0 and outbox.waiting() == 5 and hall.held("d1") == []
    assert up.refresh_status().faults, "the refusals are reported"
    hall.refusals.clear()                          # the hall answers normally again
    up.release_held(everything=True)
    assert up.drain() and len(hall.held("d1")) == 5 and outbox.count("rejected") == 0


def test_a_wait_is_honoured_within_the_bounds(outbox):
    fill(outbox, 1)
    hall = MemoryHall(refusals=[Refusal(WAIT, 429, retry_after=7), Refusal(WAIT, 503, retry_after=1e6)])
    up = make_uploader(outbox, hall)
    assert up.send_batch() == 7 and up.send_batch() == 60 and up.send_batch() == 0
    assert outbox.count("rejected") == 0 and len(hall.held("d1")) == 1


def test_only_an_event_the_hall_names_becomes_a_dead_letter_and_it_shows_everywhere(outbox):
    good = fill(outbox, 2)
    bad = outbox.append(rating(9))
    hall = MemoryHall(reject={bad["id"]: "invalid_event"})
    up = make_uploader(outbox, hall, heartbeat_s=60, retain_days=0)
    assert up.drain()
    assert [e["id"] for e in outbox.events("rejected")] == [bad["id"]]
    assert {e["id"] for e in hall.held("d1")} == {e["id"] for e in good}
    status = up.refresh_status()
    assert status.rejected == 1 and "dead_letters: 1" in status.faults
    assert up.upkeep.heartbeat()
    beat = hall.heartbeats[-1]
    assert beat["rejected"] == 1 and "dead_letters: 1" in beat["faults"]


def test_seq_taken_never_makes_a_dead_letter_and_asks_the_outbox_to_seal_again(tmp_path):
    calls = []

    class Recording(Outbox):
        def reseal(self, after_seq, after_hash):
            calls.append((after_seq, after_hash))
            return 0

    box = Recording(tmp_path / "outbox.db")
    try:
        mine = fill(box, 2)
        hall = MemoryHall()
        other = [dict(rating(i), seq=i + 1, hash=f"{i:064x}") for i in range(2)]
        hall.events["d1"] = {e["seq"]: e for e in other}       # the hall holds seqs 1, 2 under other ids
        up = make_uploader(box, hall)
        assert up.send_batch() == 0
        assert calls == [(2, other[1]["hash"])]
        assert box.count("rejected") == 0 and box.waiting() == 2 and mine
    finally:
        box.close()


@pytest.mark.skipif(not hasattr(Outbox, "reseal"), reason="Outbox.reseal (storage) not merged yet")
def test_after_seq_taken_every_event_arrives_sealed_onto_the_halls_head(outbox):
    mine = fill(outbox, 3)
    hall = MemoryHall()
    other = [dict(rating(i), seq=i + 1, hash=f"{i:064x}") for i in range(2)]
    hall.events["d1"] = {e["seq"]: e for e in other}
    up = make_uploader(outbox, hall)
    for _ in range(5):
        up.send_batch()
    held = hall.held("d1")
    assert {e["id"] for e in mine} <= {e["id"] for e in held}
    seqs = [e["seq"] for e in held]
    assert len(seqs) == len(set(seqs)) == len({e["id"] for e in held})     # never two events under one seq
    assert outbox.count("rejected") == 0 and outbox.waiting() == 0 and up.status.resealed >= 2


def test_the_hall_link_takes_its_assignment_through_the_in_memory_hall():
    hall = MemoryHall(assignment_data={"window": {"no": "07", "name": "综合"},
                                       "staff": {"no": "9", "name": "李四", "dept": ""},
                                       "qr_url": "https://hall.example/q", "reasons": [],
                                       "reasons_version": "1"})
    events: queue.Queue[Any] = queue.Queue()
    link = HallLink(hall, "d1", events, hall_mode=False)
    assert link.fetch_assignment() is not None
    changed = events.get_nowait()
    assert isinstance(changed, AssignmentChanged) and changed.assignment.staff_name == "李四"
    assert link.fetch_assignment() is None        # unchanged: nothing new on the queue
    assert events.empty()


# --- a clock that claims to be synced but is not -------------------------------------------

class LyingWall:
    """A system clock a year ahead that says it is synchronised."""

    def __init__(self, ahead=datetime.timedelta(days=365)):
        self.mono = 100.0
        self.ahead = ahead

    def wall(self):
        return HALL_TIME + self.ahead + datetime.timedelta(seconds=self.mono - 100.0)

    def clocks(self):
        return clock.Clocks(monotonic=lambda: self.mono, wall=self.wall, synced=lambda: True, boot_id="b1",
                            sync_check_s=0)


def test_a_synced_clock_a_year_off_the_halls_is_not_believed():
    w = LyingWall()
    clocks = w.clocks()
    origin = Origin("d1", "01", "7", "张三", "5")
    records = RecordFactory(clocks)
    assert records.base("rating", origin, None)["clock_synced"] is True   # nothing known better yet
    clocks.learn_hall_time(int(HALL_TIME.timestamp()))
    assert clocks.disagrees() and not clocks.is_synced() and clocks.source() == "hall"
    stamped = records.rating(origin, Level.SATISFIED, None, False)
    assert stamped["clock_synced"] is False
    assert stamped["occurred_at"].startswith("2026-12-06")                 # the hall's time, not next year's
    # One clock event dates this boot; the ratings after it owe no other.
    assert clocks.clock_event_due() == "hall"
    event = records.clock(origin, "hall")
    clocks.clock_event_kept()
    assert event["synced_at"].startswith("2026-12-06")
    records.base("rating", origin, None)
    assert clocks.clock_event_due() == ""


def test_a_small_difference_is_no_disagreement_and_the_limit_is_configurable():
    w = LyingWall(ahead=datetime.timedelta(seconds=60))
    clocks = w.clocks()
    clocks.learn_hall_time(int(HALL_TIME.timestamp()))
    assert not clocks.disagrees() and clocks.is_synced() and clocks.source() == "ntp"
    clocks.max_disagreement_s = 30
    assert clocks.disagrees() and not clocks.is_synced()


def test_the_uploader_reports_clock_disagrees(outbox):
    w = LyingWall()
    clocks = w.clocks()
    up = Uploader(outbox, MemoryHall(), "d1", clocks=clocks)
    assert clock.DISAGREES not in up.refresh_status().faults
    clocks.learn_hall_time(int(HALL_TIME.timestamp()))
    assert clock.DISAGREES in up.refresh_status().faults


def test_only_the_ids_the_hall_names_are_marked_delivered(outbox):
    events = fill(outbox, 4)

    class Half(MemoryHall):
        def deliver(self, device_id, sent_at, events):
            word = super().deliver(device_id, sent_at, events)
            assert isinstance(word, Delivery)
            # The hall keeps all four but its answer names only the first two.
            return dataclasses.replace(word, acknowledged=word.acknowledged[:2])

    up = make_uploader(outbox, Half())
    up.send_batch()
    delivered = {e["id"] for e in outbox.events("delivered")}
    assert delivered == {e["id"] for e in events[:2]} and outbox.waiting() == 2


def test_the_hall_link_takes_a_session_through_the_in_memory_hall():
    hall = MemoryHall(session={"session_id": "s-1", "ticket": "A001", "project_no": "P1", "task_code": "T",
                               "task_name": "办件", "qr_url": "https://hall.example/q/s-1"})
    events: queue.Queue[Any] = queue.Queue()
    link = HallLink(hall, "d1", events, hall_mode=True)
    opened = link.poll_session()
    assert opened is not None and opened.session_id == "s-1" and events.get_nowait() == opened
    hall.session = None
    assert link.poll_session() is None
    assert events.get_nowait().session_id == "s-1"      # the hall closed it: SessionClosed, once
