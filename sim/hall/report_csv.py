"""The month's report as CSV files, one per table, for a spreadsheet.

UTF-8 with a byte-order mark, so a spreadsheet opened by double-click shows
the Chinese headers right. Files, for month ``YYYY-MM``:
``haochaping-YYYY-MM-windows.csv`` (every window, then each hall's total),
``-departments.csv``, ``-bad.csv`` (this month's 差评 and those carried over),
``-appeals.csv`` and ``-suspect.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.hall.report import LEVEL_TEXT, LEVELS

FIGURES = [LEVEL_TEXT[level] for level in LEVELS] + [
    "评价数", "好评数", "好评率", "未评价", "未绑定办件", "可疑", "申诉撤销"]


def _figures(tally: Mapping[str, Any]) -> list[Any]:
    rate = "" if tally["good_rate"] is None else f"{tally['good_rate'] * 100:.1f}%"
    unrated = "不可知" if tally["unrated"] is None else tally["unrated"]
    return [*(tally["counts"][level] for level in LEVELS), tally["ratings"], tally["good"], rate, unrated,
            tally["unbound"], tally["suspect"], tally["overturned"]]


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_csv(data: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write the report's tables into ``directory`` (made if missing); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"haochaping-{data['month']}"
    windows = []
    for hall in data["halls"]:
        for w in hall["windows"]:
            windows.append([hall["hall"], hall["name"], w["window_no"], " ".join(w["devices"]),
                            " ".join(w["departments"]), *_figures(w), w["ignored_presses"], w["noise_pulses"],
                            w["open_bad"]])
        windows.append([hall["hall"], hall["name"], "合计", "", "", *_figures(hall["totals"]), "", "", ""])
    bad = [[source, i["time"], i["hall"], i["window_no"], i["level_text"], i["staff_no"], i["staff_name"],
            i["staff_dept"], ",".join(i["reason_codes"]), "是" if i["suspect"] else "", i["first_deadline"],
            i["deadline"], "" if i["official_calendar"] else "暂按周一至周五推算", i["state_text"],
            i["days_overdue"], i["fixed_on"] or "", i["fix"] or "",
            "; ".join(f"{e['on']} 至 {e['until']}：{e['reason']}" for e in i["extensions"]),
            "; ".join(f"{r['on']}：{r['text']}" for r in i["replies"]),
            "" if i["appeal"] is None else f"#{i['appeal']} {i['appeal_state']}", i["id"]]
           for source, key in (("本月", "bad"), ("以前月份", "carried_over")) for i in data[key]]
    return [
        _write(directory / f"{stem}-windows.csv",
               ["大厅", "大厅名称", "窗口", "设备", "部门", *FIGURES, "忽略按键", "噪声脉冲", "未整改差评"], windows),
        _write(directory / f"{stem}-departments.csv", ["部门", *FIGURES],
               ([d["department"], *_figures(d)] for d in data["departments"])),
        _write(directory / f"{stem}-bad.csv",
               ["来源", "评价时间", "大厅", "窗口", "评价", "工号", "姓名", "部门", "原因代码", "可疑", "原整改期限",
                "整改期限", "日历", "状态", "逾期天数", "整改日期", "整改情况", "延期", "答复", "申诉", "id"], bad),
        _write(directory / f"{stem}-appeals.csv",
               ["申诉号", "评价时间", "大厅", "窗口", "评价", "申诉日期", "申诉人", "申诉理由", "结果", "复核日期",
                "复核人", "复核意见", "id"],
               ([a["n"], a["time"], a["hall"], a["window_no"], a["level_text"], a["filed_on"], a["filed_by"],
                 a["grounds"], a["decision_text"], a["decided_on"] or "", a["reviewer"], a["note"], a["id"]]
                for a in data["appeals"])),
        _write(directory / f"{stem}-suspect.csv", ["评价时间", "大厅", "窗口", "评价", "工号", "姓名", "部门", "id"],
               ([s["time"], s["hall"], s["window_no"], s["level_text"], s["staff_no"], s["staff_name"],
                 s["staff_dept"], s["id"]] for s in data["suspect"])),
    ]
