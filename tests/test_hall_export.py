"""The provincial export: the unified interface's fields and GB/T 39046's, codes both ways, on the fixed month."""

import json
import os
import subprocess
import sys

import hall_month
import pytest

from hall.export import export_month, gbt_code, level_from_gbt, level_from_province, province_satisfaction

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: level, its name, the exchange interface's satisfaction (5 = 非常满意), GB/T 39046 满意度代码 (1 = 非常满意).
CODES = [
    ("very_satisfied", "非常满意", 5, "1"),
    ("satisfied", "满意", 4, "2"),
    ("basically_satisfied", "基本满意", 3, "3"),
    ("dissatisfied", "不满意", 2, "4"),
    ("very_dissatisfied", "非常不满意", 1, "5"),
]


@pytest.mark.parametrize(("level", "name", "satisfaction", "gbt"), CODES)
def test_both_codings_both_ways(level, name, satisfaction, gbt):
    assert province_satisfaction(level) == satisfaction
    assert level_from_province(satisfaction) == level == level_from_province(str(satisfaction))
    assert gbt_code(level) == gbt
    assert level_from_gbt(gbt) == level == level_from_gbt(int(gbt))


@pytest.mark.parametrize("code", [0, 6, "", "five", "5.0"])
def test_codes_outside_one_to_five_are_refused(code):
    with pytest.raises(ValueError):
        level_from_province(code)
    with pytest.raises(ValueError):
        level_from_gbt(code)


@pytest.fixture
def desk(tmp_path):
    desk = hall_month.load(str(tmp_path / "hall.db"))
    yield desk
    desk.close()


HQ, TOWN = "410307", "410307001"
#: November's ratings in order: projectNo, satisfaction, evalDetail, assessTime (China), areaCode.
PROVINCE = [
    ("P-hq01-1101", 4, "", "2026-11-01 00:10:00", HQ),       # 2026-10-31 16:10 UTC
    (None, 5, "", "2026-11-03 09:00:00", TOWN),              # free mode: bound to no case
    (None, 4, "", "2026-11-03 10:00:00", TOWN),
    (None, 3, "", "2026-11-04 10:00:00", TOWN),
    ("P-hq01-1105", 2, "201,203", "2026-11-05 10:00:00", HQ),
    ("P-hq01-1110a", 5, "", "2026-11-10 09:00:00", HQ),
    ("P-hq01-1110b", 4, "", "2026-11-10 09:20:00", HQ),
    ("P-hq01-b2-1", 3, "", "2026-11-12 10:00:30", HQ),       # stamped 1970, dated by the boot's clock event
    ("P-hq02-1116", 1, "", "2026-11-16 11:00:00", HQ),       # appeal upheld
    ("P-hq02-1120", 4, "", "2026-11-20 10:00:00", HQ),
    (None, 2, "", "2026-11-25 16:00:00", TOWN),
]


def test_province_format(desk):
    data = desk.export("2026-11", "province")
    assert (data["format"], data["month"], data["time_zone"], data["undated"]) == (
        "province", "2026-11", "Asia/Shanghai", 1)
    assert data["ratings"][0] == {
        "projectNo": "P-hq01-1101", "taskCode": "T-0001", "taskName": "营业执照办理", "pf": "5", "satisfaction": "4",
        "evalDetail": "", "assessTime": "2026-11-01 00:10:00", "assessNumber": 1, "areaCode": HQ,
        "proManager": "张三", "writingEvaluation": "", "isPublic": "1", "isDefault": "0"}
    assert [(r["projectNo"], int(r["satisfaction"]), r["evalDetail"], r["assessTime"], r["areaCode"])
            for r in data["ratings"]] == PROVINCE
    assert {type(r["satisfaction"]) for r in data["ratings"]} == {type(r["pf"]) for r in data["ratings"]} == {str}
    assert {(r["pf"], r["assessNumber"]) for r in data["ratings"]} == {("5", 1)}


def test_unrated_sessions_are_exported_as_unrated_never_as_ratings(desk):
    data = desk.export("2026-11", "province")
    assert data["unrated"] == [
        {"projectNo": f"P-{eid}", "taskCode": "T-0001", "taskName": "营业执照办理", "pf": "5", "satisfaction": "",
         "evalDetail": "", "assessTime": time, "assessNumber": 0, "areaCode": HQ,
         "proManager": "张三" if eid.startswith("hq01") else "李四", "writingEvaluation": "", "isPublic": "1",
         "isDefault": "0"}
        for eid, time in (("hq01-1111u", "2026-11-11 14:00:00"), ("hq02-1120u", "2026-11-20 15:00:00"),
                          ("hq02-1123u", "2026-11-23 09:00:00"))]
    rated = {r["projectNo"] for r in data["ratings"] + data["withheld"]}
    assert not rated & {u["projectNo"] for u in data["unrated"]}
    assert all(u["satisfaction"] == "" and u["assessNumber"] == 0 for u in data["unrated"])


def test_suspect_and_overturned_ratings_are_withheld_with_the_reason(desk):
    withheld = desk.export("2026-11", "province")["withheld"]
    assert [(w["id"], w["reason"], w.get("appeal"), w["satisfaction"], w["assessTime"]) for w in withheld] == [
        ("hq01-b2-2", "overturned", 2, "2", "2026-11-12 10:01:30"),
        ("hq02-s1", "suspect", None, "4", "2026-11-16 11:00:05"),
        ("hq02-s2", "suspect", None, "5", "2026-11-16 11:00:07"),
    ]


def test_gbt_format(desk):
    data = desk.export("2026-11", "gbt")
    assert data["ratings"][0] == {
        "办件编号": "P-hq01-1101", "评价渠道": "5", "评价人": None, "评价时间": "20261101T001000", "评价次数": 1,
        "满意度": "满意", "满意度代码": "2", "文字评价": "", "行政区划": HQ}
    expected = [(project, {5: "1", 4: "2", 3: "3", 2: "4", 1: "5"}[satisfaction],
                 time.replace("-", "").replace(" ", "T").replace(":", ""), area)
                for project, satisfaction, _, time, area in PROVINCE]
    assert [(r["办件编号"], r["满意度代码"], r["评价时间"], r["行政区划"]) for r in data["ratings"]] == expected
    assert [r["满意度"] for r in data["ratings"]] == ["满意", "非常满意", "满意", "基本满意", "不满意", "非常满意",
                                                  "满意", "基本满意", "非常不满意", "满意", "不满意"]
    assert [u["状态"] for u in data["unrated"]] == ["未评价"] * 3
    assert [w["满意度代码"] for w in data["withheld"]] == ["4", "2", "1"]


def test_one_hall_and_the_month_boundary(desk):
    town = desk.export("2026-11", "province", hall="TOWN")
    assert [r["assessTime"] for r in town["ratings"]] == [
        "2026-11-03 09:00:00", "2026-11-03 10:00:00", "2026-11-04 10:00:00", "2026-11-25 16:00:00"]
    assert town["unrated"] == [] and town["undated"] == 0
    december = export_month(desk.events(), "2026-12", "province", records=desk.records(), today=hall_month.AS_OF)
    assert [(r["projectNo"], r["assessTime"]) for r in december["ratings"]] == [
        ("P-hq01-1201", "2026-12-01 07:30:00")]
    with pytest.raises(ValueError, match="format"):
        export_month([], "2026-11", "csv")


def test_export_command(desk, tmp_path):
    db = str(tmp_path / "hall.db")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "gbt.json"
    answer = subprocess.run(
        [sys.executable, "-m", "hall", "export", "--db", db, "--month", "2026-11", "--format", "gbt",
         "--as-of", "2026-12-01", "--out", str(out)], capture_output=True, text=True, env=env, timeout=30)
    assert answer.returncode == 0, answer.stderr
    assert "2026-11 gbt：评价 11 条，未评价 3 条，另列 3 条，时间待定 1 条" in answer.stderr
    assert json.loads(out.read_text(encoding="utf-8")) == desk.export("2026-11", "gbt")
    answer = subprocess.run(
        [sys.executable, "-m", "hall", "导出", "--db", db, "--month", "2026-11", "--as-of", "2026-12-01"],
        capture_output=True, text=True, env=env, timeout=30)
    assert json.loads(answer.stdout)["format"] == "province"
