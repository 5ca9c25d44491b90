"""The month's 好差评 report a district supervisor publishes and works from (rules, 第十四条).

Per window (keyed by hall and window number, so two halls' window 01 never
merge), per hall and per department (the ``staff_dept`` each event carries):

- counts per level and 好评率 = (非常满意 + 满意) / ratings, where *ratings*
  leaves out suspect ratings (listed apart) and ratings overturned on appeal;
- unrated sessions, and ratings bound to no service (``free`` mode, no
  ``session_id``); a window whose ratings are all unbound has no known
  number of unrated services, and says so instead of showing 0;
- ignored presses and noise pulses from the devices' heartbeats;
- every 差评 of the month with its follow-up state, and the 差评 of earlier
  months still open when the month began, with days overdue;
- appeals and their outcomes; events that cannot be dated yet;
- per staff member (第十五条: who is praised, who is repeatedly 差评'd),
  the 差评 by reason code and by matter (第十二条, 共性问题), the district's
  total and 未评率 (unrated services over services);
- events the hall flagged on receipt (chain breaks, conflicts, taken seqs:
  the store's ``flag``) and the devices' ``gap`` events, listed apart and
  kept out of every figure, as suspect ratings are;
- every window with an open 差评, whether or not it had events that month.

Every event is placed by its exact time in China time (:mod:`hall.dating`).
The report is data (JSON-shaped dicts, dates as ISO strings); text and CSV are
renderings of it (:func:`format_report`, :mod:`hall.report_csv`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from hall import columns
from hall.appeals import DECISION_TEXT, Appeal
from hall.contract import Event, parse_time
from hall.dating import CHINA, china_time, china_today, date_events, month_days
from hall.followup import BAD_LEVELS, FollowUp, closed_before, follow_up
from hall.ledger import HallRecords
from hall.levels import GOOD_LEVELS, LEVEL_TEXT, LEVELS
from hall.registry import UNREGISTERED, month_counters
from hall.workdays import WorkCalendar, load_calendar

#: The department of an event that carries none.
NO_DEPT = "未填部门"
STATE_TEXT = {"open": "整改中", "overdue": "已逾期", "fixed": "已整改", "overturned": "申诉撤销",
              "invalid": "查实不属实"}
VERDICT_TEXT = {None: "未查实", "confirmed": "属实", "invalid": "不属实"}
REPLY_TEXT = {"replied": "已答复", "late": "逾期答复", "due": "待答复", "overdue": "答复逾期"}
#: What the report calls each kind of flag (the store's ``flag``/``problem``, interface 7).
FLAG_TEXT = {"hash": "内容与哈希不符", "prev_hash": "链断裂", "duplicate_seq": "序号重复", "seq_taken": "序号已占用",
             "conflict": "同一编号内容不同", "rewritten": "链被改写", "gap": "设备报告缺失"}
#: A 差评 without a reason code is counted under this key.
NO_REASON = "未选原因"
#: A 差评 bound to no matter is counted under this key.
NO_MATTER = "未关联事项"
#: Praised (第十五条): at least this many counted ratings, no 差评, 好评率 at least :data:`PRAISE_RATE`.
PRAISE_MIN_RATINGS = 3
PRAISE_RATE = 0.9
#: Repeatedly 差评'd: at least this many counted 差评 in the month.
REPEATED_BAD = 2
_TIME = "%Y-%m-%d %H:%M"


@dataclasses.dataclass
class Tally:
    """The figures of one window, hall or department."""

    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    suspect: int = 0
    overturned: int = 0
    unrated: int = 0
    #: Counted ratings bound to no service.
    unbound: int = 0
    #: Every rating seen, bound to a service or not (suspect and overturned too).
    seen_bound: int = 0
    seen_unbound: int = 0
    #: Events the hall flagged, out of every figure above.
    flagged: int = 0

    def add_rating(self, level: str, suspect: bool, overturned: bool, bound: bool) -> None:
        """Count one rating where it belongs."""
        if bound:
            self.seen_bound += 1
        else:
            self.seen_unbound += 1
        if overturned:
            self.overturned += 1
        elif suspect:
            self.suspect += 1
        else:
            self.counts[level] += 1
            self.unbound += not bound

    def add(self, other: Tally) -> None:
        """Add ``other``'s figures to these."""
        for level, n in other.counts.items():
            self.counts[level] += n
        for name in ("suspect", "overturned", "unrated", "unbound", "seen_bound", "seen_unbound", "flagged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        """``counts``, ``ratings``, ``good``, ``good_rate`` (None without ratings), ``bad``, ``suspect``,
        ``overturned``, ``unrated`` (None when unknowable: only unbound ratings), ``unbound``,
        ``services`` (rated or not, bound to a service), ``unrated_rate`` (未评率: unrated over
        services; None when unknowable or no service) and ``flagged``."""
        ratings = sum(self.counts.values())
        good = sum(self.counts[level] for level in GOOD_LEVELS)
        unknown = self.seen_unbound and not self.seen_bound and not self.unrated
        services = self.seen_bound + self.unrated
        return {
            "counts": dict(self.counts), "ratings": ratings, "good": good,
            "good_rate": good / ratings if ratings else None,
            "bad": sum(self.counts[level] for level in BAD_LEVELS),
            "suspect": self.suspect, "overturned": self.overturned,
            "unrated": None if unknown else self.unrated, "unbound": self.unbound,
            "services": None if unknown else services,
            "unrated_rate": self.unrated / services if services and not unknown else None,
            "flagged": self.flagged,
        }


@dataclasses.dataclass
class _Window:
    tally: Tally = dataclasses.field(default_factory=Tally)
    devices: set[str] = dataclasses.field(default_factory=set)
    departments: set[str] = dataclasses.field(default_factory=set)
    counters: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass
class _Staff:
    tally: Tally = dataclasses.field(default_factory=Tally)
    departments: set[str] = dataclasses.field(default_factory=set)
    windows: set[str] = dataclasses.field(default_factory=set)


def build_report(events: Sequence[Event], month: str, resolved: Collection[str] = (),
                 today: datetime.date | None = None, *, records: HallRecords | None = None,
                 calendar: WorkCalendar | None = None, hall: str | None = None,
                 flags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report of ``month`` as JSON-shaped data.

    Args:
        events: every stored event, of any month (``clock`` events included).
        month: ``YYYY-MM``, in China time.
        resolved: ids marked rectified through ``HallServer.resolve()``.
        today: the day states are judged on (``as_of``); today in China by default.
        records: the hall's registry, follow-up, appeals, heartbeat log, flags and short numbers.
        calendar: working days; the library with the shipped overlay by default.
        hall: report this hall only.
        flags: event id -> why the hall flagged it, added to ``records.flags``.

    Returns:
        ``month``, ``as_of``, ``time_zone``; ``halls``: each ``{"hall", "name",
        "area_code", "windows", "totals"}``, a window adding ``window_no``,
        ``devices``, ``departments``, ``ignored_presses``, ``noise_pulses`` and
        ``open_bad`` to the figures of :meth:`Tally.as_dict`; ``district``
        (the same figures for every hall reported); ``departments`` (per
        ``department``); ``staff`` (per staff member, with ``praised`` and
        ``repeated_bad``); ``bad_by_reason`` and ``bad_by_matter`` (counted
        差评 of the month, most first); ``bad`` (this month's 差评) and
        ``carried_over`` (earlier ones open when the month began), each with
        the rating's fields, ``reason_codes``, ``state``, ``verdict``,
        ``first_deadline``, ``deadline``, ``official_calendar``,
        ``days_overdue``, ``fixed_on``, ``fix``, ``extensions``,
        ``replies``, ``reply_deadline``, ``reply_state``, ``appeal``;
        ``appeals``; ``suspect``; ``flagged`` (out of every figure);
        ``unbound_windows``; ``undated`` (per device and boot);
        ``unregistered`` (device ids); ``unplaced_devices`` (heartbeats only).

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``.
    """
    first, after = month_days(month)
    as_of = today or china_today()
    records = records or HallRecords()
    resolved = records.resolved | frozenset(resolved)
    calendar = calendar or load_calendar()
    events = list(events)
    dated = date_events(events)
    flags = flags_of(events, {**records.flags, **(flags or {})})
    reasons = reason_codes(e for e in events if str(e.get("id")) not in flags)
    appeals = {rid: known for rid, appeal in records.appeals.items() if (known := appeal.as_of(as_of))}
    overturned = {rid for rid, appeal in appeals.items() if appeal.decision == "overturned"}

    windows: dict[tuple[str, str], _Window] = {}
    departments: dict[str, Tally] = collections.defaultdict(Tally)
    staff: dict[tuple[str, str], _Staff] = {}
    undated: collections.Counter[tuple[str, str]] = collections.Counter()
    placement: dict[str, tuple[datetime.datetime, str, str]] = {}
    ratings: dict[str, Event] = {}
    bad: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []
    suspect: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    unregistered: set[str] = set()
    numbers = records.numbers

    for event in events:
        kind, event_id = event.get("type"), str(event.get("id"))
        flag = flags.get(event_id)
        if kind == "gap":
            flag = flag or "gap"
        elif (kind not in ("rating", "unrated") or (kind == "rating" and event.get("level") not in LEVELS)) \
                and (flag is None or kind not in ("rating", "detail")):
            continue
        device = str(event.get("device_id") or "")
        hall_id = records.registry.hall_of(device)
        if hall is not None and hall_id != hall:
            continue
        when = dated.get(event_id)
        if when is None and kind == "gap":
            when = parse_received(event)
        if when is None:
            undated[(device, str(event.get("boot_id") or ""))] += 1
            continue
        window_no = str(event.get("window_no") or "?")
        if flag is not None:
            if first <= when.date() < after:
                windows.setdefault((hall_id, window_no), _Window()).tally.flagged += 1
                flagged.append(_flagged_line(event, when, hall_id, flag))
            continue
        if when.date() < after and (device not in placement or placement[device][0] < when):
            placement[device] = (when, hall_id, window_no)
        if kind == "rating":
            ratings[event_id] = event
            if event["level"] in BAD_LEVELS and when.date() < first and not closed_before(
                    when.date(), records.actions.get(event_id, ()), appeals.get(event_id), first,
                    event_id in resolved):
                state = _follow(event, when, records, appeals, calendar, as_of, resolved)
                carried.append(_bad_item(event, when, hall_id, state, reasons, appeals, numbers))
        if not first <= when.date() < after:
            continue
        if hall_id == UNREGISTERED:
            unregistered.add(device)
        window = windows.setdefault((hall_id, window_no), _Window())
        window.devices.add(device)
        dept = str(event.get("staff_dept") or NO_DEPT)
        window.departments.add(dept)
        person = staff.setdefault((str(event.get("staff_no") or ""), str(event.get("staff_name") or "")), _Staff())
        person.departments.add(dept)
        person.windows.add(f"{hall_id}/{window_no}")
        if kind == "unrated":
            for tally in (window.tally, departments[dept], person.tally):
                tally.unrated += 1
            continue
        marks = (bool(event.get("suspect")), event_id in overturned, bool(event.get("session_id")))
        for tally in (window.tally, departments[dept], person.tally):
            tally.add_rating(event["level"], *marks)
        if marks[0]:
            suspect.append(_rating_line(event, when, hall_id, numbers))
        if event["level"] in BAD_LEVELS:
            state = _follow(event, when, records, appeals, calendar, as_of, resolved)
            bad.append(_bad_item(event, when, hall_id, state, reasons, appeals, numbers))

    for item in carried:  # every window with an open 差评 appears, events this month or not
        if item["state"] in ("open", "overdue"):
            windows.setdefault((item["hall"], item["window_no"]), _Window()).devices.add(item["device_id"])
    unplaced = _place_counters(records, windows, placement, first, after, hall)
    open_bad = collections.Counter((item["hall"], item["window_no"]) for item in bad + carried
                                   if item["state"] in ("open", "overdue"))
    district = Tally()
    for window in windows.values():
        district.add(window.tally)
    counted_bad = [item for item in bad if not item["suspect"] and item["state"] != "overturned"]
    return {
        "month": month, "as_of": as_of.isoformat(), "time_zone": str(CHINA),
        "halls": _halls(windows, records, open_bad),
        "district": {**district.as_dict(), "open_bad": sum(open_bad.values())},
        "departments": [{"department": name, **tally.as_dict()} for name, tally in sorted(departments.items())],
        "staff": _staff(staff),
        "bad_by_reason": _grouped(counted_bad, lambda item: item["reason_codes"] or [NO_REASON], "code"),
        "bad_by_matter": _grouped(counted_bad, lambda item: [item["matter"]], "matter"),
        "bad": sorted(bad, key=lambda item: (item["time"], item["id"])),
        "carried_over": sorted(carried, key=lambda item: (item["time"], item["id"])),
        "appeals": _appeals(appeals.values(), ratings, dated, records, first, after),
        "suspect": sorted(suspect, key=lambda item: (item["time"], item["id"])),
        "flagged": sorted(flagged, key=lambda item: (item["device_id"], item["seq"], item["time"], item["id"])),
        "unbound_windows": [
            {"hall": hall_id, "window_no": window_no, "unbound": window.tally.unbound,
             "unrated_known": window.tally.as_dict()["unrated"] is not None}
            for (hall_id, window_no), window in sorted(windows.items()) if window.tally.seen_unbound],
        "undated": [{"device_id": device, "boot_id": boot, "events": n}
                    for (device, boot), n in sorted(undated.items())],
        "unregistered": sorted(unregistered),
        "unplaced_devices": unplaced,
    }


def flags_of(events: Iterable[Event], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """Event id -> why the hall flagged it: the store's ``flag`` on the event (interface 7), else ``known``.

    A ``gap`` event is not flagged here: it is a loss the device reports, listed apart as such.
    """
    found = dict(known or {})
    for event in events:
        flag = event.get("flag")
        if isinstance(flag, str) and flag:
            found[str(event.get("id"))] = flag
    return found


def parse_received(event: Event) -> datetime.datetime | None:
    """A ``gap`` event's own time in China time (its boot may never be dated)."""
    when = parse_time(event.get("occurred_at"))
    return china_time(when) if when is not None else None


def _flagged_line(event: Event, when: datetime.datetime, hall_id: str, flag: str) -> dict[str, Any]:
    level = event.get("level")
    kind = str(event.get("type") or "")
    detail = ""
    if kind == "gap":
        detail = (f"{event.get('count', '?')} 条缺失（seq {event.get('from_seq') or '?'}–{event.get('to_seq') or '?'}，"
                  f"{event.get('reason') or '原因未知'}）")
    return {
        "id": str(event.get("id")), "hall": hall_id, "window_no": str(event.get("window_no") or "?"),
        "device_id": str(event.get("device_id") or ""), "seq": event.get("seq") if isinstance(event.get("seq"), int)
        else 0, "time": when.strftime(_TIME), "type": kind,
        "level_text": LEVEL_TEXT.get(str(level), "") if level else "", "flag": flag,
        "flag_text": FLAG_TEXT.get(flag, flag), "detail": detail,
    }


def _staff(staff: Mapping[tuple[str, str], _Staff]) -> list[dict[str, Any]]:
    rows = []
    for (number, name), person in sorted(staff.items()):
        figures = person.tally.as_dict()
        rate = figures["good_rate"]
        rows.append({
            "staff_no": number, "staff_name": name, "departments": sorted(person.departments),
            "windows": sorted(person.windows), **figures,
            "praised": bool(figures["ratings"] >= PRAISE_MIN_RATINGS and not figures["bad"]
                            and rate is not None and rate >= PRAISE_RATE),
            "repeated_bad": figures["bad"] >= REPEATED_BAD,
        })
    return rows


def _grouped(items: Iterable[Mapping[str, Any]], keys: Callable[[Mapping[str, Any]], Iterable[str]],
             name: str) -> list[dict[str, Any]]:
    """Counted 差评 per key, most first: ``{name, "count", "ids", "windows"}``."""
    groups: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for item in items:
        for key in keys(item):
            groups[key].append(item)
    return [{name: key, "count": len(found), "ids": [i["id"] for i in found],
             "windows": sorted({f"{i['hall']}/{i['window_no']}" for i in found})}
            for key, found in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def reason_codes(events: Iterable[Event]) -> dict[str, list[str]]:
    """Rating id -> the reason codes of its ``detail`` events, in order, without repeats."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for event in events:
        if event.get("type") == "detail" and isinstance(event.get("reason_codes"), list):
            codes = found[str(event.get("rating_id"))]
            codes.extend(str(code) for code in event["reason_codes"] if str(code) not in codes)
    return found


def _follow(event: Event, when: datetime.datetime, records: HallRecords, appeals: Mapping[str, Appeal],
            calendar: WorkCalendar, as_of: datetime.date, resolved: Collection[str]) -> FollowUp:
    event_id = str(event["id"])
    return follow_up(when.date(), records.actions.get(event_id, ()), appeals.get(event_id), calendar, as_of,
                     event_id in resolved)


def matter_of(event: Mapping[str, Any]) -> str:
    """The matter (事项) a rating's service was about: its ``task_name``, else ``task_code``, else none."""
    return str(event.get("task_name") or event.get("task_code") or NO_MATTER)


def _rating_line(event: Event, when: datetime.datetime, hall_id: str,
                 numbers: Mapping[str, str] | None = None) -> dict[str, Any]:
    event_id = str(event["id"])
    return {
        "id": event_id, "no": (numbers or {}).get(event_id, ""), "hall": hall_id,
        "window_no": str(event.get("window_no") or "?"),
        "device_id": str(event.get("device_id") or ""), "time": when.strftime(_TIME),
        "level": event["level"], "level_text": LEVEL_TEXT[event["level"]],
        "staff_no": str(event.get("staff_no") or ""), "staff_name": str(event.get("staff_name") or ""),
        "staff_dept": str(event.get("staff_dept") or NO_DEPT), "suspect": bool(event.get("suspect")),
        "bound": bool(event.get("session_id")), "project_no": event.get("project_no"),
        "matter": matter_of(event),
    }


def _bad_item(event: Event, when: datetime.datetime, hall_id: str, state: FollowUp,
              reasons: Mapping[str, list[str]], appeals: Mapping[str, Appeal],
              numbers: Mapping[str, str] | None = None) -> dict[str, Any]:
    appeal = appeals.get(str(event["id"]))
    verified = state.verified
    reply = state.reply_state
    return {
        **_rating_line(event, when, hall_id, numbers),
        "reason_codes": list(reasons.get(str(event["id"]), [])),
        "state": state.state, "state_text": STATE_TEXT[state.state],
        "verdict": verified.verdict if verified else None,
        "verdict_text": VERDICT_TEXT[verified.verdict if verified else None],
        "verified_on": verified.on.isoformat() if verified else None,
        "verify_note": verified.text if verified else None,
        "first_deadline": state.first_deadline.isoformat(), "deadline": state.deadline.isoformat(),
        "official_calendar": state.official, "days_overdue": state.days_overdue,
        "fixed_on": state.fixed.on.isoformat() if state.fixed else None,
        "fix": state.fixed.text if state.fixed else None,
        "extensions": [{"on": a.on.isoformat(), "until": a.new_deadline.isoformat() if a.new_deadline else None,
                        "reason": a.text, "by": a.by} for a in state.extensions],
        "replies": [{"on": a.on.isoformat(), "text": a.text, "by": a.by} for a in state.replies],
        "reply_deadline": state.reply_deadline.isoformat() if state.reply_deadline else None,
        "reply_state": reply, "reply_text": REPLY_TEXT[reply],
        "appeal": appeal.n if appeal else None,
        "appeal_state": DECISION_TEXT[appeal.decision] if appeal else None,
    }


def _place_counters(records: HallRecords, windows: dict[tuple[str, str], _Window],
                    placement: Mapping[str, tuple[datetime.datetime, str, str]], first: datetime.date,
                    after: datetime.date, hall: str | None) -> list[dict[str, Any]]:
    """Add each device's heartbeat counters of the month to the window it last served."""
    unplaced = []
    for device, counters in sorted(month_counters(records.beats, first, after).items()):
        if device in placement:
            _, hall_id, window_no = placement[device]
            windows.setdefault((hall_id, window_no), _Window()).counters.update(counters)
        elif hall is None or records.registry.hall_of(device) == hall:
            unplaced.append({"device_id": device, "hall": records.registry.hall_of(device), **counters})
    return unplaced


def _halls(windows: Mapping[tuple[str, str], _Window], records: HallRecords,
           open_bad: Mapping[tuple[str, str], int]) -> list[dict[str, Any]]:
    halls: dict[str, dict[str, Any]] = {}
    totals: dict[str, Tally] = collections.defaultdict(Tally)
    for (hall_id, window_no), window in sorted(windows.items()):
        info = records.registry.hall(hall_id)
        entry = halls.setdefault(hall_id, {"hall": hall_id, "name": info.name, "area_code": info.area_code,
                                           "windows": []})
        entry["windows"].append({
            "window_no": window_no, "devices": sorted(window.devices), "departments": sorted(window.departments),
            **window.tally.as_dict(),
            "ignored_presses": window.counters["ignored_presses"], "noise_pulses": window.counters["noise_pulses"],
            "open_bad": open_bad.get((hall_id, window_no), 0),
        })
        totals[hall_id].add(window.tally)
    for hall_id, entry in halls.items():
        entry["totals"] = totals[hall_id].as_dict()
    return list(halls.values())


def _appeals(appeals: Collection[Appeal], ratings: Mapping[str, Event],
             dated: Mapping[str, datetime.datetime | None], records: HallRecords,
             first: datetime.date, after: datetime.date) -> list[dict[str, Any]]:
    """Appeals on a rating of the month, or filed or decided in the month."""
    listed = []
    for appeal in sorted(appeals, key=lambda a: a.n):
        rating = ratings.get(appeal.rating_id)
        when = dated.get(appeal.rating_id)
        if rating is None or when is None:
            continue
        days = [when.date(), appeal.filed_on, *([appeal.decided_on] if appeal.decided_on else [])]
        if not any(first <= day < after for day in days):
            continue
        listed.append({
            "n": appeal.n, **_rating_line(rating, when, records.registry.hall_of(str(rating.get("device_id")))),
            "filed_on": appeal.filed_on.isoformat(), "filed_by": appeal.filed_by, "grounds": appeal.grounds,
            "decision": appeal.decision, "decision_text": DECISION_TEXT[appeal.decision],
            "decided_on": appeal.decided_on.isoformat() if appeal.decided_on else None,
            "reviewer": appeal.reviewer, "note": appeal.note,
        })
    return listed


def _rate(tally: Mapping[str, Any]) -> str:
    if tally["good_rate"] is None:
        return "— (0 评价)"
    return f"{tally['good_rate'] * 100:.1f}% ({tally['good']}/{tally['ratings']})"


def _figures(tally: Mapping[str, Any], indent: str) -> list[str]:
    # The level columns of the CSV and the 通报, read the same way.
    counts = "  ".join(f"{column.title} {column.cell(tally)}" for column in columns.FIGURES[:len(LEVELS)])
    unrated = "不可知（评价未绑定办件）" if tally["unrated"] is None else str(tally["unrated"])
    rate = "" if tally["unrated_rate"] is None else f"  未评率 {tally['unrated_rate'] * 100:.1f}%"
    lines = [f"{indent}{counts}  合计 {tally['ratings']}", f"{indent}好评率 {_rate(tally)}",
             f"{indent}未评价 {unrated}{rate}"]
    extra = [(name, tally[key]) for name, key in (("未绑定办件", "unbound"), ("可疑(不计入)", "suspect"),
                                                   ("申诉撤销(不计入)", "overturned"),
                                                   ("标记事件(不计入)", "flagged")) if tally[key]]
    if extra:
        lines.append(indent + "  ".join(f"{name} {n}" for name, n in extra))
    return lines


def _bad_line(item: Mapping[str, Any]) -> list[str]:
    staff = " ".join(x for x in (item["staff_no"], item["staff_name"]) if x) or "-"
    reasons = ",".join(item["reason_codes"]) or "-"
    head = (f"  {item['time']} {item['hall']}/{item['window_no']} {item['level_text']} 工号 {staff}"
            f" {item['staff_dept']} 原因 {reasons}{' 可疑' if item['suspect'] else ''}")
    deadline = f"整改期限 {item['deadline']}"
    if item["deadline"] != item["first_deadline"]:
        deadline += f"（原 {item['first_deadline']}）"
    if not item["official_calendar"]:
        deadline += "（暂按周一至周五推算）"
    state = item["state_text"]
    if item["state"] == "fixed":
        state += f" {item['fixed_on'] or ''}".rstrip()
        if item["days_overdue"]:
            state += f" 逾期 {item['days_overdue']} 天"
    elif item["state"] == "overdue":
        state += f" {item['days_overdue']} 天"
    verdict = f"查实 {item['verdict_text']}"
    if item["verify_note"]:
        verdict += f"：{item['verify_note']}"
    number = f"编号 {item['no']} " if item["no"] else ""
    lines = [head, f"    {deadline} 状态 {state} {number}id {item['id']}", f"    {verdict}"]
    if item["fix"]:
        lines.append(f"    整改：{item['fix']}")
    lines += [f"    延期 {e['on']} 至 {e['until']}：{e['reason']}" for e in item["extensions"]]
    lines += [f"    答复 {r['on']}：{r['text']}" for r in item["replies"]]
    if not item["replies"] and item["bound"] and item["state"] != "overturned":
        late = "，已逾期" if item["reply_state"] == "overdue" else ""
        lines.append(f"    未答复群众（答复期限 {item['reply_deadline']}{late}）")
    if item["appeal"] is not None:
        lines.append(f"    申诉 #{item['appeal']} {item['appeal_state']}")
    return lines


#: The staff table of the text report: who, and the figures a supervisor reads first.
STAFF_TEXT = tuple(c for c in columns.STAFF
                   if c.key in ("staff_no", "staff_name", "windows", "ratings", "good_rate", "bad", "unrated",
                                "unrated_rate", "suspect"))


def _person(row: Mapping[str, Any]) -> str:
    return " ".join(x for x in (row["staff_no"], row["staff_name"]) if x) or "-"


def format_report(data: Mapping[str, Any]) -> str:
    """Render :func:`build_report` output as the text a supervisor reads."""
    lines = [f"好差评月报 {data['month']}（中国时间，截至 {data['as_of']}）"]
    if not data["halls"]:
        lines.append("(本月无评价)")
    for hall in data["halls"]:
        name = f" {hall['name']}" if hall["name"] else ""
        lines.append(f"大厅 {hall['hall']}{name}")
        for window in hall["windows"]:
            lines.append(f"窗口 {window['window_no']}  设备 {','.join(window['devices']) or '-'}"
                         f"  部门 {','.join(window['departments']) or '-'}")
            lines += _figures(window, "  ")
            lines.append(f"  忽略按键 {window['ignored_presses']}  噪声脉冲 {window['noise_pulses']}")
            lines.append(f"  未整改差评 {window['open_bad']}")
        lines.append(f"大厅合计 {hall['hall']}")
        lines += _figures(hall["totals"], "  ")
    if data["halls"]:
        lines.append("区县合计")
        lines += _figures(data["district"], "  ")
        lines.append(f"  未整改差评 {data['district']['open_bad']}")
    if data["departments"]:
        lines.append("部门汇总")
        for dept in data["departments"]:
            lines.append(f"部门 {dept['department']}")
            lines += _figures(dept, "  ")
    if data["staff"]:
        lines.append("工作人员")
        lines += columns.text_table(STAFF_TEXT, data["staff"])
        praised = [_person(p) for p in data["staff"] if p["praised"]]
        repeated = [f"{_person(p)}（差评 {p['bad']}）" for p in data["staff"] if p["repeated_bad"]]
        lines.append(f"  表扬：{'、'.join(praised) or '无'}")
        lines.append(f"  反复被差评：{'、'.join(repeated) or '无'}")
    for title, key, table in (("差评原因（共性问题）", "bad_by_reason", columns.REASONS[:3]),
                              ("差评事项（共性问题）", "bad_by_matter", columns.MATTERS[:3])):
        if data[key]:
            lines.append(title)
            lines += columns.text_table(table, data[key])
    for title, key in (("本月差评及整改", "bad"), ("以前月份未整改差评", "carried_over")):
        lines.append(f"{title} {len(data[key])}")
        for item in data[key]:
            lines += _bad_line(item)
    lines.append(f"申诉复核 {len(data['appeals'])}")
    for appeal in data["appeals"]:
        lines.append(f"  #{appeal['n']} {appeal['time']} {appeal['hall']}/{appeal['window_no']} {appeal['level_text']}"
                     f" 申诉人 {appeal['filed_by']} {appeal['filed_on']}：{appeal['grounds']}")
        outcome = appeal["decision_text"]
        if appeal["decision"]:
            outcome += f" {appeal['decided_on']} 复核人 {appeal['reviewer']}：{appeal['note']}"
        lines.append(f"    {outcome} id {appeal['id']}")
    lines.append(f"可疑评价（不计入好评率）{len(data['suspect'])}")
    lines += [f"  {s['time']} {s['hall']}/{s['window_no']} {s['level_text']} 工号 {s['staff_no'] or '-'}"
              f"{' 编号 ' + s['no'] if s['no'] else ''} id {s['id']}" for s in data["suspect"]]
    lines.append(f"标记事件（链断裂、冲突、缺失等，不计入任何数字）{len(data['flagged'])}")
    if data["flagged"]:
        lines += columns.text_table(columns.FLAGGED[:-1], data["flagged"])
    for window in data["unbound_windows"]:
        note = "" if window["unrated_known"] else "，未评价数不可知"
        lines.append(f"未绑定办件的评价：{window['hall']}/{window['window_no']} {window['unbound']} 条"
                     f"（free 模式{note}）")
    for item in data["undated"]:
        lines.append(f"时间待定（设备尚未对时）：设备 {item['device_id']} 启动 {item['boot_id']} {item['events']} 条")
    if data["unregistered"]:
        lines.append(f"未登记大厅的设备：{', '.join(data['unregistered'])}")
    for device in data["unplaced_devices"]:
        lines.append(f"无评价记录的设备 {device['device_id']}：忽略按键 {device.get('ignored_presses', 0)}"
                     f"  噪声脉冲 {device.get('noise_pulses', 0)}")
    return "\n".join(lines) + "\n"


def pending_bad(data: Mapping[str, Any], as_of: datetime.date) -> list[dict[str, Any]]:
    """The 差评 still to rectify on ``as_of``, of every month, from the report of ``as_of``'s month.

    Only 差评 rated on or before ``as_of`` (a report judged mid-month still holds the whole month's
    events), each in its state on ``as_of``.
    """
    day = as_of.isoformat()
    return sorted((item for item in [*data["carried_over"], *data["bad"]]
                   if item["state"] in ("open", "overdue") and item["time"][:10] <= day),
                  key=lambda item: (item["time"], item["id"]))
