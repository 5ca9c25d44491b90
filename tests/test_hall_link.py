"""Assignment and session polling against the real stand-in hall server."""

import queue
import threading

import pytest

from device.levels import Level
from device.queue.hall import Assignment, AssignmentChanged, HallLink, load_assignment, save_assignment
from device.config import Secret
from device.queue.transport import HttpTransport
from device.state import SessionOpened

KEY = "hall-link-key"
GOOD = {"window": {"no": "08", "name": "不动产登记"}, "staff": {"no": "8802", "name": "李四", "dept": "自然资源局"},
        "qr_url": "https://hcp.example.org/w/08", "reasons_version": "v3",
        "reasons": [{"level": "dissatisfied", "code": "401", "text": "办事效率低"},
                    {"level": "very_dissatisfied", "code": "501", "text": "态度差"},
                    {"level": "satisfied", "code": "201", "text": "不该出现"}]}

pytestmark = pytest.mark.timeout(30)



def link(hall, hall_mode=False):
    transport = HttpTransport(hall.url, "d1", Secret(KEY), timeout=5)
    return HallLink(transport, "d1", queue.Queue(), hall_mode=hall_mode, poll_wait_s=1)


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
    assert hl.poll_session() is None          # delivered once; the poll times out empty
