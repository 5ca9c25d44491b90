"""The month's per-window 好差评 report a hall manager reads."""

from __future__ import annotations

import collections
import datetime
import re
from collections.abc import Collection, Sequence
from typing import Any

from sim.hall.contract import SATISFACTION, Event, parse_time

LEVEL_TEXT = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "dissatisfied": "不满意",
    "very_dissatisfied": "非常不满意",
}
GOOD_LEVELS = ("very_satisfied", "satisfied")
BAD_LEVELS = ("dissatisfied", "very_dissatisfied")
#: A confirmed 差评 is rectified within 10 working days (rules, 第十三条).
RECTIFY_WORKING_DAYS = 10


def add_working_days(day: datetime.date, count: int) -> datetime.date:
    """The date ``count`` working days (Mon-Fri) after ``day``; holidays are not known."""
    while count > 0:
        day += datetime.timedelta(days=1)
        if day.weekday() < 5:
            count -= 1
    return day


def _event_date(event: Event) -> datetime.date | None:
    # corrected_at is the uploader's fix for a clock that was not yet synced.
    when = parse_time(event.get("corrected_at")) or parse_time(event.get("occurred_at"))
    return when.date() if when else None


def build_report(events: Sequence[Event], month: str, resolved: Collection[str] = (),
                 today: datetime.date | None = None) -> dict[str, Any]:
    """The per-window figures for ``month`` (``YYYY-MM``).

    Args:
        events: every stored event, of any month.
        month: the month to report, ``YYYY-MM``.
        resolved: ids of 差评 already rectified; they are not listed as open.
        today: the date deadlines are judged against; the local date by default.

    Returns:
        ``{"month", "windows": {window_no: {"counts", "ratings", "good",
        "good_rate", "unrated", "suspect", "open_bad": [...]}}}``; each open
        差评 has ``id``, ``date``, ``level``, ``staff_no``, ``staff_name``,
        ``reason_codes``, ``deadline`` and ``overdue``.

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``.
    """
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month or ""):
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    today = today or datetime.date.today()
    reasons: dict[Any, list[Any]] = collections.defaultdict(list)
    for event in events:
        if event.get("type") == "detail":
            reasons[event.get("rating_id")].extend(event.get("reason_codes") or [])
    windows: dict[str, dict[str, Any]] = {}
    for event in events:
        day = _event_date(event)
        if day is None or day.strftime("%Y-%m") != month or event.get("type") == "detail":
            continue
        window = windows.setdefault(str(event.get("window_no") or "?"), {
            "counts": dict.fromkeys(SATISFACTION, 0), "unrated": 0, "suspect": 0, "open_bad": [],
        })
        if event["type"] == "unrated":
            window["unrated"] += 1
            continue
        level = event["level"]
        window["counts"][level] += 1
        window["suspect"] += bool(event.get("suspect"))
        if level in BAD_LEVELS and event["id"] not in resolved:
            deadline = add_working_days(day, RECTIFY_WORKING_DAYS)
            window["open_bad"].append({
                "id": event["id"], "date": day, "level": level,
                "staff_no": event.get("staff_no"), "staff_name": event.get("staff_name"),
                "reason_codes": reasons.get(event["id"], []),
                "deadline": deadline, "overdue": today > deadline,
            })
    for window in windows.values():
        window["ratings"] = sum(window["counts"].values())
        window["good"] = sum(window["counts"][level] for level in GOOD_LEVELS)
        window["good_rate"] = window["good"] / window["ratings"] if window["ratings"] else None
        window["open_bad"].sort(key=lambda item: (item["date"], item["id"]))
    return {"month": month, "windows": dict(sorted(windows.items()))}


def format_report(data: dict[str, Any]) -> str:
    """Render :func:`build_report` output as the text a hall manager reads."""
    lines = [f"好差评月报 {data['month']}"]
    if not data["windows"]:
        lines.append("(本月无评价)")
    for window_no, window in data["windows"].items():
        counts = "  ".join(f"{LEVEL_TEXT[level]} {n}" for level, n in window["counts"].items())
        rate = (f"{window['good_rate'] * 100:.1f}% ({window['good']}/{window['ratings']})"
                if window["good_rate"] is not None else "— (0 评价)")
        lines += [f"窗口 {window_no}", f"  {counts}  合计 {window['ratings']}",
                  f"  好评率 {rate}", f"  未评价 {window['unrated']}"]
        if window["suspect"]:
            lines.append(f"  可疑 {window['suspect']}")
        lines.append(f"  未整改差评 {len(window['open_bad'])}")
        for item in window["open_bad"]:
            staff = " ".join(str(x) for x in (item["staff_no"], item["staff_name"]) if x)
            reasons = ",".join(map(str, item["reason_codes"])) or "-"
            lines.append(
                f"    {item['date'].isoformat()} {LEVEL_TEXT[item['level']]} 工号 {staff or '-'}"
                f" 原因 {reasons} 整改期限 {item['deadline'].isoformat()}"
                f"{' 已逾期' if item['overdue'] else ''} id {item['id']}"
            )
    return "\n".join(lines) + "\n"
