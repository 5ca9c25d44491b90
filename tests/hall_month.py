"""A fixed month of a district's events, for the hall-side tests (report, follow-up, appeals, export).

Two halls, three windows, two departments, November 2026 in China time:

HQ 偃师区政务服务中心 (area 410307)
  WE-0001 window 01, 1001 张三, 市场监管局, staff_button sessions
    hq01-0930   2026-09-30 10:00  不满意      -> deadline across National Day: 2026-10-20, never fixed
    hq01-1009   2026-10-09 15:00  非常不满意  -> deadline across the make-up Saturday 10-10: 2026-10-22,
                                                 confirmed (查实) 10-12, fixed late on 2026-11-03
    hq01-1101   2026-10-31 16:10 UTC = 11-01 00:10 China: 满意, a November rating
    hq01-1105   2026-11-05 10:00  不满意, reasons 201,203 -> deadline across a weekend: 2026-11-19,
                                                 confirmed 11-06, extended on 11-18 to 12-04, replied 11-20
    hq01-1110a  2026-11-10 09:00  非常满意
    hq01-1110b  2026-11-10 09:20  满意
    hq01-1111u  2026-11-11 14:00  unrated
    boot b2, clock not synced (stamped 1970), clock event: mono 150000 = 2026-11-12 10:02:30
    hq01-b2-1   mono 30000 -> 2026-11-12 10:00:30  基本满意
    hq01-b2-2   mono 90000 -> 2026-11-12 10:01:30  不满意 -> appeal #2 overturned on 11-20
    hq01-1201   2026-11-30 23:30 UTC = 12-01 07:30 China: 非常满意, a December rating
  WE-0002 window 02, 1002 李四, 税务局, staff_button sessions
    hq02-1116   2026-11-16 11:00  非常不满意 -> deadline 2026-11-30, appeal #1 upheld on 11-19
    hq02-s1     2026-11-16 11:00:05  满意, suspect
    hq02-s2     2026-11-16 11:00:07  非常满意, suspect
    hq02-1120   2026-11-20 10:00  满意
    hq02-1120u  2026-11-20 15:00  unrated
    hq02-1123u  2026-11-23 09:00  unrated
    hq02-b9     boot b9, not synced, no clock event: undated
TOWN 城关镇便民服务中心 (area 410307001)
  WE-0003 window 01, 2001 王五, 市场监管局, free mode (no sessions)
    town-1028   2026-10-28 10:00  满意 (October)
    town-1103a  2026-11-03 09:00  非常满意
    town-1103b  2026-11-03 10:00  满意
    town-1104   2026-11-04 10:00  基本满意
    town-1125   2026-11-25 16:00  不满意 -> deadline 2026-12-09, confirmed 11-26, fixed 11-27
  WE-0009 (TOWN): heartbeats only
"""

from __future__ import annotations

import datetime
from typing import Any

from hall.contract import event_hash
from hall.desk import HallDesk
from hall.store import Storage

AS_OF = datetime.date(2026, 12, 1)
SATISFACTION = {"very_satisfied": 5, "satisfied": 4, "basically_satisfied": 3,
                "dissatisfied": 2, "very_dissatisfied": 1}
STAFF = {
    "WE-0001": ("01", "1001", "张三", "市场监管局"),
    "WE-0002": ("02", "1002", "李四", "税务局"),
    "WE-0003": ("01", "2001", "王五", "市场监管局"),
    "WE-0004": ("03", "1003", "王六", "人社局"),
    "WE-0005": ("04", "1005", "赵七", "人社局"),
}
ZERO = "0" * 64


def event(device: str, event_id: str, kind: str, at: str, *, level: str | None = None, session: bool = True,
          suspect: bool = False, synced: bool = True, boot: str = "b1", mono: int = 0) -> dict[str, Any]:
    """One event; :func:`load` seals each device's events into a whole chain (the store flags broken ones)."""
    window, staff_no, staff_name, dept = STAFF[device]
    fields: dict[str, Any] = {
        "id": event_id, "type": kind, "device_id": device, "window_no": window, "staff_no": staff_no,
        "staff_name": staff_name, "staff_dept": dept, "occurred_at": at, "clock_synced": synced,
        "boot_id": boot, "mono_ms": mono, "prev_hash": ZERO, "hash": ZERO,
    }
    if session:
        fields.update(session_id=f"s-{event_id}", ticket=f"A{event_id[-3:]}", project_no=f"P-{event_id}",
                      task_code="T-0001", task_name="营业执照办理")
    if kind == "rating":
        assert level is not None
        fields.update(level=level, satisfaction=SATISFACTION[level], channel="5", assess_number=1,
                      suspect=suspect)
    # An unrated event carries no channel: the device records it as a real device does (device/records.py).
    return fields


def rating(device: str, event_id: str, at: str, level: str, **kw: Any) -> dict[str, Any]:
    return event(device, event_id, "rating", at, level=level, **kw)


def unrated(device: str, event_id: str, at: str, **kw: Any) -> dict[str, Any]:
    return event(device, event_id, "unrated", at, **kw)


UNSYNCED = "1970-01-01T00:00:30+00:00"

EVENTS: dict[str, list[dict[str, Any]]] = {
    "WE-0001": [
        rating("WE-0001", "hq01-0930", "2026-09-30T10:00:00+08:00", "dissatisfied"),
        rating("WE-0001", "hq01-1009", "2026-10-09T15:00:00+08:00", "very_dissatisfied"),
        rating("WE-0001", "hq01-1101", "2026-10-31T16:10:00+00:00", "satisfied"),
        rating("WE-0001", "hq01-1105", "2026-11-05T10:00:00+08:00", "dissatisfied"),
        {**event("WE-0001", "hq01-1105-d", "detail", "2026-11-05T10:00:20+08:00"),
         "rating_id": "hq01-1105", "reason_codes": ["201", "203"], "reasons_version": "v1"},
        rating("WE-0001", "hq01-1110a", "2026-11-10T09:00:00+08:00", "very_satisfied"),
        rating("WE-0001", "hq01-1110b", "2026-11-10T09:20:00+08:00", "satisfied"),
        unrated("WE-0001", "hq01-1111u", "2026-11-11T14:00:00+08:00"),
        rating("WE-0001", "hq01-b2-1", UNSYNCED, "basically_satisfied", synced=False, boot="b2", mono=30_000),
        rating("WE-0001", "hq01-b2-2", "1970-01-01T00:01:30+00:00", "dissatisfied", synced=False, boot="b2",
               mono=90_000),
        {**event("WE-0001", "hq01-b2-clock", "clock", "2026-11-12T10:02:30+08:00", boot="b2", mono=150_000,
                 session=False),
         "source": "ntp", "synced_at": "2026-11-12T10:02:30+08:00"},
        rating("WE-0001", "hq01-1201", "2026-11-30T23:30:00+00:00", "very_satisfied", boot="b2", mono=999_000),
    ],
    "WE-0002": [
        rating("WE-0002", "hq02-1116", "2026-11-16T11:00:00+08:00", "very_dissatisfied"),
        rating("WE-0002", "hq02-s1", "2026-11-16T11:00:05+08:00", "satisfied", suspect=True),
        rating("WE-0002", "hq02-s2", "2026-11-16T11:00:07+08:00", "very_satisfied", suspect=True),
        rating("WE-0002", "hq02-1120", "2026-11-20T10:00:00+08:00", "satisfied"),
        unrated("WE-0002", "hq02-1120u", "2026-11-20T15:00:00+08:00"),
        unrated("WE-0002", "hq02-1123u", "2026-11-23T09:00:00+08:00"),
        rating("WE-0002", "hq02-b9", UNSYNCED, "satisfied", synced=False, boot="b9", mono=30_000),
    ],
    "WE-0003": [
        rating("WE-0003", "town-1028", "2026-10-28T10:00:00+08:00", "satisfied", session=False),
        rating("WE-0003", "town-1103a", "2026-11-03T09:00:00+08:00", "very_satisfied", session=False),
        rating("WE-0003", "town-1103b", "2026-11-03T10:00:00+08:00", "satisfied", session=False),
        rating("WE-0003", "town-1104", "2026-11-04T10:00:00+08:00", "basically_satisfied", session=False),
        rating("WE-0003", "town-1125", "2026-11-25T16:00:00+08:00", "dissatisfied", session=False),
    ],
}

#: (device, received_at UTC, uptime_s, ignored_presses, noise_pulses)
HEARTBEATS = [
    ("WE-0001", "2026-10-31T15:00:00+00:00", 1000, 2, 1),       # 10-31 23:00 China: October
    ("WE-0001", "2026-11-15T02:00:00+00:00", 2_000_000, 5, 4),  # +3, +3
    ("WE-0001", "2026-11-20T02:00:00+00:00", 100, 1, 0),        # restarted: +1, +0
    ("WE-0001", "2026-11-30T17:00:00+00:00", 500, 4, 0),        # 12-01 01:00 China: December
    ("WE-0003", "2026-11-10T02:00:00+00:00", 50, 0, 7),
    ("WE-0009", "2026-11-10T02:00:00+00:00", 50, 0, 2),
]


def seal(events: list[dict[str, Any]], first_seq: int = 1, prev: str = ZERO) -> str:
    """Number and chain ``events`` in place, as a device seals them; returns the last hash."""
    for seq, fields in enumerate(events, first_seq):
        fields.update(seq=seq, prev_hash=prev)
        fields.pop("hash", None)
        fields["hash"] = prev = event_hash(fields)
    return prev


def load(path: str, today: datetime.date = AS_OF) -> HallDesk:
    """A desk on a new database holding the month: events, registrations, heartbeats, follow-up, appeals."""
    desk = HallDesk(path, today=lambda: today)
    storage = Storage(path)
    try:
        for device, events in EVENTS.items():
            seal(events)
            storage.store(device, events, "2026-12-01T00:00:00+00:00")
        for device, received_at, uptime, ignored, noise in HEARTBEATS:
            storage.put_heartbeat(device, {"uptime_s": uptime, "ignored_presses": ignored, "noise_pulses": noise},
                                  received_at)
    finally:
        storage.close()
    desk.register("WE-0001", "HQ", "偃师区政务服务中心", "410307")
    desk.register("WE-0002", "HQ")
    desk.register("WE-0003", "TOWN", "城关镇便民服务中心", "410307001")
    desk.register("WE-0009", "TOWN")
    desk.verify("hq01-1009", "confirmed", "调阅录像属实", on=datetime.date(2026, 10, 12), by="王科长")
    desk.verify("hq01-1105", "confirmed", "叫号系统故障属实", on=datetime.date(2026, 11, 6), by="王科长")
    desk.verify("town-1125", "confirmed", "等候时间过长属实", on=datetime.date(2026, 11, 26), by="赵主任")
    desk.record_fix("hq01-1009", "已约谈窗口人员并加强培训", on=datetime.date(2026, 11, 3), by="王科长")
    desk.extend("hq01-1105", datetime.date(2026, 12, 4), "需协调系统厂商修复叫号系统", on=datetime.date(2026, 11, 18),
                by="王科长")
    desk.reply("hq01-1105", "电话告知办件人整改进度", on=datetime.date(2026, 11, 20), by="王科长")
    desk.record_fix("town-1125", "增设导办人员", on=datetime.date(2026, 11, 27), by="赵主任")
    upheld = desk.file_appeal("hq02-1116", "群众对政策本身不满，非窗口服务问题", by="1002 李四",
                              on=datetime.date(2026, 11, 17))
    desk.decide_appeal(upheld.n, "upheld", "王科长", "评价反映真实诉求，维持", on=datetime.date(2026, 11, 19))
    overturned = desk.file_appeal("hq01-b2-2", "群众误按，当场说明", by="1001 张三", on=datetime.date(2026, 11, 13))
    desk.decide_appeal(overturned.n, "overturned", "王科长", "监控显示系误按，撤销", on=datetime.date(2026, 11, 20))
    return desk


def load_more(path: str, today: datetime.date = AS_OF) -> HallDesk:
    """:func:`load`'s November and, for the report the rules ask for (tests/test_hall_rules_report.py):

    WE-0002 (HQ/02, 1002 李四): hq02-1126 2026-11-26 非常不满意, reason 201 (his second 差评 this month), then
        hq02-forged: a 非常满意 whose level was changed after sealing (the hall flags its hash).
    WE-0003 (TOWN/01): a gap event, 2 events lost (flagged).
    WE-0004 (HQ/03, 1003 王六): only hq03-1015, a 不满意 of 2026-10-15, still open; no November events.
    WE-0005 (HQ/04, 1005 赵七): three 非常满意 in November, with sessions: praised.
    """
    desk = load(path, today)
    we2 = [rating("WE-0002", "hq02-1126", "2026-11-26T10:00:00+08:00", "very_dissatisfied"),
           {**event("WE-0002", "hq02-1126-d", "detail", "2026-11-26T10:00:20+08:00"), "rating_id": "hq02-1126",
            "reason_codes": ["201"], "reasons_version": "v1"},
           rating("WE-0002", "hq02-forged", "2026-11-27T09:00:00+08:00", "dissatisfied")]
    seal(we2, len(EVENTS["WE-0002"]) + 1, EVENTS["WE-0002"][-1]["hash"])
    we2[-1].update(level="very_satisfied", satisfaction=5)  # altered after sealing: its hash no longer matches
    gap = [{**event("WE-0003", "town-gap", "gap", "2026-11-28T08:00:00+08:00", session=False),
            "from_seq": None, "to_seq": None, "count": 2, "reason": "lost_wal"}]
    for key in ("staff_no", "staff_name", "staff_dept"):
        gap[0].pop(key, None)
    seal(gap, len(EVENTS["WE-0003"]) + 1, EVENTS["WE-0003"][-1]["hash"])
    we4 = [rating("WE-0004", "hq03-1015", "2026-10-15T10:00:00+08:00", "dissatisfied")]
    we5 = [rating("WE-0005", f"hq04-{n}", f"2026-11-0{n}T10:00:00+08:00", "very_satisfied") for n in (2, 3, 4)]
    storage = Storage(path)
    seal(we4)
    seal(we5)
    for device, events in (("WE-0002", we2), ("WE-0003", gap), ("WE-0004", we4), ("WE-0005", we5)):
        storage.store(device, events, "2026-12-01T00:00:00+00:00")
    storage.close()
    desk.register("WE-0004", "HQ")
    desk.register("WE-0005", "HQ")
    return desk
