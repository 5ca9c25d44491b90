"""Which hall each device serves, and the heartbeats kept for the month's counters.

**The hall of a device comes from its registration**, not from the device:
the hall server already knows every device by its key (the keys file, or
``python -m hall register``), so the hall a device was installed in is
registered with it. Events do not carry a hall, so a device moved to another
hall keeps its old events under its old registration only if it gets a new
device id; the README says so. A device nobody registered is reported under
:data:`UNREGISTERED` and named in the report, so it is never merged silently
with another hall's window of the same number.

**Heartbeats** carry the device's ``ignored_presses`` and ``noise_pulses``
counters since it started. The server keeps only each device's last
heartbeat, so a trigger on its table copies every heartbeat into
``heartbeat_log``; a month's figure is the sum of the increases between
consecutive heartbeats received in that month (a counter that went down, or
an uptime that went down, is a restart: the new value counts from zero).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from hall.dating import china_time, parse_time

#: The hall of a device that nobody registered.
UNREGISTERED = "未登记"
#: The heartbeat counters the report adds up per month.
COUNTERS = ("ignored_presses", "noise_pulses")

SCHEMA = """
CREATE TABLE IF NOT EXISTS hall_devices (
    device_id TEXT PRIMARY KEY, hall TEXT NOT NULL, registered_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS halls (
    hall TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', area_code TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS heartbeat_log (
    device_id TEXT NOT NULL, received_at TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS heartbeat_log_device ON heartbeat_log (device_id, received_at);
"""
#: Set up only where the server's ``heartbeats`` table exists.
HEARTBEAT_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS heartbeat_log_keep AFTER INSERT ON heartbeats
BEGIN
    INSERT INTO heartbeat_log VALUES (NEW.device_id, NEW.received_at, NEW.json);
END;
"""


@dataclasses.dataclass(frozen=True)
class Hall:
    """A hall: its id (what devices are registered to), name and 行政区划 code."""

    hall: str
    name: str = ""
    area_code: str = ""


@dataclasses.dataclass(frozen=True)
class Registry:
    """Devices -> halls, and what is known of each hall."""

    devices: Mapping[str, str] = dataclasses.field(default_factory=dict)
    halls: Mapping[str, Hall] = dataclasses.field(default_factory=dict)

    def hall_of(self, device_id: str) -> str:
        """The hall id ``device_id`` is registered to, or :data:`UNREGISTERED`."""
        return self.devices.get(device_id, UNREGISTERED)

    def hall(self, hall: str) -> Hall:
        """What is known of ``hall`` (an empty name and area code if nothing)."""
        return self.halls.get(hall, Hall(hall))


@dataclasses.dataclass(frozen=True)
class Beat:
    """One received heartbeat, reduced to what the report needs."""

    device_id: str
    received_at: datetime.datetime
    uptime_s: int | None
    counters: Mapping[str, int]


def create_tables(db: sqlite3.Connection) -> None:
    """Create the registry and heartbeat-log tables, and the trigger if it can."""
    db.executescript(SCHEMA)
    has_heartbeats = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'heartbeats'").fetchone()
    if has_heartbeats:
        new = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
                         "AND name = 'heartbeat_log_keep'").fetchone() is None
        db.executescript(HEARTBEAT_TRIGGER)
        if new:  # heartbeats received before the log existed: keep the last one of each
            db.execute("INSERT INTO heartbeat_log SELECT device_id, received_at, json FROM heartbeats")


def register(db: sqlite3.Connection, device_id: str, hall: str, registered_at: str,
             name: str | None = None, area_code: str | None = None) -> None:
    """Register ``device_id`` to ``hall``; ``name``/``area_code`` update the hall when given."""
    db.execute("INSERT OR REPLACE INTO hall_devices VALUES (?, ?, ?)", (device_id, hall, registered_at))
    db.execute("INSERT OR IGNORE INTO halls (hall) VALUES (?)", (hall,))
    if name is not None:
        db.execute("UPDATE halls SET name = ? WHERE hall = ?", (name, hall))
    if area_code is not None:
        db.execute("UPDATE halls SET area_code = ? WHERE hall = ?", (area_code, hall))


def read_registry(db: sqlite3.Connection) -> Registry:
    """Every registration and hall."""
    devices = dict(db.execute("SELECT device_id, hall FROM hall_devices").fetchall())
    halls = {row[0]: Hall(*row) for row in db.execute("SELECT hall, name, area_code FROM halls")}
    return Registry(devices, halls)


def read_beats(db: sqlite3.Connection) -> list[Beat]:
    """Every logged heartbeat with a readable time, oldest first per device."""
    rows = db.execute("SELECT device_id, received_at, json FROM heartbeat_log "
                      "ORDER BY device_id, received_at, rowid").fetchall()
    beats = []
    for device_id, received_at, body in rows:
        when = parse_time(received_at)
        if when is None:
            continue
        try:
            data: Any = json.loads(body)
        except ValueError:
            continue
        beats.append(beat(device_id, when, data if isinstance(data, dict) else {}))
    return beats


def beat(device_id: str, received_at: datetime.datetime, body: Mapping[str, Any]) -> Beat:
    """A :class:`Beat` from a heartbeat body; counters that are not integers are left out."""
    counters = {name: body[name] for name in COUNTERS if _count(body.get(name))}
    uptime = body.get("uptime_s")
    return Beat(device_id, received_at, uptime if _count(uptime) else None, counters)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def month_counters(beats: Iterable[Beat], first: datetime.date, after: datetime.date) -> dict[str, dict[str, int]]:
    """Device id -> counter -> its increase over heartbeats received in ``[first, after)``, China dates.

    Args:
        beats: heartbeats in the order received (per device).
        first: the month's first day.
        after: the first day after the month.
    """
    totals: dict[str, dict[str, int]] = {}
    last: dict[str, Beat] = {}
    for one in sorted(beats, key=lambda b: (b.device_id, b.received_at)):
        before = last.get(one.device_id)
        last[one.device_id] = one
        if not first <= china_time(one.received_at).date() < after:
            continue
        restarted = (before is None or (one.uptime_s is not None and before.uptime_s is not None
                                        and one.uptime_s < before.uptime_s))
        device = totals.setdefault(one.device_id, dict.fromkeys(COUNTERS, 0))
        for name, value in one.counters.items():
            previous = None if before is None or restarted else before.counters.get(name)
            device[name] += value - previous if previous is not None and value >= previous else value
    return totals
