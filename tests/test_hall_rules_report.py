"""The report the rules ask for (第十二、十三、十四、十五条), on tests/hall_month.py's November and a few more events,
against figures worked out by hand: per staff member, 差评 by reason and matter, the district, 未评率, a window with
only an old open 差评, flagged events apart and out of every figure, and ``pending --as-of`` in mid-month."""

import csv
import datetime
import os
import subprocess
import sys

import hall_month
import pytest

from hall.commands import last_month
from hall.report import format_report
from hall.report_csv import write_csv

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = datetime.date.fromisoformat


@pytest.fixture
def desk(tmp_path):
    desk = hall_month.load_more(str(tmp_path / "hall.db"))
    yield desk
    desk.close()


@pytest.fixture
def november(desk):
    return desk.report("2026-11", as_of=D("2026-12-01"))


def counts(vs, s, bs, d, vd):
    return {"very_satisfied": vs, "satisfied": s, "basically_satisfied": bs, "dissatisfied": d,
            "very_dissatisfied": vd}


def test_per_staff_member(november):
    rows = {(p["staff_no"], p["staff_name"]): p for p in november["staff"]}
    assert list(rows) == [("1001", "张三"), ("1002", "李四"), ("1005", "赵七"), ("2001", "王五")]  # 王六: no events
    pick = ("counts", "ratings", "good", "bad", "suspect", "overturned", "unrated", "praised", "repeated_bad")
    assert {key: rows["1001", "张三"][key] for key in pick} == {
        "counts": counts(1, 2, 1, 1, 0), "ratings": 5, "good": 3, "bad": 1, "suspect": 0, "overturned": 1,
        "unrated": 1, "praised": False, "repeated_bad": False}
    # 李四: hq02-1116 and hq02-1126 are two counted 差评; two suspect ratings and the forged one are out.
    assert {key: rows["1002", "李四"][key] for key in pick} == {
        "counts": counts(0, 1, 0, 0, 2), "ratings": 3, "good": 1, "bad": 2, "suspect": 2, "overturned": 0,
        "unrated": 2, "praised": False, "repeated_bad": True}
    assert rows["1002", "李四"]["good_rate"] == pytest.approx(1 / 3)
    assert rows["1002", "李四"]["unrated_rate"] == pytest.approx(2 / (5 + 2))  # 5 services rated (2 suspect), 2 not
    assert {key: rows["1005", "赵七"][key] for key in ("ratings", "good", "bad", "praised")} == {
        "ratings": 3, "good": 3, "bad": 0, "praised": True}
    assert rows["2001", "王五"]["unrated"] is None and rows["2001", "王五"]["bad"] == 1


def test_bad_ratings_by_reason_and_by_matter(november):
    # Counted 差评 of November: hq01-1105 (201, 203), hq02-1116 (none), town-1125 (none), hq02-1126 (201);
    # hq01-b2-2 was overturned on appeal.
    assert [(r["code"], r["count"], r["ids"]) for r in november["bad_by_reason"]] == [
        ("201", 2, ["hq01-1105", "hq02-1126"]), ("未选原因", 2, ["hq02-1116", "town-1125"]), ("203", 1, ["hq01-1105"])]
    assert [(r["matter"], r["count"], r["windows"]) for r in november["bad_by_matter"]] == [
        ("营业执照办理", 3, ["HQ/01", "HQ/02"]), ("未关联事项", 1, ["TOWN/01"])]


def test_district_totals_and_unrated_rate(november):
    district = november["district"]
    assert district["counts"] == counts(5, 4, 2, 2, 2)
    assert (district["ratings"], district["good"], district["bad"]) == (15, 9, 2 + 2)
    assert district["good_rate"] == pytest.approx(9 / 15)
    # Services bound to a case: HQ/01 6 rated + 1 not, HQ/02 5 + 2, HQ/04 3; TOWN runs free (unknown).
    assert (district["unrated"], district["services"]) == (3, 17)
    assert district["unrated_rate"] == pytest.approx(3 / 17)
    assert (district["suspect"], district["overturned"], district["flagged"]) == (2, 1, 2)
    assert district["open_bad"] == 5  # hq01-1105, hq02-1116, hq02-1126 open; hq01-0930, hq03-1015 carried


def test_flagged_events_are_listed_apart_and_out_of_every_figure(november):
    assert [(f["id"], f["device_id"], f["type"], f["flag"]) for f in november["flagged"]] == [
        ("hq02-forged", "WE-0002", "rating", "hash"), ("town-gap", "WE-0003", "gap", "gap")]
    assert november["flagged"][1]["detail"].startswith("2 条缺失")
    hq02 = next(w for h in november["halls"] for w in h["windows"] if (h["hall"], w["window_no"]) == ("HQ", "02"))
    assert (hq02["ratings"], hq02["good_rate"], hq02["flagged"]) == (3, pytest.approx(1 / 3), 1)
    assert "hq02-forged" not in [s["id"] for s in november["suspect"]]
    text = format_report(november)
    assert "标记事件（链断裂、冲突、缺失等，不计入任何数字）2\n" in text
    assert "内容与哈希不符" in text and "设备报告缺失" in text


def test_a_window_with_only_an_old_open_bad_rating_is_listed(november):
    hq = next(h for h in november["halls"] if h["hall"] == "HQ")
    (hq03,) = [w for w in hq["windows"] if w["window_no"] == "03"]
    assert (hq03["ratings"], hq03["unrated"], hq03["open_bad"], hq03["devices"]) == (0, 0, 1, ["WE-0004"])
    assert [(i["id"], i["state"], i["deadline"]) for i in november["carried_over"] if i["window_no"] == "03"] == [
        ("hq03-1015", "overdue", "2026-10-29")]


def test_bad_ratings_are_checked_and_the_reply_has_a_deadline(november):
    items = {i["id"]: i for i in november["bad"] + november["carried_over"]}
    assert (items["hq01-1105"]["verdict"], items["hq01-1105"]["reply_deadline"],
            items["hq01-1105"]["reply_state"]) == ("confirmed", "2026-11-12", "late")  # replied 11-20
    assert (items["hq02-1126"]["verdict"], items["hq02-1126"]["reply_deadline"],
            items["hq02-1126"]["reply_state"]) == (None, "2026-12-03", "due")


def test_an_invalid_bad_rating_leaves_the_list_not_the_figures(desk):
    desk.verify("hq02-1126", "invalid", "群众误解办理时限，经核实窗口按规定办理", on=D("2026-11-27"))
    data = desk.report("2026-11", as_of=D("2026-12-01"))
    (item,) = [i for i in data["bad"] if i["id"] == "hq02-1126"]
    assert (item["state"], item["verdict_text"]) == ("invalid", "不属实")
    assert data["district"]["counts"]["very_dissatisfied"] == 2 and data["district"]["open_bad"] == 4


def test_the_csv_and_text_read_the_same_columns(november, tmp_path):
    paths = {p.name.split("-")[-1]: p for p in write_csv(november, tmp_path)}
    with paths["staff.csv"].open(encoding="utf-8-sig", newline="") as f:
        staff = list(csv.reader(f))
    assert staff[0][:4] == ["工号", "姓名", "部门", "窗口"] and staff[0][-2:] == ["表扬", "反复差评"]
    assert staff[2][:2] == ["1002", "李四"] and staff[2][-1] == "是"
    with paths["windows.csv"].open(encoding="utf-8-sig", newline="") as f:
        windows = list(csv.reader(f))
    assert windows[-1][:3] == ["区县合计", "", ""] and windows[-1][10:13] == ["15", "9", "60.0%"]
    text = format_report(november)
    assert ("区县合计\n  非常满意 5  满意 4  基本满意 2  不满意 2  非常不满意 2  合计 15\n"
            "  好评率 60.0% (9/15)\n") in text
    assert "  反复被差评：1002 李四（差评 2）\n" in text and "  表扬：1005 赵七\n" in text


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hall", *args], capture_output=True, text=True, env=env,
                          timeout=30)


def test_pending_as_of_mid_month(desk, tmp_path):
    db = str(tmp_path / "hall.db")
    desk.number_ratings()
    desk.close()
    answer = run("pending", "--db", db, "--as-of", "2026-11-18")
    assert answer.returncode == 0, answer.stderr
    listed = [line.rsplit(" id ", 1)[1] for line in answer.stdout.splitlines() if " id " in line]
    # Rated on or before 11-18 and open then: not town-1125 (11-25) nor hq02-1126 (11-26); hq01-b2-2's appeal
    # was decided on 11-20, so on 11-18 it is still a 差评 to follow; both appeals (decided 11-19 and 11-20) wait.
    assert listed == ["hq01-0930", "hq03-1015", "hq01-1105", "hq01-b2-2", "hq02-1116"]
    assert "待复核申诉 2\n  #1 2026-11-17 1002 李四" in answer.stdout
    assert "  #2 2026-11-13 1001 张三：群众误按，当场说明" in answer.stdout
    later = run("待办", "--db", db, "--as-of", "2026-11-20")
    listed = [line.rsplit(" id ", 1)[1] for line in later.stdout.splitlines() if " id " in line]
    assert listed == ["hq01-0930", "hq03-1015", "hq01-1105", "hq02-1116"] and "待复核申诉 0" in later.stdout


def test_the_month_defaults_to_last_month(desk, tmp_path):
    assert last_month(D("2026-12-06")) == "2026-11" and last_month(D("2027-01-01")) == "2026-12"
    db = str(tmp_path / "hall.db")
    desk.close()
    answer = run("报表", "--db", db, "--as-of", "2026-12-01")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith(f"好差评月报 {last_month()}（")


def test_the_export_withholds_flagged_ratings_with_their_flag(desk):
    export = desk.export("2026-11", "province", as_of=D("2026-12-01"))
    assert [(w["id"], w["reason"], w.get("flag")) for w in export["withheld"]] == [
        ("hq01-b2-2", "overturned", None), ("hq02-s1", "suspect", None), ("hq02-s2", "suspect", None),
        ("hq02-forged", "flagged", "hash")]
    assert "hq02-forged" not in [r.get("id") for r in export["ratings"]]
