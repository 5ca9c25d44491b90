"""Appeals (申诉复核): filed with grounds, then upheld or overturned.

An overturned rating stays in the data, marked, and leaves the figures.
"""

import datetime
import os
import subprocess
import sys

import hall_month
import pytest

from hall.errors import LedgerError

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = datetime.date.fromisoformat


@pytest.fixture
def desk(tmp_path):
    desk = hall_month.load(str(tmp_path / "hall.db"))
    yield desk
    desk.close()


def hq01(data):
    (hall,) = [h for h in data["halls"] if h["hall"] == "HQ"]
    return hall["windows"][0]


def test_the_report_lists_appeals_and_their_outcomes(desk):
    appeals = desk.report("2026-11")["appeals"]
    assert [(a["n"], a["id"], a["level"], a["filed_on"], a["filed_by"], a["grounds"], a["decision"],
             a["decided_on"], a["reviewer"], a["note"]) for a in appeals] == [
        (1, "hq02-1116", "very_dissatisfied", "2026-11-17", "1002 李四", "群众对政策本身不满，非窗口服务问题",
         "upheld", "2026-11-19", "王科长", "评价反映真实诉求，维持"),
        (2, "hq01-b2-2", "dissatisfied", "2026-11-13", "1001 张三", "群众误按，当场说明",
         "overturned", "2026-11-20", "王科长", "监控显示系误按，撤销"),
    ]


def test_an_overturned_rating_leaves_the_figures_but_stays_in_the_data(desk):
    # Before the decision of 11-20 the rating counted; from that day on it does not.
    before = hq01(desk.report("2026-11", as_of=D("2026-11-19")))
    after = hq01(desk.report("2026-11"))
    assert (before["counts"]["dissatisfied"], before["ratings"], before["overturned"]) == (2, 6, 0)
    assert (after["counts"]["dissatisfied"], after["ratings"], after["overturned"]) == (1, 5, 1)
    assert [a["decision_text"] for a in desk.report("2026-11", as_of=D("2026-11-19"))["appeals"]] == [
        "维持评价", "待复核"]
    # The event itself is untouched.
    (event,) = [e for e in desk.events() if e["id"] == "hq01-b2-2"]
    assert event["level"] == "dissatisfied" and "overturned" not in event
    (item,) = [i for i in desk.report("2026-11")["bad"] if i["id"] == "hq01-b2-2"]
    assert (item["state"], item["appeal"], item["appeal_state"]) == ("overturned", 2, "撤销评价")


def test_an_upheld_rating_counts_and_still_needs_rectifying(desk):
    hq02 = desk.report("2026-11")["halls"][0]["windows"][1]
    assert hq02["counts"]["very_dissatisfied"] == 1
    assert desk.follow_up("hq02-1116").state == "overdue"


@pytest.mark.parametrize(("action", "message"), [
    (lambda d: d.file_appeal("hq02-1116", "again", by="1002"), "已有申诉 #1"),
    (lambda d: d.file_appeal("hq01-0930", " ", by="1001"), "申诉理由"),
    (lambda d: d.file_appeal("hq01-0930", "x", by=""), "申诉人"),
    (lambda d: d.file_appeal("hq01-0930", "x", by="1001", on=D("2026-09-01")), "早于评价日期"),
    (lambda d: d.file_appeal("hq01-1111u", "x", by="1001"), "没有编号或 id"),
    (lambda d: d.decide_appeal(1, "overturned", "x", "y"), "已于 2026-11-19 复核：维持评价"),
    (lambda d: d.decide_appeal(9, "upheld", "x", "y"), "没有申诉 #9"),
    (lambda d: d.decide_appeal(1, "maybe", "x", "y"), "维持 或 撤销"),
    (lambda d: d.decide_appeal(1, "upheld", "x", ""), "复核意见"),
])
def test_appeals_that_make_no_sense_are_refused(desk, action, message):
    with pytest.raises(LedgerError, match=message):
        action(desk)


def test_a_decision_before_the_filing_is_refused(desk):
    appeal = desk.file_appeal("hq01-0930", "误评", by="1001", on=D("2026-11-20"))
    with pytest.raises(LedgerError, match="提出于 2026-11-20"):
        desk.decide_appeal(appeal.n, "upheld", "王科长", "维持", on=D("2026-11-19"))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hall", *args], capture_output=True, text=True, env=env,
                          timeout=30)


def test_appeal_and_review_from_the_command_line(desk, tmp_path):
    db = str(tmp_path / "hall.db")
    desk.close()
    filed = run("appeal", "--db", db, "hq01-0930", "--grounds", "系统故障导致误评", "--by", "1001 张三",
                "--on", "2026-11-02")
    assert filed.returncode == 0, filed.stderr
    assert filed.stdout == "申诉 #3 已提出\n"
    pending = run("pending", "--db", db, "--as-of", "2026-11-25")
    assert "待复核申诉 1\n  #3 2026-11-02 1001 张三：系统故障导致误评 评价 hq01-0930" in pending.stdout
    decided = run("review", "--db", db, "3", "--overturn", "--note", "日志证实系统故障", "--reviewer", "王科长",
                  "--on", "2026-11-05")
    assert decided.returncode == 0, decided.stderr
    assert decided.stdout == "申诉 #3：撤销评价\n"
    again = run("review", "--db", db, "3", "--uphold", "--note", "x", "--reviewer", "y")
    assert again.returncode == 1 and "已于 2026-11-05 复核" in again.stderr
    neither = run("review", "--db", db, "3", "--note", "x", "--reviewer", "y")
    assert neither.returncode == 2
    # Overturned on 11-05: it was open when November began, so November shows how it ended; December
    # no longer carries it.
    november = run("report", "--db", db, "--month", "2026-11", "--as-of", "2026-12-01")
    assert "状态 申诉撤销 编号 2026-09-001 id hq01-0930\n    查实 未查实\n    申诉 #3 撤销评价\n" in november.stdout
    assert "  #3 2026-09-30 10:00 HQ/01 不满意 申诉人 1001 张三 2026-11-02：系统故障导致误评\n" in november.stdout
    december = run("report", "--db", db, "--month", "2026-12", "--as-of", "2026-12-01")
    assert "hq01-0930" not in december.stdout
