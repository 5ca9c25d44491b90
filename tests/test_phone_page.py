"""The phone page and the SMS reminder over real HTTP on loopback (the browser tests are in test_phone_browser.py):
a service the hall holds is rated once across channels, then only 追评; forged, altered and unknown links are refused
and store nothing; 5 working days across a holiday close the page and the push sends the default marker; one SMS per
service with a known mobile number. And the device's side: the later screen's QR names the session and decodes."""

from __future__ import annotations

import datetime
import sqlite3
import uuid

import pytest
import requests
from phone_util import ASSIGNMENT, KEY, Clock, Device

from hall import HallServer
from hall.desk import HallDesk
from hall.phone import code_of, link, session_ids
from hall.push import ProvincePush, check_item
from hall.workdays import load_calendar

pytestmark = pytest.mark.timeout(60)

TODAY = "2026-11-10T10:00:00+08:00"


@pytest.fixture
def hall(tmp_path):
    """A hall on a real port (its phone page on the hall's clock), the push's outbox (not sending) and a device."""
    db = str(tmp_path / "hall.db")
    with HallDesk(db) as desk:
        desk.register("WE-0007", "HQ", "偃师区政务服务中心", "410307")
    clock = Clock(TODAY)
    server = HallServer(db, default_key=KEY, assignment=ASSIGNMENT).start()
    assert server.phone is not None
    server.phone.clock = clock
    push = ProvincePush(db, "http://127.0.0.1:9/unused", clock=clock)
    yield server, push, clock, Device(server.url)
    push.close()
    server.close()


def get(url):
    return requests.get(url, timeout=5)


def rate(url, level, reasons=(), comment="", public="1", kind="rating"):
    form = [("kind", kind), ("level", level), ("comment", comment), ("public", public)]
    form += [(f"reason_{level}" if kind == "rating" else "reason", code) for code in reasons]
    return requests.post(url, data=form, timeout=5)


def phone_records(server):
    db = sqlite3.connect(server.phone.db_path)
    try:
        return db.execute("SELECT kind FROM phone_records").fetchall()
    finally:
        db.close()


def test_the_code_is_the_session_uuid_in_base32_and_the_link_is_qr_alphanumeric():
    session = str(uuid.uuid4())
    code = code_of(session)
    assert code is not None and len(code) == 26
    assert session_ids(code) == (session, uuid.UUID(session).hex)
    assert session_ids(code.lower()) == session_ids(code)  # the hall reads it case-insensitively
    url = link("https://hcp.example.org", session)
    assert url == f"HTTPS://HCP.EXAMPLE.ORG/S/{code}"
    assert set(url) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")  # QR's alphanumeric mode
    assert session_ids(code[:-1]) is None and session_ids(code + "A") is None and session_ids("!" * 26) is None


def test_an_unrated_service_is_rated_once_then_offers_only_a_followup(hall):
    server, push, _, device = hall
    session, url = device.service("2026-11-10T09:30:00+08:00")
    page = get(url)
    assert page.status_code == 200 and "请对本次服务进行评价" in page.text
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "办事效率低" in page.text and "公开评价" in page.text and "不公开" in page.text
    answer = rate(url, "dissatisfied", ["401"], "等了很久", public="0")
    assert answer.status_code == 200 and "感谢您的评价" in answer.text and "不公开" in answer.text
    # The same link again: only a 追评, never a second rating.
    again = get(url)
    assert "追加评价" in again.text and 'name="level"' not in again.text
    second = rate(url, "very_satisfied")
    assert second.status_code == 409 and 'name="level"' not in second.text
    assert rate(url, "", ["402"], "补充：窗口无人", kind="followup").status_code == 200
    assert "已追加评价" in get(url).text

    push.collect()
    items = [i for i in push.items() if i["windowNo"] == "07"]
    assert [i["itemType"] for i in items] == ["unrated", "rating", "followup"]
    assert all(not check_item({k: v for k, v in i.items() if k != "sent"}) for i in items)
    rating, followup = items[1], items[2]
    assert (rating["pf"], rating["satisfaction"], rating["assessNumber"], rating["isPublic"]) == ("3", "2", 1, "0")
    assert (rating["evalDetail"], rating["writingEvaluation"], rating["projectNo"]) == ("401", "等了很久", session)
    assert (followup["assessNumber"], followup["evalDetail"], followup["ratingId"]) == (2, "402", rating["itemId"])

    with HallDesk(server.phone.db_path) as desk:
        report = desk.report("2026-11", as_of=datetime.date(2026, 11, 30))
    district = report["district"]
    assert (district["ratings"], district["unrated"], district["services"], district["bad"]) == (1, 0, 1, 1)
    assert report["bad"][0]["reason_codes"] == ["401", "402"]
    assert server.report_data("2026-11", datetime.date(2026, 11, 30))["district"]["ratings"] == 1


def test_a_service_rated_at_the_counter_offers_only_a_followup(hall):
    server, _, _, device = hall
    _, url = device.service("2026-11-10T09:40:00+08:00", level="satisfied")
    page = get(url)
    assert "追加评价" in page.text and 'name="level"' not in page.text
    assert "level-" not in page.text and "非常满意" not in page.text  # the counter's level is never shown
    assert rate(url, "very_dissatisfied").status_code == 409
    assert phone_records(server) == []


@pytest.mark.parametrize("make", [
    lambda code: code[:-1] + ("A" if code[-1] != "A" else "B"),   # altered
    lambda code: code_of(str(uuid.uuid4())),                       # guessed / forged
    lambda code: code[:20],                                        # cut short
    lambda code: "0" * 26,                                         # not base32
])
def test_forged_altered_or_unknown_links_are_refused_and_store_nothing(hall, make):
    server, _, _, device = hall
    session, _ = device.service("2026-11-10T09:50:00+08:00")
    bad = f"{server.url}/S/{make(code_of(session))}"
    page = get(bad)
    assert page.status_code == 404 and "未找到该次服务" in page.text and "<form" not in page.text
    assert rate(bad, "very_satisfied").status_code == 404
    assert phone_records(server) == []


def test_a_link_whose_device_has_not_delivered_yet_is_unknown_until_it_arrives(hall):
    server, _, _, device = hall
    session = str(uuid.uuid4())
    url = link(server.url, session)
    assert get(url).status_code == 404
    device.post(device.event("unrated", "2026-11-10T09:55:00+08:00", session))
    assert "请对本次服务进行评价" in get(url).text


def test_the_windows_own_code_says_what_it_can_and_cannot_do(hall):
    server, *_ = hall
    for path in ("/w/01", "/W/07", "/"):
        page = get(server.url + path)
        assert page.status_code == 200 and "不能评价" in page.text and "<form" not in page.text
        assert "5 个工作日" in page.text


def test_after_5_working_days_across_a_holiday_the_page_closes_and_the_default_marker_goes_out(hall):
    server, push, clock, device = hall
    # 2026-09-30, the day before 国庆: the 5 working days run past the holiday week.
    session, url = device.service("2026-09-30T16:00:00+08:00")
    last_day = load_calendar().add_working_days(datetime.date(2026, 9, 30), 5)
    assert last_day > datetime.date(2026, 10, 8)
    clock.set(f"{last_day}T23:00:00+08:00")
    assert "请对本次服务进行评价" in get(url).text
    push.collect()
    clock.set(f"{last_day + datetime.timedelta(days=1)}T08:00:00+08:00")
    page = get(url)
    assert "评价期限已过" in page.text and "<form" not in page.text
    assert rate(url, "very_satisfied").status_code == 409
    push.wake()  # the hall's clock moved: look for services past the limit now
    push.collect()
    items = [i for i in push.items() if i["projectNo"] == session]
    assert [(i["itemType"], i["isDefault"], i["satisfaction"]) for i in items] == [
        ("unrated", "0", ""), ("default", "1", "")]
    assert phone_records(server) == []


def test_one_sms_per_service_with_a_known_mobile_and_none_for_others(hall):
    server, _, _, device = hall
    sms = server.phone.sms
    with_number = server.open_session("WE-0007", ticket="A101", mobile="138 0013 8000")
    without = server.open_session("WE-0007", ticket="A102")
    assert "mobile" not in with_number  # the number stays at the hall: the device never sees it
    assert sms.sent == []  # nothing before the service's event has arrived
    device.post(device.event("unrated", "2026-11-10T10:00:00+08:00", with_number["session_id"]))
    device.post(device.event("rating", "2026-11-10T10:05:00+08:00", without["session_id"], level="satisfied",
                             satisfaction=4))
    device.post(device.event("unrated", "2026-11-10T10:10:00+08:00", str(uuid.uuid4())))
    assert [m.mobile for m in sms.sent] == ["13800138000"]
    text = sms.sent[0].text
    assert link(server.url, with_number["session_id"]) in text and "不公开" in text
    assert "请对本次服务进行评价" in get(link(server.url, with_number["session_id"])).text
    device.post(device.event("unrated", "2026-11-10T10:20:00+08:00", str(uuid.uuid4())))
    assert len(sms.sent) == 1  # once per service
    db = sqlite3.connect(server.phone.db_path)
    assert db.execute("SELECT mobile FROM phone_sms").fetchall() == [("",)]  # not kept after its use
    db.close()


def test_a_rating_for_a_service_the_hall_flagged_is_listed_apart_and_pushed_withheld(hall):
    server, push, _, device = hall
    device.service("2026-11-10T10:55:00+08:00", level="satisfied")
    device.prev = "f" * 64  # the unrated event does not link to the one before: the hall flags it
    session, url = device.service("2026-11-10T11:00:00+08:00")
    assert server.flags("WE-0007")[0]["problem"] == "prev_hash"
    assert rate(url, "very_satisfied").status_code == 200
    push.collect()
    (item,) = [i for i in push.items() if i["itemType"] == "rating" and i["projectNo"] == session]
    assert item["withheld"] == "flagged:prev_hash"
    with HallDesk(server.phone.db_path) as desk:
        report = desk.report("2026-11", as_of=datetime.date(2026, 11, 30))
    assert report["district"]["ratings"] == 1 and report["district"]["flagged"] == 1  # the 满意 at the counter
    assert [line["flag"] for line in report["flagged"]] == ["prev_hash"]


def test_a_rating_made_on_the_phone_counts_in_the_month_it_was_made(hall):
    server, _, clock, device = hall
    _, url = device.service("2026-11-30T17:00:00+08:00")
    clock.set("2026-12-02T09:00:00+08:00")
    assert rate(url, "very_dissatisfied", ["501"]).status_code == 200
    with HallDesk(server.phone.db_path) as desk:
        november = desk.report("2026-11", as_of=datetime.date(2026, 12, 2))["district"]
        december = desk.report("2026-12", as_of=datetime.date(2026, 12, 2))
    assert (november["ratings"], november["unrated"]) == (0, 0)
    assert (december["district"]["ratings"], december["district"]["bad"]) == (1, 1)
    (bad,) = december["bad"]
    assert bad["reason_codes"] == ["501"] and bad["first_deadline"] > "2026-12-14"  # 10 working days from 12-02


def test_a_number_whose_service_never_arrives_is_not_kept(hall):
    server, _, clock, device = hall
    server.open_session("WE-0007", ticket="A103", mobile="13900139000")
    clock.set("2026-11-25T10:00:00+08:00")  # 15 days on: that service was never delivered
    device.post(device.event("unrated", "2026-11-25T10:00:00+08:00", str(uuid.uuid4())))
    assert server.phone.sms.sent == []
    db = sqlite3.connect(server.phone.db_path)
    assert db.execute("SELECT mobile FROM phone_sms").fetchall() == [("",)]
    db.close()


def test_a_rating_on_the_last_day_is_never_followed_by_the_default_marker(hall):
    _, push, clock, device = hall
    session, url = device.service("2026-09-30T16:00:00+08:00")
    last_day = load_calendar().add_working_days(datetime.date(2026, 9, 30), 5)
    clock.set(f"{last_day}T23:59:00+08:00")
    assert rate(url, "satisfied").status_code == 200
    clock.set(f"{last_day + datetime.timedelta(days=1)}T00:01:00+08:00")  # the push's first round after midnight
    push.wake()
    push.collect()
    assert [i["itemType"] for i in push.items() if i["projectNo"] == session] == ["unrated", "rating"]
