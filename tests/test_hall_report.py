"""The hall's monthly report on a fixed month of events (tests/hall_month.py), against figures worked out by hand."""

import csv
import datetime
import json
import os
import subprocess
import sys

import hall_month
import pytest

from hall import dating
from hall.ledger import HallRecords
from hall.registry import Beat, month_counters
from hall.report import build_report, format_report

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def counts(vs, s, bs, d, vd):
    return {"very_satisfied": vs, "satisfied": s, "basically_satisfied": bs, "dissatisfied": d,
            "very_dissatisfied": vd}


@pytest.fixture
def desk(tmp_path):
    desk = hall_month.load(str(tmp_path / "hall.db"))
    yield desk
    desk.close()


@pytest.fixture
def november(desk):
    return desk.report("2026-11")


def window(data, hall, number):
    (found,) = [w for h in data["halls"] if h["hall"] == hall for w in h["windows"] if w["window_no"] == number]
    return found


def figures(entry):
    keys = ("counts", "ratings", "good", "good_rate", "suspect", "overturned", "unrated", "unbound")
    return {key: entry[key] for key in keys}


# -- the figures ---------------------------------------------------------------------------------------

def test_each_window_is_keyed_by_hall_and_number(november):
    assert [(h["hall"], h["name"], [w["window_no"] for w in h["windows"]]) for h in november["halls"]] == [
        ("HQ", "偃师区政务服务中心", ["01", "02"]), ("TOWN", "城关镇便民服务中心", ["01"])]
    # Two halls' window 01 stay apart.
    assert window(november, "HQ", "01")["devices"] == ["WE-0001"]
    assert window(november, "TOWN", "01")["devices"] == ["WE-0003"]


def test_window_figures(november):
    # HQ/01: 11-01 00:10 China (16:10 UTC on 10-31) counts; the 12-01 07:30 China rating does not; the
    # two ratings of the unsynced boot are dated by its clock event to 11-12; one of them was overturned.
    assert figures(window(november, "HQ", "01")) == {
        "counts": counts(1, 2, 1, 1, 0), "ratings": 5, "good": 3, "good_rate": pytest.approx(3 / 5),
        "suspect": 0, "overturned": 1, "unrated": 1, "unbound": 0}
    # HQ/02: two suspect ratings are out of 好评率; the upheld 差评 stays in; the undated rating is nowhere.
    assert figures(window(november, "HQ", "02")) == {
        "counts": counts(0, 1, 0, 0, 1), "ratings": 2, "good": 1, "good_rate": pytest.approx(1 / 2),
        "suspect": 2, "overturned": 0, "unrated": 2, "unbound": 0}
    # TOWN/01 runs in free mode: every rating bound to no service, so its unrated count is unknown, not 0.
    assert figures(window(november, "TOWN", "01")) == {
        "counts": counts(1, 1, 1, 1, 0), "ratings": 4, "good": 2, "good_rate": pytest.approx(2 / 4),
        "suspect": 0, "overturned": 0, "unrated": None, "unbound": 4}


def test_heartbeat_counters_and_open_bad_per_window(november):
    # WE-0001: +3/+3 by 11-15, a restart then 1/0; the 10-31 and 12-01 (China) heartbeats are other months.
    assert [(w["ignored_presses"], w["noise_pulses"], w["open_bad"])
            for h in november["halls"] for w in h["windows"]] == [(4, 3, 2), (0, 0, 1), (0, 7, 0)]
    assert november["unplaced_devices"] == [
        {"device_id": "WE-0009", "hall": "TOWN", "ignored_presses": 0, "noise_pulses": 2}]


def test_hall_totals_and_departments(november):
    hq, town = november["halls"]
    assert figures(hq["totals"]) == {
        "counts": counts(1, 3, 1, 1, 1), "ratings": 7, "good": 4, "good_rate": pytest.approx(4 / 7),
        "suspect": 2, "overturned": 1, "unrated": 3, "unbound": 0}
    assert figures(town["totals"]) == {
        "counts": counts(1, 1, 1, 1, 0), "ratings": 4, "good": 2, "good_rate": pytest.approx(2 / 4),
        "suspect": 0, "overturned": 0, "unrated": None, "unbound": 4}
    # 市场监管局 serves at HQ/01 and TOWN/01.
    assert [(d["department"], figures(d)) for d in november["departments"]] == [
        ("市场监管局", {"counts": counts(2, 3, 2, 2, 0), "ratings": 9, "good": 5, "good_rate": pytest.approx(5 / 9),
                   "suspect": 0, "overturned": 1, "unrated": 1, "unbound": 4}),
        ("税务局", {"counts": counts(0, 1, 0, 0, 1), "ratings": 2, "good": 1, "good_rate": pytest.approx(1 / 2),
                 "suspect": 2, "overturned": 0, "unrated": 2, "unbound": 0}),
    ]


def bad_rows(items):
    return [(i["id"], i["time"], i["level"], i["first_deadline"], i["deadline"], i["state"], i["days_overdue"],
             i["fixed_on"], i["appeal_state"]) for i in items]


def test_every_bad_rating_of_the_month_with_its_state(november):
    assert bad_rows(november["bad"]) == [
        # across a weekend: 10 working days from Thu 11-05 is Thu 11-19; extended to 12-04 on 11-18
        ("hq01-1105", "2026-11-05 10:00", "dissatisfied", "2026-11-19", "2026-12-04", "open", 0, None, None),
        # dated by the clock event; overturned on appeal
        ("hq01-b2-2", "2026-11-12 10:01", "dissatisfied", "2026-11-26", "2026-11-26", "overturned", 0, None,
         "撤销评价"),
        # appeal upheld: still to be rectified, and one day late on 12-01
        ("hq02-1116", "2026-11-16 11:00", "very_dissatisfied", "2026-11-30", "2026-11-30", "overdue", 1, None,
         "维持评价"),
        ("town-1125", "2026-11-25 16:00", "dissatisfied", "2026-12-09", "2026-12-09", "fixed", 0, "2026-11-27", None),
    ]
    first = november["bad"][0]
    assert first["reason_codes"] == ["201", "203"]
    assert first["extensions"] == [{"on": "2026-11-18", "until": "2026-12-04", "reason": "需协调系统厂商修复叫号系统",
                                    "by": "王科长"}]
    assert first["replies"] == [{"on": "2026-11-20", "text": "电话告知办件人整改进度", "by": "王科长"}]


def test_bad_ratings_of_earlier_months_still_open_are_carried_over(november):
    assert bad_rows(november["carried_over"]) == [
        # across National Day (10-01..07 off, Sunday 09-20 and Saturday 10-10 worked): 10-20; 42 days late
        ("hq01-0930", "2026-09-30 10:00", "dissatisfied", "2026-10-20", "2026-10-20", "overdue", 42, None, None),
        # across the make-up working Saturday 10-10: 10-22, not 10-23; fixed 12 days late, during November
        ("hq01-1009", "2026-10-09 15:00", "very_dissatisfied", "2026-10-22", "2026-10-22", "fixed", 12,
         "2026-11-03", None),
    ]


def test_a_bad_rating_fixed_before_the_month_is_not_carried_over(desk):
    december = desk.report("2026-12")
    assert [i["id"] for i in december["carried_over"]] == ["hq01-0930", "hq01-1105", "hq02-1116"]


def test_suspect_undated_and_unbound_are_listed_apart(november):
    assert [(s["id"], s["time"], s["level"]) for s in november["suspect"]] == [
        ("hq02-s1", "2026-11-16 11:00", "satisfied"), ("hq02-s2", "2026-11-16 11:00", "very_satisfied")]
    assert november["undated"] == [{"device_id": "WE-0002", "boot_id": "b9", "events": 1}]
    assert november["unbound_windows"] == [{"hall": "TOWN", "window_no": "01", "unbound": 4, "unrated_known": False}]
    assert november["unregistered"] == []


def test_the_month_boundary_is_china_time(desk):
    december = desk.report("2026-12")
    assert figures(window(december, "HQ", "01"))["counts"] == counts(1, 0, 0, 0, 0)
    october = desk.report("2026-10")
    assert figures(window(october, "HQ", "01"))["counts"] == counts(0, 0, 0, 0, 1)
    # 11-01 00:10 in China is 10-31 in UTC: not an October rating.
    assert window(october, "HQ", "01")["ratings"] == 1
    assert figures(window(october, "TOWN", "01"))["counts"] == counts(0, 1, 0, 0, 0)


def test_one_hall_only(desk):
    town = desk.report("2026-11", hall="TOWN")
    assert [h["hall"] for h in town["halls"]] == ["TOWN"]
    assert [d["department"] for d in town["departments"]] == ["市场监管局"]
    assert [i["id"] for i in town["bad"]] == ["town-1125"] and town["carried_over"] == []
    assert town["undated"] == [] and town["appeals"] == []


# -- dating ------------------------------------------------------------------------------------------------

def test_exact_time_from_the_boots_clock_event():
    clock = {"type": "clock", "device_id": "d", "boot_id": "b", "mono_ms": 150_000,
             "synced_at": "2026-11-12T10:02:30+08:00"}
    unsynced = {"type": "rating", "device_id": "d", "boot_id": "b", "mono_ms": 30_000, "clock_synced": False,
                "occurred_at": "1970-01-01T00:00:30+00:00"}
    assert dating.exact_time(unsynced, clock) == datetime.datetime.fromisoformat("2026-11-12T10:00:30+08:00")
    assert dating.exact_time(unsynced, None) is None
    assert dating.exact_time(unsynced, {**clock, "boot_id": "other"}) is None
    trusted = dating.exact_time({**unsynced, "clock_synced": True}, clock)
    assert trusted is not None and trusted.year == 1970  # a synced stamp is trusted
    # 23:30 UTC on 30 November is 07:30 on 1 December in China.
    synced = {"type": "rating", "clock_synced": True, "occurred_at": "2026-11-30T23:30:00+00:00"}
    dated_synced = dating.exact_time(synced, None)
    assert dated_synced is not None and dating.month_of(dated_synced) == "2026-12"
    dated = dating.date_events([{**unsynced, "id": "e"}, {**clock, "id": "c"}])
    assert dated["e"] == datetime.datetime(2026, 11, 12, 10, 0, 30, tzinfo=dating.CHINA)


def test_without_its_clock_event_an_unsynced_boot_lands_in_no_month(desk):
    events = [e for e in desk.events() if e["id"] != "hq01-b2-clock"]
    data = build_report(events, "2026-11", today=hall_month.AS_OF, records=desk.records())
    assert figures(window(data, "HQ", "01"))["counts"] == counts(1, 2, 0, 1, 0)
    assert data["undated"] == [{"device_id": "WE-0001", "boot_id": "b2", "events": 2},
                               {"device_id": "WE-0002", "boot_id": "b9", "events": 1}]
    assert build_report(events, "1970-01", today=hall_month.AS_OF)["halls"] == []


def test_an_unregistered_device_is_named_not_merged(desk):
    data = build_report(desk.events(), "2026-11", today=hall_month.AS_OF)  # no registry at all
    assert [h["hall"] for h in data["halls"]] == ["未登记"]
    assert data["unregistered"] == ["WE-0001", "WE-0002", "WE-0003"]
    assert "未登记大厅的设备：WE-0001, WE-0002, WE-0003" in format_report(data)


def test_month_counters_count_restarts_from_zero():
    def beat(day, uptime, ignored):
        at = datetime.datetime(2026, 11, day, 12, tzinfo=datetime.UTC)
        return Beat("d", at, uptime, {"ignored_presses": ignored})
    beats = [beat(1, 10, 5), beat(2, 20, 9), beat(3, 5, 2), beat(4, 15, 1)]  # 1 < 2 without an uptime drop
    assert month_counters(beats, datetime.date(2026, 11, 2), datetime.date(2026, 12, 1)) == {
        "d": {"ignored_presses": 4 + 2 + 1, "noise_pulses": 0}}


def test_legacy_resolved_ids_count_as_fixed():
    rating = {"id": "r", "type": "rating", "device_id": "d", "window_no": "1", "level": "dissatisfied",
              "clock_synced": True, "occurred_at": "2026-11-02T09:00:00+08:00", "session_id": "s"}
    open_one = build_report([rating], "2026-11", today=datetime.date(2026, 11, 30))
    assert open_one["bad"][0]["state"] == "overdue"
    fixed = build_report([rating], "2026-11", {"r"}, datetime.date(2026, 11, 30), records=HallRecords())
    assert fixed["bad"][0]["state"] == "fixed"


# -- what the supervisor reads ------------------------------------------------------------------------------

def test_the_text_report(november):
    text = format_report(november)
    assert text.startswith("好差评月报 2026-11（中国时间，截至 2026-12-01）\n大厅 HQ 偃师区政务服务中心\n")
    assert ("窗口 01  设备 WE-0001  部门 市场监管局\n"
            "  非常满意 1  满意 2  基本满意 1  不满意 1  非常不满意 0  合计 5\n"
            "  好评率 60.0% (3/5)\n"
            "  未评价 1  未评率 14.3%\n"
            "  申诉撤销(不计入) 1\n"
            "  忽略按键 4  噪声脉冲 3\n"
            "  未整改差评 2\n") in text
    assert ("窗口 01  设备 WE-0003  部门 市场监管局\n"
            "  非常满意 1  满意 1  基本满意 1  不满意 1  非常不满意 0  合计 4\n"
            "  好评率 50.0% (2/4)\n"
            "  未评价 不可知（评价未绑定办件）\n"
            "  未绑定办件 4\n") in text
    assert ("大厅合计 HQ\n  非常满意 1  满意 3  基本满意 1  不满意 1  非常不满意 1  合计 7\n"
            "  好评率 57.1% (4/7)\n") in text
    assert ("部门 市场监管局\n  非常满意 2  满意 3  基本满意 2  不满意 2  非常不满意 0  合计 9\n"
            "  好评率 55.6% (5/9)\n") in text
    assert ("  2026-11-05 10:00 HQ/01 不满意 工号 1001 张三 市场监管局 原因 201,203\n"
            "    整改期限 2026-12-04（原 2026-11-19） 状态 整改中 编号 2026-11-005 id hq01-1105\n"
            "    查实 属实：叫号系统故障属实\n"
            "    延期 2026-11-18 至 2026-12-04：需协调系统厂商修复叫号系统\n"
            "    答复 2026-11-20：电话告知办件人整改进度\n") in text
    assert "以前月份未整改差评 2\n  2026-09-30 10:00 HQ/01 不满意" in text
    assert "    整改期限 2026-10-20 状态 已逾期 42 天 编号 2026-09-001 id hq01-0930\n    查实 未查实\n" in text
    assert "    整改期限 2026-10-22 状态 已整改 2026-11-03 逾期 12 天 编号 2026-10-001 id hq01-1009\n" in text
    assert "  #2 2026-11-12 10:01 HQ/01 不满意 申诉人 1001 张三 2026-11-13：群众误按，当场说明\n" \
           "    撤销评价 2026-11-20 复核人 王科长：监控显示系误按，撤销 id hq01-b2-2\n" in text
    assert "可疑评价（不计入好评率）2\n" in text
    assert "时间待定（设备尚未对时）：设备 WE-0002 启动 b9 1 条\n" in text


def test_a_deadline_in_a_year_without_an_official_calendar_says_so(desk):
    late = {**hall_month.rating("WE-0001", "late", "2026-12-24T10:00:00+08:00", "dissatisfied"), "seq": 99}
    data = build_report([*desk.events(), late], "2026-12", today=datetime.date(2026, 12, 28), records=desk.records())
    (item,) = [i for i in data["bad"] if i["id"] == "late"]
    assert (item["deadline"], item["official_calendar"]) == ("2027-01-07", False)
    assert "整改期限 2027-01-07（暂按周一至周五推算）" in format_report(data)


def test_csv_tables(desk, tmp_path):
    from hall.report_csv import write_csv
    paths = write_csv(desk.report("2026-11"), tmp_path / "csv")
    assert [p.name for p in paths] == [f"haochaping-2026-11-{name}.csv" for name in (
        "windows", "departments", "bad", "appeals", "suspect", "staff", "reasons", "matters", "flagged")]
    with paths[0].open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:5] == ["大厅", "大厅名称", "窗口", "设备", "部门"]
    assert rows[1] == ["HQ", "偃师区政务服务中心", "01", "WE-0001", "市场监管局", "1", "2", "1", "1", "0", "5", "3",
                       "60.0%", "1", "0", "0", "1", "4", "3", "2", "14.3%", "0"]
    assert rows[3][:3] == ["HQ", "偃师区政务服务中心", "合计"] and rows[3][10:13] == ["7", "4", "57.1%"]
    assert rows[4][13] == "不可知"
    with paths[2].open(encoding="utf-8-sig", newline="") as f:
        bad = list(csv.reader(f))
    assert bad[0][20] == "id"
    assert [(r[0], r[20], r[13]) for r in bad[1:]] == [
        ("本月", "hq01-1105", "整改中"), ("本月", "hq01-b2-2", "申诉撤销"), ("本月", "hq02-1116", "已逾期"),
        ("本月", "town-1125", "已整改"), ("以前月份", "hq01-0930", "已逾期"), ("以前月份", "hq01-1009", "已整改")]


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hall", *args], capture_output=True, text=True, env=env,
                          timeout=30)


def test_report_command_and_the_older_option(desk, tmp_path):
    db = str(tmp_path / "hall.db")
    answer = run("report", "--db", db, "--month", "2026-11", "--as-of", "2026-12-01", "--csv", str(tmp_path / "out"))
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == format_report(desk.report("2026-11"))
    assert (tmp_path / "out" / "haochaping-2026-11-windows.csv").exists()
    older = run("--db", db, "--report", "2026-11")
    assert older.returncode == 0, older.stderr
    assert "  好评率 60.0% (3/5)\n" in older.stdout
    bad = run("report", "--db", db, "--month", "November")
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr
    registered = run("register", "--db", db, "WE-0002", "TOWN", "--area", "410307001")
    assert registered.returncode == 0 and registered.stdout == "WE-0002 已登记到大厅 TOWN\n"
    moved = run("report", "--db", db, "--month", "2026-11", "--as-of", "2026-12-01", "--format", "json")
    assert [h["hall"] for h in json.loads(moved.stdout)["halls"]] == ["HQ", "TOWN"]
    assert [w["window_no"] for w in json.loads(moved.stdout)["halls"][1]["windows"]] == ["01", "02"]


def test_the_older_report_test_on_the_official_calendar(tmp_path):
    # Moved from tests/test_hall.py with the report: the same May 2024 events, now with China's calendar
    # (05-01..05-05 off, Saturday 05-11 worked, Dragon Boat Festival 06-10 off).
    from hall.desk import HallDesk
    from hall.store import Storage

    def may(event_id, day, level, seq):
        return {**hall_month.rating("WE-0001", event_id, f"{day}T09:{seq:02d}:00+08:00", level), "window_no": "A01",
                "seq": seq}
    levels = ("very_satisfied", "satisfied", "satisfied", "basically_satisfied", "dissatisfied")
    events = [may(f"m{i}", "2024-05-03", level, i) for i, level in enumerate(levels, 1)]
    events += [may("late", "2024-05-31", "very_dissatisfied", 6), may("june", "2024-06-03", "dissatisfied", 7),
               {**hall_month.event("WE-0001", "detail", "detail", "2024-05-03T09:10:00+08:00"), "seq": 8,
                "rating_id": "m5", "reason_codes": ["401"], "reasons_version": "v1"}]
    hall_month.seal(events)
    path = str(tmp_path / "hall.db")
    with HallDesk(path, today=lambda: datetime.date(2024, 5, 20)) as desk:
        storage = Storage(path)
        storage.store("WE-0001", events, "2024-06-03T12:00:00+00:00")
        data = desk.report("2024-05")
        (hall,) = data["halls"]
        assert hall["hall"] == "未登记" and hall["windows"][0]["window_no"] == "A01"
        assert hall["windows"][0]["counts"] == counts(1, 2, 1, 1, 1)
        assert hall["windows"][0]["good_rate"] == pytest.approx(3 / 6)
        assert [(b["id"], b["deadline"], b["state"], b["reason_codes"]) for b in data["bad"]] == [
            ("m5", "2024-05-16", "overdue", ["401"]), ("late", "2024-06-17", "open", [])]
        text = format_report(data)
        assert "窗口 A01" in text and "好评率 50.0% (3/6)" in text
        assert "整改期限 2024-05-16" in text and "整改期限 2024-06-17" in text
        assert "2024-06-03" not in text
        storage.resolve("m5", "已整改", "2024-05-20T08:00:00+00:00")
        storage.close()
        assert "整改期限 2024-05-16 状态 已整改" in format_report(desk.report("2024-05"))


def test_a_keys_file_registers_each_devices_hall(tmp_path):
    from hall.__main__ import load_halls, register_halls
    from hall.desk import HallDesk
    from hall.store import Storage

    keys = tmp_path / "keys.toml"
    keys.write_text('[devices]\n"WE-0001" = "k1"\n"WE-0002" = "k2"\n[halls]\n"WE-0001" = "HQ"\n', encoding="utf-8")
    assert load_halls(str(keys)) == {"WE-0001": "HQ"}
    db = str(tmp_path / "hall.db")
    Storage(db).close()
    register_halls(db, load_halls(str(keys)))
    with HallDesk(db) as desk:
        assert desk.records().registry.devices == {"WE-0001": "HQ"}
    keys.write_text('[halls]\n"WE-0001" = 1\n', encoding="utf-8")
    with pytest.raises(ValueError, match="halls"):
        load_halls(str(keys))


def test_every_heartbeat_the_server_stores_is_logged(tmp_path):
    from hall.desk import HallDesk
    from hall.store import Storage

    db = str(tmp_path / "hall.db")
    storage = Storage(db)  # the server's own storage, before any supervisor command ran
    storage.put_heartbeat("WE-0001", {"uptime_s": 1, "ignored_presses": 1}, "2026-11-02T01:00:00+00:00")
    storage.put_heartbeat("WE-0001", {"uptime_s": 2, "ignored_presses": 3}, "2026-11-03T01:00:00+00:00")
    storage.close()
    with HallDesk(db) as desk:
        assert [b.counters for b in desk.records().beats] == [{"ignored_presses": 1}, {"ignored_presses": 3}]
