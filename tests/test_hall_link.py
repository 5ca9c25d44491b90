"""Assignment and session polling against the real stand-in hall server."""

import dataclasses
import json
import queue
import threading
import time

import pytest
from test_uploader import Recording, wait_for
from test_wire import TinyServer

from device.config import Secret
from device.levels import Level
from device.queue import wire
from device.queue.hall import (
    Assignment,
    AssignmentChanged,
    HallLink,
    SessionGuard,
    load_assignment,
    save_assignment,
)
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from device.state import SessionClosed, SessionOpened
from helpers import rating

KEY = "hall-link-key"
GOOD = {"window": {"no": "08", "name": "不动产登记"}, "staff": {"no": "8802", "name": "李四", "dept": "自然资源局"},
        "qr_url": "https://hcp.example.org/w/08", "reasons_version": "v3",
        "reasons": [{"level": "dissatisfied", "code": "401", "text": "办事效率低"},
                    {"level": "very_dissatisfied", "code": "501", "text": "态度差"},
                    {"level": "satisfied", "code": "201", "text": "不该出现"}]}

pytestmark = pytest.mark.timeout(30)


def link(hall, hall_mode=False, **kw):
    transport = HttpTransport(hall.url, "d1", Secret(KEY), timeout=5)
    return HallLink(transport, "d1", queue.Queue(), hall_mode=hall_mode, poll_wait_s=1, **kw)


def test_assignment_is_fetched_once_then_not_modified(hall):
    hall.set_assignment(None, GOOD)
    hl = link(hall)
    got = hl.fetch_assignment()
    assert hl.events.get_nowait() == AssignmentChanged(got)
    assert got.staff_name == "李四" and got.etag
    assert got.reasons_by_level() == {Level.DISSATISFIED: (("401", "办事效率低"),),
                                      Level.VERY_DISSATISFIED: (("501", "态度差"),)}
    assert hl.fetch_assignment() is None and hl.events.empty()      # 304
    hall.set_assignment(None, dict(GOOD, staff={"no": "9", "name": "王五"}))
    assert hl.fetch_assignment().staff_name == "王五"


@pytest.mark.parametrize("bad, field", [
    ({"window": {"no": "1"}, "qr_url": "https://x.org"}, "staff"),
    (dict(GOOD, qr_url="javascript:alert(1)"), "qr_url"),
    (dict(GOOD, staff={"no": 7, "name": "李四"}), "staff.no"),
    (dict(GOOD, reasons=[{"level": "great", "code": "1", "text": "x"}]), "reasons[0].level"),
])
def test_a_hostile_assignment_is_refused_and_the_current_kept(hall, bad, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Assignment.from_json(bad)
    hall.set_assignment(None, bad)
    hl = link(hall)
    assert hl.fetch_assignment() is None and hl.events.empty() and hl.etag == ""


def test_the_kept_assignment_round_trips(tmp_path):
    a = Assignment.from_json(GOOD, '"e1"')
    path = tmp_path / "assignment.json"
    save_assignment(path, a)
    assert load_assignment(path) == a
    path.write_text("{broken", encoding="utf-8")
    assert load_assignment(path) is None


def test_a_session_opened_by_the_hall_reaches_the_queue(hall):
    hl = link(hall, hall_mode=True)
    timer = threading.Timer(0.2, hall.open_session, args=("d1",), kwargs={"ticket": "A023"})
    timer.start()
    opened = hl.poll_session()
    assert isinstance(opened, SessionOpened) and opened.ticket == "A023" and opened.project_no == ""
    assert hl.events.get_nowait() == opened
    assert hl.poll_session() is None          # still open at the hall: answered again, not news
    assert hl.events.empty() and hl.status.sessions_ignored == 0 and hl.status.faults == ()


def opened_in(hl):
    return [e for e in hl.events.queue if isinstance(e, SessionOpened)]


def test_the_open_session_is_polled_calmly_and_is_no_fault(hall):
    hl = link(hall, hall_mode=True)
    hl.next_assignment = 1e12
    hall.open_session("d1", ticket="A1")
    assert hl.cycle() == 0.0                                    # opened
    waits = [hl.cycle() for _ in range(3)]                      # the hall answers with it at once
    assert waits == [HallLink.OPEN_PAUSE_S] * 3
    assert hl.events.qsize() == 1 and hl.status.sessions_ignored == 0 and hl.status.faults == ()


def test_the_hall_closing_the_session_puts_one_session_closed(hall):
    hl = link(hall, hall_mode=True)
    opened = hall.open_session("d1", ticket="A2")
    assert hl.poll_session().session_id == opened["session_id"]
    assert hall.close_session("d1", "some-other-id") is False   # only the session named
    assert hall.close_session("d1", opened["session_id"]) is True
    assert hl.poll_session() is None and hl.poll_session() is None
    assert list(hl.events.queue) == [SessionOpened(opened["session_id"], ticket="A2"),
                                     SessionClosed(opened["session_id"])]
    assert hl.status.sessions_closed == 1 and hl.status.sessions_ignored == 0 and hl.open_session_id is None


def test_another_session_at_the_hall_replaces_the_one_before(hall):
    hl = link(hall, hall_mode=True)
    hall.open_session("d1", ticket="A3")
    hl.poll_session()
    second = hall.open_session("d1", ticket="A4")                # in place of the first
    assert hl.poll_session().session_id == second["session_id"]
    # No SessionClosed: the second SessionOpened ends the first unrated in the state machine.
    assert [type(e).__name__ for e in hl.events.queue] == ["SessionOpened", "SessionOpened"]
    assert hall.close_session("d1") and hl.poll_session() is None
    assert hl.events.queue[-1] == SessionClosed(second["session_id"])


def test_a_session_rated_at_the_device_is_closed_at_the_hall(hall, outbox):
    hl = link(hall, hall_mode=True)
    opened = hall.open_session("d1")
    hl.poll_session()
    outbox.append(rating(1, session_id=opened["session_id"]))
    up = Uploader(outbox, HttpTransport(hall.url, "d1", Secret(KEY), timeout=5), "d1", synced=lambda: True)
    assert up.drain()
    assert hl.poll_session() is None                            # the rating closed it at the hall
    assert hall.close_session("d1") is False
    assert list(hl.events.queue)[-1] == SessionClosed(opened["session_id"])   # the machine ignores it: rated


def test_an_etag_spelt_in_lower_case_is_kept_and_sent_back():
    tiny = TinyServer(KEY)
    try:
        tiny.reply(200, {"content-type": "application/json", "etag": '"v7"'},
                   json.dumps(GOOD, ensure_ascii=False).encode())
        hl = HallLink(HttpTransport(tiny.url, "d1", Secret(KEY)), "d1", queue.Queue(), hall_mode=False)
        fetched = hl.fetch_assignment()
        assert fetched is not None and fetched.etag == '"v7"' and hl.status.etag == '"v7"'
        tiny.reply(304)
        assert hl.fetch_assignment() is None
        assert tiny.requests[-1][2]["If-None-Match"] == '"v7"'
    finally:
        tiny.close()


def test_the_link_runs_on_its_own_thread_and_takes_a_new_server_from_reconfigure(hall):
    hall.set_assignment(None, GOOD)
    events: queue.Queue[object] = queue.Queue()
    dead = Recording(HttpTransport("http://127.0.0.1:9", "d1", Secret(KEY), timeout=1))
    hl = HallLink(dead, "old-id", events, hall_mode=False, retry_min_s=30, retry_max_s=60)
    before = hl.status
    hl.start()
    try:
        wait_for(lambda: hl.status.online is False)              # refused: waiting 15-30 s
        assert "127.0.0.1:9" in hl.status.last_error
        good = Recording(HttpTransport(hall.url, "d1", Secret(KEY), timeout=5))
        hl.reconfigure(transport=good, device_id="d1")
        changed = events.get(timeout=10)                         # the wait was cut short
    finally:
        hl.stop(timeout=5)
    assert isinstance(changed, AssignmentChanged) and changed.assignment.staff_name == "李四"
    assert dead.closed and dead.threads == {"hall-link"} and good.threads == {"hall-link"}
    assert hl.status.online is True and hl.status.assignments == 1 and hl.status.etag
    assert before.online is None and before.assignments == 0        # a reader's snapshot never changes
    with pytest.raises(dataclasses.FrozenInstanceError):
        hl.status.online = False  # type: ignore[misc]


def test_sessions_are_long_polled_in_hall_mode_and_counted(hall):
    hl = link(hall, hall_mode=True)
    hl.start()
    try:
        deadline = time.monotonic() + 10
        while not hall.requests_log or not any("/session" in p for _, p, _ in hall.requests_log):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hall.open_session("d1", ticket="B007")
        opened = None
        while not isinstance(opened, SessionOpened):
            opened = hl.events.get(timeout=10)
    finally:
        hl.stop(timeout=5)
    assert opened.ticket == "B007" and hl.status.sessions == 1


# --- what is not believed ---------------------------------------------------------------

@pytest.mark.parametrize("sign", ["none", "wrong_key", "other_nonce"])
def test_an_impostor_can_neither_assign_nor_open_a_session(hall, sign):
    hall.set_assignment(None, GOOD)
    hl = link(hall, hall_mode=True, retry_min_s=0.01, retry_max_s=0.02)
    hall.inject("rogue", count=2, path="*", sign=sign)
    assert hl.cycle() > 0                              # the assignment: no answer at all
    hl.next_assignment = hl.monotonic() + 300
    assert hl.cycle() > 0                              # the session poll: no answer at all
    assert hl.events.empty() and hl.etag == ""
    assert hl.status.online is False and "unauthenticated_answer" in hl.status.faults
    assert hl.status.unauthenticated == 2
    hl.next_assignment = 0
    hl.cycle()                                         # the hall again
    changed = hl.events.get_nowait()
    assert changed.assignment.staff_name == "李四" and hl.status.faults == ()


def test_a_session_id_seen_before_is_ignored(hall):
    hl = link(hall, hall_mode=True)
    session_path = wire.session_path("d1", 1).split("?")[0]
    hall.inject("session", count=1, path=session_path, session_id="s-1")
    assert hl.poll_session().session_id == "s-1"
    hall.inject("session", count=1, path=session_path, session_id="s-1")
    assert hl.poll_session() is None                   # the open one again: not news, not ignored
    assert hl.poll_session() is None                   # none: the hall closed it
    hall.inject("session", count=2, path=session_path, session_id="s-1")
    assert hl.poll_session() is None and hl.poll_session() is None
    assert len(opened_in(hl)) == 1 and hl.status.sessions == 1 and hl.status.sessions_ignored == 2
    assert list(hl.events.queue)[1:] == [SessionClosed("s-1")]


def test_a_session_storm_is_refused_and_reported_and_not_polled_flat_out(hall):
    now = [1000.0]
    hl = link(hall, hall_mode=True, monotonic=lambda: now[0], guard=SessionGuard(burst=3, every_s=20))
    hl.next_assignment = 1e12
    hall.inject("session", count=50, path=wire.session_path("d1", 1).split("?")[0])
    waits = [hl.cycle() for _ in range(10)]            # ten sessions in no time at all
    assert len(opened_in(hl)) == 3                     # the burst a staff member may need
    assert hl.status.sessions == 3 and hl.status.sessions_refused == 7
    assert waits[:3] == [0.0, 0.0, 0.0] and all(w >= HallLink.STORM_PAUSE_S for w in waits[3:])
    assert any(f.startswith("session_storm") for f in hl.status.faults)
    now[0] += 20                                       # a person's pace again
    hl.cycle()
    assert len(opened_in(hl)) == 4
    now[0] += 400
    hall.clear_faults()
    hl.cycle()
    assert hl.status.faults == ()


def test_the_guard_refills_at_a_persons_pace():
    guard = SessionGuard(burst=2, every_s=10)
    assert [guard.admit(f"s{i}", 0.0) for i in range(3)] == ["", "", "storm"]
    assert guard.admit("s3", 5.0) == "storm" and guard.admit("s4", 16.0) == ""
    assert guard.admit("s4", 100.0) == "repeated" and guard.storming(100.0) and not guard.storming(400.0)
