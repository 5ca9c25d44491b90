"""The month's ratings for the provincial 好差评 platform (rules, 第六条).

Two formats, with numeric codes that run in **opposite directions**, so the
device keeps level names and the codes are made here, at the edge:

- ``province``: the unified exchange interface's field names (``projectNo``,
  ``taskCode``, ``taskName``, ``pf``, ``satisfaction`` with 5 = 非常满意,
  ``evalDetail`` with the reason codes, ``assessTime`` as
  ``yyyy-MM-dd HH:mm:ss`` China time, ``assessNumber``, ``areaCode``).
- ``gbt``: GB/T 39046-2020's base data items for ratings (办件编号, 评价渠道,
  评价人, 评价时间 ``YYYYMMDDThhmmss``, 评价次数, 满意度, 满意度代码 with
  1 = 非常满意, 文字评价, 行政区划).

Only what a citizen gave is exported as a rating. Unrated sessions go in
their own list ``unrated``, never as a rating (default ratings are the
platform's to make). Suspect ratings, ratings the hall flagged on receipt and
ratings overturned on appeal go in ``withheld`` with the reason, in the same
fields, for the hall to decide on;
events that cannot be dated yet are counted in ``undated``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from hall.contract import Event
from hall.dating import CHINA, china_today, date_events, month_days
from hall.ledger import HallRecords
from hall.report import LEVEL_TEXT, flags_of, reason_codes

FORMATS = ("province", "gbt")
#: The channel of a window whose device sent no rating (政务大厅其他终端), as in hall/push.py.
DEFAULT_CHANNEL = "5"
#: Level -> the exchange interface's ``satisfaction`` (5 = 非常满意).
PROVINCE_SATISFACTION = {
    "very_satisfied": 5,
    "satisfied": 4,
    "basically_satisfied": 3,
    "dissatisfied": 2,
    "very_dissatisfied": 1,
}
#: Level -> GB/T 39046-2020 table A.8 满意度代码 (1 = 非常满意): the reverse.
GBT_SATISFACTION_CODE = {
    "very_satisfied": "1",
    "satisfied": "2",
    "basically_satisfied": "3",
    "dissatisfied": "4",
    "very_dissatisfied": "5",
}



def province_satisfaction(level: str) -> int:
    """The exchange interface's ``satisfaction`` for ``level``.

    Raises:
        KeyError: not a level name.
    """
    return PROVINCE_SATISFACTION[level]


def level_from_province(code: int | str) -> str:
    """The level of an exchange-interface ``satisfaction`` (``5`` or ``"5"`` = very_satisfied).

    Raises:
        ValueError: not a code 1 to 5.
    """
    for level, value in PROVINCE_SATISFACTION.items():
        if str(value) == str(code).strip():
            return level
    raise ValueError(f"satisfaction must be 1 to 5, not {code!r}")


def gbt_code(level: str) -> str:
    """GB/T 39046's 满意度代码 for ``level``.

    Raises:
        KeyError: not a level name.
    """
    return GBT_SATISFACTION_CODE[level]


def level_from_gbt(code: int | str) -> str:
    """The level of a GB/T 39046 满意度代码 (``"1"`` = very_satisfied).

    Raises:
        ValueError: not a code 1 to 5.
    """
    for level, value in GBT_SATISFACTION_CODE.items():
        if value == str(code).strip():
            return level
    raise ValueError(f"满意度代码 must be 1 to 5, not {code!r}")


def _province_rating(event: Event, when: datetime.datetime, reasons: Sequence[str], area: str) -> dict[str, Any]:
    # The same fields and types as the real-time push (hall/push.py): strings, assessNumber an integer.
    return {
        "projectNo": event.get("project_no"), "taskCode": event.get("task_code"),
        "taskName": event.get("task_name"), "pf": event.get("channel"),
        "satisfaction": str(province_satisfaction(event["level"])), "evalDetail": ",".join(reasons),
        "assessTime": when.strftime("%Y-%m-%d %H:%M:%S"), "assessNumber": event.get("assess_number", 1),
        "areaCode": area, "proManager": str(event.get("staff_name") or ""),
        "writingEvaluation": str(event.get("comment") or ""),
        "isPublic": "0" if event.get("public") is False else "1", "isDefault": "0",
    }


def _gbt_rating(event: Event, when: datetime.datetime, reasons: Sequence[str], area: str) -> dict[str, Any]:
    # GB/T table 9 has no reason item: the codes are in the province format only.
    return {
        "办件编号": event.get("project_no"), "评价渠道": event.get("channel"),
        "评价人": None,  # no citizen data is collected
        "评价时间": when.strftime("%Y%m%dT%H%M%S"), "评价次数": event.get("assess_number", 1),
        "满意度": LEVEL_TEXT[event["level"]], "满意度代码": gbt_code(event["level"]),
        "文字评价": "", "行政区划": area,
    }


def _unrated(event: Event, when: datetime.datetime, area: str, fmt: str, channel: str) -> dict[str, Any]:
    if fmt == "province":
        # An unrated service: never a rating (satisfaction empty, assessNumber 0); the default marker is
        # the push's, once the 5 working days have passed (hall/push.py).
        return {"projectNo": event.get("project_no"), "taskCode": event.get("task_code"),
                "taskName": event.get("task_name"), "pf": channel, "satisfaction": "", "evalDetail": "",
                "assessTime": when.strftime("%Y-%m-%d %H:%M:%S"), "assessNumber": 0, "areaCode": area,
                "proManager": str(event.get("staff_name") or ""), "writingEvaluation": "", "isPublic": "1",
                "isDefault": "0"}
    return {"办件编号": event.get("project_no"), "评价渠道": event.get("channel"),
            "服务时间": when.strftime("%Y%m%dT%H%M%S"), "行政区划": area, "状态": "未评价"}


def export_month(events: Sequence[Event], month: str, fmt: str, *, records: HallRecords | None = None,
                 hall: str | None = None, today: datetime.date | None = None) -> dict[str, Any]:
    """The month's events in format ``fmt``.

    Args:
        events: every stored event (``clock`` and ``detail`` events included).
        month: ``YYYY-MM`` in China time.
        fmt: ``province`` or ``gbt``.
        records: the hall's registry (area codes, halls) and appeals.
        hall: export this hall's devices only.
        today: appeals decided after this day are not yet known.

    Returns:
        ``{"format", "month", "time_zone", "ratings", "unrated", "withheld", "undated"}``;
        each ``withheld`` entry is a rating's fields plus ``id`` and ``reason``
        (``flagged`` with the store's ``flag``, ``overturned`` with ``appeal``, or ``suspect``).

    Raises:
        ValueError: an unknown format or a month not ``YYYY-MM``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    first, after = month_days(month)
    records = records or HallRecords()
    as_of = today or china_today()
    dated = date_events(events)
    flags = flags_of(events, records.flags)
    reasons = reason_codes(e for e in events if str(e.get("id")) not in flags)
    rating_fields = _province_rating if fmt == "province" else _gbt_rating
    ratings: list[tuple[datetime.datetime, str, dict[str, Any]]] = []
    unrated: list[tuple[datetime.datetime, str, dict[str, Any]]] = []
    withheld: list[tuple[datetime.datetime, str, dict[str, Any]]] = []
    undated = 0
    # An unrated event carries no channel: the window's is its device's (as the push does it).
    channels = {str(e.get("device_id")): str(e["channel"]) for e in events
                if e.get("type") == "rating" and e.get("channel")}
    for event in events:
        if event.get("type") not in ("rating", "unrated"):
            continue
        device = str(event.get("device_id") or "")
        hall_id = records.registry.hall_of(device)
        if hall is not None and hall_id != hall:
            continue
        event_id = str(event.get("id"))
        when = dated.get(event_id)
        if when is None:
            undated += 1
            continue
        if not first <= when.date() < after:
            continue
        area = records.registry.hall(hall_id).area_code
        if event["type"] == "unrated":
            if event_id in flags:  # a flagged record of a service: not a service the platform should count
                continue
            unrated.append((when, event_id, _unrated(event, when, area, fmt, channels.get(device, DEFAULT_CHANNEL))))
            continue
        if event.get("level") not in LEVEL_TEXT:
            continue
        fields = rating_fields(event, when, reasons.get(event_id, []), area)
        appeal = records.appeals.get(event_id)
        known = appeal.as_of(as_of) if appeal else None
        if event_id in flags:
            withheld.append((when, event_id, {"id": event_id, "reason": "flagged", "flag": flags[event_id], **fields}))
        elif known is not None and known.decision == "overturned":
            withheld.append((when, event_id, {"id": event_id, "reason": "overturned", "appeal": known.n, **fields}))
        elif event.get("suspect"):
            withheld.append((when, event_id, {"id": event_id, "reason": "suspect", **fields}))
        else:
            ratings.append((when, event_id, fields))
    return {
        "format": fmt, "month": month, "time_zone": str(CHINA),
        "ratings": _ordered(ratings), "unrated": _ordered(unrated), "withheld": _ordered(withheld),
        "undated": undated,
    }


def _ordered(rows: list[tuple[datetime.datetime, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [fields for _, _, fields in sorted(rows, key=lambda row: (row[0], row[1]))]


def describe(export: Mapping[str, Any]) -> str:
    """One line for the terminal: how many of each were exported."""
    return (f"{export['month']} {export['format']}：评价 {len(export['ratings'])} 条，"
            f"未评价 {len(export['unrated'])} 条，另列 {len(export['withheld'])} 条，时间待定 {export['undated']} 条")
