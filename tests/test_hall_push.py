"""The provincial push: every rating, 追评 and unrated service reaches a stand-in provincial endpoint (real HTTP on
loopback) exactly once, through the hall's durable outbox, while the platform is down and after; every field present
with one type; unrated services past 5 working days get the default marker and are never sent as a rating."""

import datetime
import json
import os
import subprocess
import sys
import threading
import time

import hall_month
import pytest
import requests

from hall import HallServer
from hall.auth import sign_request
from hall.desk import HallDesk
from hall.province import ProvinceStandIn
from hall.push import FIELDS, ProvincePush, check_item, set_matter

pytestmark = pytest.mark.timeout(60)

KEY = "push-test-key"
rating, event = hall_month.rating, hall_month.event


class Clock:
    """The hall's clock for the push (the 5-working-day limit), moved by the test."""

    def __init__(self, when: str) -> None:
        self.now = datetime.datetime.fromisoformat(when).timestamp()
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def set(self, when: str) -> None:
        with self.lock:
            self.now = datetime.datetime.fromisoformat(when).timestamp()


def post(server, device, events):
    body = json.dumps({"device_id": device, "sent_at": "2026-09-30T12:00:00+08:00", "events": events}).encode()
    url = server.url + "/api/v1/evaluations"
    headers = {"Content-Type": "application/json", **sign_request(KEY, device, "POST", url, body)}
    answer = requests.post(url, data=body, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def hall(tmp_path):
    """A hall on a real port with two registered devices, and the stand-in platform (closed for now)."""
    db = str(tmp_path / "hall.db")
    with HallDesk(db) as desk:
        desk.register("WE-0001", "HQ", "偃师区政务服务中心", "410307")
        desk.register("WE-0003", "TOWN", "城关镇便民服务中心", "410307001")
        set_matter(desk.connection(), "TOWN", "01", "410307-XK-001", "个体工商户登记", "410307-SCJG")
    province = ProvinceStandIn().start()
    province.stop()  # the port stays reserved for it: posts are refused until it starts again
    clock = Clock("2026-09-30T12:00:00+08:00")
    server = HallServer(db, default_key=KEY).start()
    push = ProvincePush(db, province.url, clock=clock, retry_base_s=0.05, retry_max_s=0.3, poll_s=0.05,
                        timeout_s=2)
    push.start()
    yield server, push, province, clock
    push.close()
    server.close()
    province.stop()


def service_events():
    """What two windows send on 2026-09-30 (the day before National Day)."""
    we1 = [
        rating("WE-0001", "r-good", "2026-09-30T09:00:00+08:00", "very_satisfied"),
        {**event("WE-0001", "d-good", "detail", "2026-09-30T09:00:20+08:00"), "rating_id": "r-good",
         "reason_codes": ["501"], "reasons_version": "v1"},
        {**event("WE-0001", "f-good", "detail", "2026-09-30T15:00:00+08:00"), "rating_id": "r-good",
         "assess_number": 2, "reason_codes": ["502"], "comment": "办事很快", "public": False},
        rating("WE-0001", "r-suspect", "2026-09-30T09:00:04+08:00", "satisfied", suspect=True),
        event("WE-0001", "u-service", "unrated", "2026-09-30T10:00:00+08:00"),
        rating("WE-0001", "r-bad", "2026-09-30T11:00:00+08:00", "very_dissatisfied"),
        rating("WE-0001", "r-forged", "2026-09-30T11:30:00+08:00", "dissatisfied"),
    ]
    hall_month.seal(we1)
    we1[-1].update(level="very_satisfied", satisfaction=5)  # changed after sealing: the hall flags its hash
    we3 = [rating("WE-0003", "r-free", "2026-09-30T09:30:00+08:00", "satisfied", session=False)]
    hall_month.seal(we3)
    return we1, we3


def test_every_item_arrives_exactly_once_after_the_platform_was_down(hall):
    server, push, province, _ = hall
    we1, we3 = service_events()
    post(server, "WE-0001", we1[:4])
    post(server, "WE-0003", we3)
    post(server, "WE-0001", we1[4:])
    # Made as they arrive, kept while the platform is unreachable.
    wait_for(lambda: len(push.items()) == 8 and push.status()["last_error"])
    assert province.posts == 0 and push.status()["pending"] == 8
    province.start()
    province.down()  # up again, but answering 503 for a while
    wait_for(lambda: province.refused >= 2)
    assert province.items == []
    province.down(False)
    wait_for(lambda: push.status()["pending"] == 0)
    items = province.items
    ids = [item["itemId"] for item in items]
    assert ids == ["r-good", "d-good", "f-good", "r-suspect", "r-free", "u-service", "r-bad", "r-forged"]
    assert province.posts - province.refused == len(items)  # each accepted once, none sent again
    for item in items:
        assert check_item(item) == [], item
        assert set(item) == set(FIELDS)
    by_id = {item["itemId"]: item for item in items}
    assert {k: by_id["r-good"][k] for k in ("projectNo", "taskCode", "taskName", "deptCode", "areaCode",
                                              "proManager", "pf", "satisfaction", "assessTime", "assessNumber",
                                              "isPublic", "isDefault", "withheld")} == {
        "projectNo": "P-r-good", "taskCode": "T-0001", "taskName": "营业执照办理", "deptCode": "市场监管局",
        "areaCode": "410307", "proManager": "张三", "pf": "5", "satisfaction": "5",
        "assessTime": "2026-09-30 09:00:00", "assessNumber": 1, "isPublic": "1", "isDefault": "0", "withheld": ""}
    # The reasons chosen at the counter: an update of the rating (assessNumber 1) with its evalDetail.
    assert {k: by_id["d-good"][k] for k in ("itemType", "assessNumber", "projectNo", "satisfaction", "evalDetail",
                                              "ratingId")} == {
        "itemType": "update", "assessNumber": 1, "projectNo": "P-r-good", "satisfaction": "5", "evalDetail": "501",
        "ratingId": "r-good"}
    # 追评: assessNumber 2, the rating's case and level, its own reasons and words, not public.
    assert {k: by_id["f-good"][k] for k in ("itemType", "assessNumber", "projectNo", "satisfaction", "evalDetail",
                                              "writingEvaluation", "isPublic", "assessTime")} == {
        "itemType": "followup", "assessNumber": 2, "projectNo": "P-r-good", "satisfaction": "5", "evalDetail": "502",
        "writingEvaluation": "办事很快", "isPublic": "0", "assessTime": "2026-09-30 15:00:00"}
    # Withheld ratings go out with their marking, not hidden.
    assert by_id["r-suspect"]["withheld"] == "suspect"
    assert (by_id["r-forged"]["withheld"], by_id["r-forged"]["satisfaction"]) == ("flagged:hash", "5")
    assert by_id["r-bad"]["satisfaction"] == "1"
    # free mode: no case; the rating's own id names it, the window's default matter from the hall's config.
    assert {k: by_id["r-free"][k] for k in ("projectNo", "taskCode", "taskName", "deptCode", "areaCode")} == {
        "projectNo": "r-free", "taskCode": "410307-XK-001", "taskName": "个体工商户登记", "deptCode": "410307-SCJG",
        "areaCode": "410307001"}
    # An unrated service is never a rating: no satisfaction; the channel is its window's.
    unrated = by_id["u-service"]
    assert (unrated["itemType"], unrated["satisfaction"], unrated["assessNumber"], unrated["isDefault"],
            unrated["pf"]) == ("unrated", "", 0, "0", "5")


def test_an_unrated_service_gets_the_default_marker_after_five_working_days(hall):
    server, push, province, clock = hall
    province.start()
    we1, _ = service_events()
    post(server, "WE-0001", we1)
    wait_for(lambda: push.status()["pending"] == 0 and len(province.items) == 7)
    # 5 working days from 09-30 across National Day (10-01..07 off, Saturday 10-10 worked): 10-13.
    clock.set("2026-10-13T18:00:00+08:00")
    push.wake()
    time.sleep(0.3)
    assert [i["itemType"] for i in province.items].count("default") == 0
    clock.set("2026-10-14T08:00:00+08:00")
    push.wake()
    wait_for(lambda: len(province.items) == 8)
    default = province.items[-1]
    assert check_item(default) == []
    assert (default["itemId"], default["itemType"], default["isDefault"], default["satisfaction"],
            default["assessNumber"], default["assessTime"], default["projectNo"]) == (
        "u-service:default", "default", "1", "", 0, "2026-10-13 23:59:59", "P-u-service")
    time.sleep(0.3)
    assert len(province.items) == 8  # once


def test_the_outbox_survives_a_restart_and_sends_nothing_twice(hall, tmp_path):
    server, push, province, clock = hall
    we1, _ = service_events()
    post(server, "WE-0001", we1[:2])
    wait_for(lambda: len(push.items()) == 2)
    push.close()  # the hall process stops with the platform still down
    province.start()
    again = ProvincePush(str(tmp_path / "hall.db"), province.url, clock=clock, retry_base_s=0.05, poll_s=0.05)
    try:
        again.start()
        wait_for(lambda: len(province.items) == 2)
        post(server, "WE-0001", we1[2:])
        wait_for(lambda: len(province.items) == 7)
        time.sleep(0.3)
        assert [i["itemId"] for i in province.items] == [e["id"] for e in we1]
        assert province.posts == 7
    finally:
        again.close()


def test_a_rating_overturned_after_it_was_pushed_goes_out_again_marked(hall, tmp_path):
    server, push, province, _ = hall
    province.start()
    we1, _ = service_events()
    post(server, "WE-0001", we1)
    wait_for(lambda: len(province.items) == 7)
    with HallDesk(str(tmp_path / "hall.db"), today=lambda: datetime.date(2026, 10, 9)) as desk:
        appeal = desk.file_appeal("r-bad", "群众误按", by="1001 张三", on=datetime.date(2026, 10, 8))
        desk.decide_appeal(appeal.n, "overturned", "王科长", "录像显示误按", on=datetime.date(2026, 10, 9))
    push.wake()
    wait_for(lambda: len(province.items) == 8)
    update = province.items[-1]
    assert check_item(update) == []
    assert (update["itemId"], update["itemType"], update["withheld"], update["satisfaction"]) == (
        "r-bad:overturned", "update", "overturned:1", "1")


def test_the_window_matter_and_the_queue_from_the_command_line(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    db = str(tmp_path / "hall.db")

    def run(*args):
        answer = subprocess.run([sys.executable, "-m", "hall", *args], capture_output=True, text=True, env=env,
                                timeout=30)
        assert answer.returncode == 0, answer.stderr
        return answer.stdout
    assert run("登记", "--db", db, "WE-0003", "TOWN", "--name", "城关镇便民服务中心") == "WE-0003 已登记到大厅 TOWN\n"
    assert run("事项", "--db", db, "TOWN", "01", "--code", "X-1", "--name", "个体工商户登记") == (
        "TOWN/01 默认事项：X-1 个体工商户登记\n")
    assert json.loads(run("push", "--db", db, "--format", "json")) == {
        "pending": 0, "sent": 0, "oldest_pending": None, "last_error": None}
    assert run("推送", "--db", db).startswith("省平台推送：待发 0  已发 0")


def test_the_servers_own_report_keeps_flagged_events_out_of_the_figures(hall):
    server, _, _, _ = hall
    we1, _ = service_events()
    post(server, "WE-0001", we1)
    data = server.report_data("2026-09", today=datetime.date(2026, 10, 1))
    (window,) = data["halls"][0]["windows"]
    # r-good and r-bad count; r-suspect is apart; r-forged (its hash broken after sealing) is flagged, out.
    assert (window["ratings"], window["good"], window["suspect"], window["flagged"]) == (2, 1, 1, 1)
    assert [(f["id"], f["flag"]) for f in data["flagged"]] == [("r-forged", "hash")]
