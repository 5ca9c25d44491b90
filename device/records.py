"""The event record: fields, canonical JSON and the hash chain.

Every fact the device learns is an append-only event. ``hash`` is the hex
SHA-256 of the event's canonical JSON without ``hash`` itself; ``prev_hash``
is the previous event's ``hash`` (64 zeros before ``seq`` 1). Anyone holding
the events can then tell that one was deleted or edited. Nothing is added to
an event after it is sealed: an event stamped before the clock was set is
dated later by its boot's ``clock`` event, never by changing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uuid6

from device.clock import Clocks, iso

if TYPE_CHECKING:
    from device.config import Config
    from device.levels import Level
    from device.state import Session

GENESIS_HASH = "0" * 64

EVENT_TYPES = ("rating", "detail", "unrated", "clock", "gap")
#: Why a device can no longer deliver events it had sealed (a ``gap`` event's ``reason``).
GAP_REASONS = ("unreadable_row", "lost_events", "restored_copy", "foreign_folder", "lost_wal")


# One encoder for every event: json.dumps would build a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Any) -> str:
    """Keys sorted, no whitespace, UTF-8 without ASCII escaping."""
    return _CANONICAL.encode(obj)


def hashed_json(event: dict[str, Any]) -> str:
    """The canonical JSON the ``hash`` is taken over: the event without ``hash``."""
    if "hash" in event:
        event = {k: v for k, v in event.items() if k != "hash"}
    return _CANONICAL.encode(event)


def event_hash(event: dict[str, Any]) -> str:
    """The ``hash`` an event must carry, computed from its other fields."""
    return hashlib.sha256(hashed_json(event).encode("utf-8")).hexdigest()


def seal_text(fields: dict[str, Any], seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """Seal like :func:`seal`, also returning the exact text that was hashed.

    Returns:
        ``(event, text)``; ``sha256(text) == event["hash"]``, and
        ``json.loads(text)`` plus ``hash`` is the event again.
    """
    event = dict(fields, seq=seq, prev_hash=prev_hash)
    text = hashed_json(event)
    event["hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return event, text


def seal(fields: dict[str, Any], seq: int, prev_hash: str) -> dict[str, Any]:
    """Return a new event: ``fields`` plus ``seq``, ``prev_hash`` and ``hash``."""
    return seal_text(fields, seq, prev_hash)[0]


def first_break(events: Iterable[dict[str, Any]]) -> tuple[Any, str] | None:
    """Check a device's events in ``seq`` order.

    Returns:
        ``None`` when the chain is whole, else ``(seq, reason)`` for the
        first event at which it breaks.
    """
    expected_seq, prev = 1, GENESIS_HASH
    for event in events:
        seq = event.get("seq")
        if seq != expected_seq:
            return (seq, f"seq gap: expected {expected_seq}, found {seq}")
        if event.get("prev_hash") != prev:
            return (seq, "prev_hash does not match the previous event's hash")
        if event.get("hash") != event_hash(event):
            return (seq, "hash does not match the event's contents")
        expected_seq, prev = seq + 1, event["hash"]
    return None


def new_id() -> str:
    """A new event or session id: a UUIDv7, so ids sort by the time they were made."""
    return str(uuid6.uuid7())


@dataclass(frozen=True)
class Origin:
    """Whose event it is: the device, the window and the staff member on duty."""

    device_id: str
    window_no: str
    staff_no: str
    staff_name: str
    channel: str
    #: The staff member's department, for the hall's roll-up per department.
    staff_dept: str = ""

    @classmethod
    def from_config(cls, config: Config) -> Origin:
        return cls(config.device.id, config.device.window_no, config.staff.no, config.staff.name,
                   config.device.channel, config.staff.dept)


class RecordFactory:
    """Makes the fields of every event the device keeps: the one place they are made.

    The outbox adds ``seq``, ``prev_hash`` and ``hash`` when it seals them.

    Args:
        clocks: the :class:`~device.clock.Clocks` that stamp every event.
        new_id: makes event ids (injectable for tests).
    """

    def __init__(self, clocks: Clocks, new_id: Callable[[], str] = new_id) -> None:
        self.clocks = clocks
        self.new_id = new_id

    def base(self, event_type: str, origin: Origin, session: Session | None) -> dict[str, Any]:
        """Fields every event has, and the session's when there is one."""
        c = self.clocks
        synced = c.is_synced()
        if not synced:
            c.stamped_unsynced()  # a clock event will date it once the clock can be trusted
        fields: dict[str, Any] = {
            "id": self.new_id(),
            "type": event_type,
            "device_id": origin.device_id,
            "window_no": origin.window_no,
            "staff_no": origin.staff_no,
            "staff_name": origin.staff_name,
            "staff_dept": origin.staff_dept,
            "occurred_at": iso(c.wall()),
            "clock_synced": synced,
            "boot_id": c.boot_id,
            "mono_ms": c.mono_ms(),
        }
        if session is not None:
            fields.update(session_id=session.session_id, ticket=session.ticket,
                          project_no=session.project_no, task_code=session.task_code,
                          task_name=session.task_name)
        return fields

    def rating(self, origin: Origin, level: Level, session: Session | None, suspect: bool) -> dict[str, Any]:
        fields = self.base("rating", origin, session)
        fields.update(level=level.value, satisfaction=level.satisfaction, channel=origin.channel,
                      assess_number=1, suspect=suspect)
        return fields

    def unrated(self, origin: Origin, session: Session) -> dict[str, Any]:
        return self.base("unrated", origin, session)

    def detail(self, origin: Origin, rating_id: str, reason_codes: Iterable[str], reasons_version: str,
               session: Session | None) -> dict[str, Any]:
        fields = self.base("detail", origin, session)
        fields.update(rating_id=rating_id, reason_codes=list(reason_codes), reasons_version=reasons_version)
        return fields

    def clock(self, origin: Origin, source: str) -> dict[str, Any]:
        """The ``clock`` event: at this boot's ``mono_ms`` the trusted wall time was ``synced_at``.

        With it anyone holding the events dates every event of this boot
        exactly: ``synced_at - (clock.mono_ms - event.mono_ms)``.

        Args:
            origin: the device and who is on duty.
            source: ``"ntp"`` or ``"hall"`` (:meth:`Clocks.clock_event_due <device.clock.Clocks.clock_event_due>`).
        """
        fields = self.base("clock", origin, None)
        fields.update(source=source, synced_at=fields["occurred_at"])
        return fields


def gap_fields(clocks: Clocks, device_id: str, window_no: str, from_seq: int | None, to_seq: int | None,
               count: int, reason: str, new_id: Callable[[], str] = new_id) -> dict[str, Any]:
    """The fields of a ``gap`` event: sealed events this device can no longer deliver.

    Made by the outbox itself when it finds the loss (it knows the device and
    window it serves); the device, window and time fields are the usual ones,
    without staff or level.

    Args:
        from_seq: the first seq of the range it can no longer deliver, or None when unknown.
        to_seq: the last, or None when unknown.
        count: how many of them were not delivered (0 when unknown).
        reason: one of :data:`GAP_REASONS`.
    """
    if reason not in GAP_REASONS:
        raise ValueError(f"no such gap reason: {reason!r}")
    synced = clocks.is_synced()
    if not synced:
        clocks.stamped_unsynced()
    return {"id": new_id(), "type": "gap", "device_id": device_id, "window_no": window_no,
            "occurred_at": iso(clocks.wall()), "clock_synced": synced, "boot_id": clocks.boot_id,
            "mono_ms": clocks.mono_ms(), "from_seq": from_seq, "to_seq": to_seq, "count": count,
            "reason": reason}
