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
- appeals and their outcomes; events that cannot be dated yet.

Every event is placed by its exact time in China time (:mod:`sim.hall.dating`).
The report is data (JSON-shaped dicts, dates as ISO strings); text and CSV are
renderings of it (:func:`format_report`, :mod:`sim.hall.report_csv`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sim.hall.appeals import DECISION_TEXT, Appeal
from sim.hall.contract import Event
from sim.hall.dating import CHINA, china_today, date_events, month_days
from sim.hall.followup import BAD_LEVELS, FollowUp, closed_before, follow_up
from sim.hall.ledger import HallRecords
from sim.hall.registry import UNREGISTERED, month_counters
from sim.hall.workdays import WorkCalendar, load_calendar

LEVELS = ("very_satisfied", "satisfied", "basically_satisfied", "dissatisfied", "very_dissatisfied")
LEVEL_TEXT = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "dissatisfied": "不满意",
    "very_dissatisfied": "非常不满意",
}
GOOD_LEVELS = ("very_satisfied", "satisfied")
#: The department of an event that carries none.
NO_DEPT = "未填部门"
STATE_TEXT = {"open": "整改中", "overdue": "已逾期", "fixed": "已整改", "overturned": "申诉撤销"}
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

    def as_dict(self) -> dict[str, Any]:
        """``counts``, ``ratings``, ``good``, ``good_rate`` (None without ratings), ``suspect``,
        ``overturned``, ``unrated`` (None when unknowable: only unbound ratings), ``unbound``."""
        ratings = sum(self.counts.values())
        good = sum(self.counts[level] for level in GOOD_LEVELS)
        unknown = self.seen_unbound and not self.seen_bound and not self.unrated
        return {
            "counts": dict(self.counts), "ratings": ratings, "good": good,
            "good_rate": good / ratings if ratings else None,
            "suspect": self.suspect, "overturned": self.overturned,
            "unrated": None if unknown else self.unrated, "unbound": self.unbound,
        }


@dataclasses.dataclass
class _Window:
    tally: Tally = dataclasses.field(default_factory=Tally)
    devices: set[str] = dataclasses.field(default_factory=set)
    departments: set[str] = dataclasses.field(default_factory=set)
    counters: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def build_report(events: Sequence[Event], month: str, resolved: Collection[str] = (),
                 today: datetime.date | None = None, *, records: HallRecords | None = None,
                 calendar: WorkCalendar | None = None, hall: str | None = None) -> dict[str, Any]:
    """The report of ``month`` as JSON-shaped data.

    Args:
        events: every stored event, of any month (``clock`` events included).
        month: ``YYYY-MM``, in China time.
        resolved: ids marked rectified through ``HallServer.resolve()``.
        today: the day states are judged on (``as_of``); today in China by default.
        records: the hall's registry, follow-up, appeals and heartbeat log.
        calendar: working days; the library with the shipped overlay by default.
        hall: report this hall only.

    Returns:
        ``month``, ``as_of``, ``time_zone``; ``halls``: each ``{"hall", "name",
        "area_code", "windows", "totals"}``, a window adding ``window_no``,
        ``devices``, ``departments``, ``ignored_presses``, ``noise_pulses`` and
        ``open_bad`` to the figures of :meth:`Tally.as_dict`; ``departments``
        (the same figures per ``department``); ``bad`` (this month's 差评) and
        ``carried_over`` (earlier ones open when the month began), each with
        the rating's fields, ``reason_codes``, ``state``, ``first_deadline``,
        ``deadline``, ``official_calendar``, ``days_overdue``, ``fixed_on``,
        ``fix``, ``extensions``, ``replies``, ``appeal``; ``appeals``;
        ``suspect``; ``unbound_windows``; ``undated`` (per device and boot);
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
    reasons = reason_codes(events)
    appeals = {rid: known for rid, appeal in records.appeals.items() if (known := appeal.as_of(as_of))}
    overturned = {rid for rid, appeal in appeals.items() if appeal.decision == "overturned"}

    windows: dict[tuple[str, str], _Window] = {}
    departments: dict[str, Tally] = collections.defaultdict(Tally)
    undated: collections.Counter[tuple[str, str]] = collections.Counter()
    placement: dict[str, tuple[datetime.datetime, str, str]] = {}
    ratings: dict[str, Event] = {}
    bad: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []
    suspect: list[dict[str, Any]] = []
    unregistered: set[str] = set()

    for event in events:
        kind, event_id = event.get("type"), str(event.get("id"))
        if kind not in ("rating", "unrated") or (kind == "rating" and event.get("level") not in LEVELS):
            continue
        device = str(event.get("device_id") or "")
        hall_id = records.registry.hall_of(device)
        if hall is not None and hall_id != hall:
            continue
        when = dated.get(event_id)
        if when is None:
            undated[(device, str(event.get("boot_id") or ""))] += 1
            continue
        window_no = str(event.get("window_no") or "?")
        if when.date() < after and (device not in placement or placement[device][0] < when):
            placement[device] = (when, hall_id, window_no)
        if kind == "rating":
            ratings[event_id] = event
            if event["level"] in BAD_LEVELS and when.date() < first and not closed_before(
                    when.date(), records.actions.get(event_id, ()), appeals.get(event_id), first,
                    event_id in resolved):
                state = _follow(event, when, records, appeals, calendar, as_of, resolved)
                carried.append(_bad_item(event, when, hall_id, state, reasons, appeals))
        if not first <= when.date() < after:
            continue
        if hall_id == UNREGISTERED:
            unregistered.add(device)
        window = windows.setdefault((hall_id, window_no), _Window())
        window.devices.add(device)
        dept = str(event.get("staff_dept") or NO_DEPT)
        window.departments.add(dept)
        if kind == "unrated":
            window.tally.unrated += 1
            departments[dept].unrated += 1
            continue
        flags = (bool(event.get("suspect")), event_id in overturned, bool(event.get("session_id")))
        window.tally.add_rating(event["level"], *flags)
        departments[dept].add_rating(event["level"], *flags)
        if flags[0]:
            suspect.append(_rating_line(event, when, hall_id))
        if event["level"] in BAD_LEVELS:
            state = _follow(event, when, records, appeals, calendar, as_of, resolved)
            bad.append(_bad_item(event, when, hall_id, state, reasons, appeals))

    unplaced = _place_counters(records, windows, placement, first, after, hall)
    open_bad = collections.Counter((item["hall"], item["window_no"]) for item in bad + carried
                                   if item["state"] in ("open", "overdue"))
    return {
        "month": month, "as_of": as_of.isoformat(), "time_zone": str(CHINA),
        "halls": _halls(windows, records, open_bad),
        "departments": [{"department": name, **tally.as_dict()} for name, tally in sorted(departments.items())],
        "bad": sorted(bad, key=lambda item: (item["time"], item["id"])),
        "carried_over": sorted(carried, key=lambda item: (item["time"], item["id"])),
        "appeals": _appeals(appeals.values(), ratings, dated, records, first, after),
        "suspect": sorted(suspect, key=lambda item: (item["time"], item["id"])),
        "unbound_windows": [
            {"hall": hall_id, "window_no": window_no, "unbound": window.tally.unbound,
             "unrated_known": window.tally.as_dict()["unrated"] is not None}
            for (hall_id, window_no), window in sorted(windows.items()) if window.tally.seen_unbound],
        "undated": [{"device_id": device, "boot_id": boot, "events": n}
                    for (device, boot), n in sorted(undated.items())],
        "unregistered": sorted(unregistered),
        "unplaced_devices": unplaced,
    }


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


def _rating_line(event: Event, when: datetime.datetime, hall_id: str) -> dict[str, Any]:
    return {
        "id": str(event["id"]), "hall": hall_id, "window_no": str(event.get("window_no") or "?"),
        "device_id": str(event.get("device_id") or ""), "time": when.strftime(_TIME),
        "level": event["level"], "level_text": LEVEL_TEXT[event["level"]],
        "staff_no": str(event.get("staff_no") or ""), "staff_name": str(event.get("staff_name") or ""),
        "staff_dept": str(event.get("staff_dept") or NO_DEPT), "suspect": bool(event.get("suspect")),
        "bound": bool(event.get("session_id")), "project_no": event.get("project_no"),
    }


def _bad_item(event: Event, when: datetime.datetime, hall_id: str, state: FollowUp,
              reasons: Mapping[str, list[str]], appeals: Mapping[str, Appeal]) -> dict[str, Any]:
    appeal = appeals.get(str(event["id"]))
    return {
        **_rating_line(event, when, hall_id),
        "reason_codes": list(reasons.get(str(event["id"]), [])),
        "state": state.state, "state_text": STATE_TEXT[state.state],
        "first_deadline": state.first_deadline.isoformat(), "deadline": state.deadline.isoformat(),
        "official_calendar": state.official, "days_overdue": state.days_overdue,
        "fixed_on": state.fixed.on.isoformat() if state.fixed else None,
        "fix": state.fixed.text if state.fixed else None,
        "extensions": [{"on": a.on.isoformat(), "until": a.new_deadline.isoformat() if a.new_deadline else None,
                        "reason": a.text, "by": a.by} for a in state.extensions],
        "replies": [{"on": a.on.isoformat(), "text": a.text, "by": a.by} for a in state.replies],
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
        total = totals[hall_id]
        for level, n in window.tally.counts.items():
            total.counts[level] += n
        for name in ("suspect", "overturned", "unrated", "unbound", "seen_bound", "seen_unbound"):
            setattr(total, name, getattr(total, name) + getattr(window.tally, name))
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
    counts = "  ".join(f"{LEVEL_TEXT[level]} {n}" for level, n in tally["counts"].items())
    unrated = "不可知（评价未绑定办件）" if tally["unrated"] is None else str(tally["unrated"])
    lines = [f"{indent}{counts}  合计 {tally['ratings']}", f"{indent}好评率 {_rate(tally)}",
             f"{indent}未评价 {unrated}"]
    extra = [(name, tally[key]) for name, key in (("未绑定办件", "unbound"), ("可疑(不计入)", "suspect"),
                                                   ("申诉撤销(不计入)", "overturned")) if tally[key]]
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
    lines = [head, f"    {deadline} 状态 {state} id {item['id']}"]
    if item["fix"]:
        lines.append(f"    整改：{item['fix']}")
    lines += [f"    延期 {e['on']} 至 {e['until']}：{e['reason']}" for e in item["extensions"]]
    lines += [f"    答复 {r['on']}：{r['text']}" for r in item["replies"]]
    if not item["replies"] and item["bound"] and item["state"] != "overturned":
        lines.append("    未答复群众")
    if item["appeal"] is not None:
        lines.append(f"    申诉 #{item['appeal']} {item['appeal_state']}")
    return lines


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
    if data["departments"]:
        lines.append("部门汇总")
        for dept in data["departments"]:
            lines.append(f"部门 {dept['department']}")
            lines += _figures(dept, "  ")
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
    lines += [f"  {s['time']} {s['hall']}/{s['window_no']} {s['level_text']} 工号 {s['staff_no'] or '-'} id {s['id']}"
              for s in data["suspect"]]
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
