"""The report's columns: each one entry, read by the text, CSV, HTML (通报) and JSON views alike.

A column names its key in the report's data (what the JSON view holds), its
Chinese title (the header of the CSV file, the text table and the 通报's
table) and how a value is shown. Adding a column is one entry in one table
below; every view picks it up.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hall.levels import LEVEL_TEXT, LEVELS

Row = Mapping[str, Any]


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def percent(value: Any) -> str:
    """``0.6`` -> ``60.0%``; None -> empty."""
    return "" if value is None else f"{value * 100:.1f}%"


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a report table.

    Attributes:
        key: the row's key (in the JSON view).
        title: the Chinese header.
        show: value -> the text shown in CSV, text and HTML.
        get: row -> value; ``row[key]`` by default.
    """

    key: str
    title: str
    show: Callable[[Any], str] = _plain
    get: Callable[[Row], Any] | None = None

    def value(self, row: Row) -> Any:
        """The row's value for this column (what JSON holds)."""
        return self.get(row) if self.get is not None else row.get(self.key)

    def cell(self, row: Row) -> str:
        """The row's value as shown."""
        return self.show(self.value(row))


def _level(level: str) -> Column:
    return Column(level, LEVEL_TEXT[level], get=lambda row: row["counts"][level])


def _unknown(value: Any) -> str:
    return "不可知" if value is None else str(value)


#: The figures of a window, hall, district, department or staff member (:meth:`Tally.as_dict`).
FIGURES: tuple[Column, ...] = (
    *(_level(level) for level in LEVELS),
    Column("ratings", "评价数"), Column("good", "好评数"), Column("good_rate", "好评率", percent),
    Column("unrated", "未评价", _unknown), Column("unbound", "未绑定办件"), Column("suspect", "可疑"),
    Column("overturned", "申诉撤销"),
)
#: Figures that came after the first ones, kept at the end of the CSV rows so older sheets still line up.
LATER_FIGURES: tuple[Column, ...] = (
    Column("unrated_rate", "未评率", percent), Column("flagged", "标记事件(不计入)"),
)
WINDOWS: tuple[Column, ...] = (
    Column("hall", "大厅"), Column("name", "大厅名称"), Column("window_no", "窗口"), Column("devices", "设备"),
    Column("departments", "部门"), *FIGURES,
    Column("ignored_presses", "忽略按键"), Column("noise_pulses", "噪声脉冲"), Column("open_bad", "未整改差评"),
    *LATER_FIGURES,
)
DEPARTMENTS: tuple[Column, ...] = (Column("department", "部门"), *FIGURES, *LATER_FIGURES)
STAFF: tuple[Column, ...] = (
    Column("staff_no", "工号"), Column("staff_name", "姓名"), Column("departments", "部门"),
    Column("windows", "窗口"), *FIGURES, Column("bad", "差评数"), *LATER_FIGURES,
    Column("praised", "表扬"), Column("repeated_bad", "反复差评"),
)
REASONS: tuple[Column, ...] = (
    Column("code", "原因代码"), Column("count", "差评数"), Column("windows", "窗口"), Column("ids", "评价"),
)
MATTERS: tuple[Column, ...] = (
    Column("matter", "事项"), Column("count", "差评数"), Column("windows", "窗口"), Column("ids", "评价"),
)


def _join_extensions(items: Any) -> str:
    return "; ".join(f"{e['on']} 至 {e['until']}：{e['reason']}" for e in items)


def _join_replies(items: Any) -> str:
    return "; ".join(f"{r['on']}：{r['text']}" for r in items)


BAD: tuple[Column, ...] = (
    Column("source", "来源"), Column("time", "评价时间"), Column("hall", "大厅"), Column("window_no", "窗口"),
    Column("level_text", "评价"), Column("staff_no", "工号"), Column("staff_name", "姓名"),
    Column("staff_dept", "部门"), Column("reason_codes", "原因代码", ",".join),
    Column("suspect", "可疑"), Column("first_deadline", "原整改期限"), Column("deadline", "整改期限"),
    Column("official_calendar", "日历", lambda v: "" if v else "暂按周一至周五推算"),
    Column("state_text", "状态"), Column("days_overdue", "逾期天数"), Column("fixed_on", "整改日期"),
    Column("fix", "整改情况"), Column("extensions", "延期", _join_extensions),
    Column("replies", "答复", _join_replies),
    Column("appeal", "申诉", get=lambda r: "" if r["appeal"] is None else f"#{r['appeal']} {r['appeal_state']}"),
    Column("id", "id"), Column("no", "编号"), Column("matter", "事项"), Column("verdict_text", "查实"),
    Column("verify_note", "查实说明"), Column("reply_deadline", "答复期限"), Column("reply_text", "答复状态"),
)
APPEALS: tuple[Column, ...] = (
    Column("n", "申诉号"), Column("time", "评价时间"), Column("hall", "大厅"), Column("window_no", "窗口"),
    Column("level_text", "评价"), Column("filed_on", "申诉日期"), Column("filed_by", "申诉人"),
    Column("grounds", "申诉理由"), Column("decision_text", "结果"), Column("decided_on", "复核日期"),
    Column("reviewer", "复核人"), Column("note", "复核意见"), Column("id", "id"), Column("no", "编号"),
)
SUSPECT: tuple[Column, ...] = (
    Column("time", "评价时间"), Column("hall", "大厅"), Column("window_no", "窗口"), Column("level_text", "评价"),
    Column("staff_no", "工号"), Column("staff_name", "姓名"), Column("staff_dept", "部门"), Column("id", "id"),
    Column("no", "编号"),
)
FLAGGED: tuple[Column, ...] = (
    Column("time", "时间"), Column("hall", "大厅"), Column("window_no", "窗口"), Column("device_id", "设备"),
    Column("seq", "序号"), Column("type", "类型"), Column("level_text", "评价"), Column("flag_text", "标记"),
    Column("detail", "说明"), Column("id", "id"),
)


def cells(columns: Sequence[Column], rows: Iterable[Row]) -> list[list[str]]:
    """Each row's cells, as shown."""
    return [[column.cell(row) for column in columns] for row in rows]


def width(text: str) -> int:
    """Columns a terminal gives ``text``: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def text_table(columns: Sequence[Column], rows: Iterable[Row], indent: str = "  ") -> list[str]:
    """A plain-text table, aligned for a terminal (CJK characters counted double)."""
    body = cells(columns, rows)
    table = [[column.title for column in columns], *body]
    widths = [max(width(line[i]) for line in table) for i in range(len(columns))]
    return [indent + "  ".join(cell + " " * (w - width(cell)) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in table]
