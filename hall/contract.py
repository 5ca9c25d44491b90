"""The uplink contract v3 as the hall checks it: paths, device ids, limits, event fields, hash chain.

Written without importing device code on purpose: the hall is the device's
independent judge, so the two sides agree on the canonical form only if two
separate implementations of it agree. Signatures are checked in
:mod:`hall.auth`, not here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

#: One event as received: a JSON object.
Event = dict[str, Any]

EVALUATIONS_PATH = "/api/v1/evaluations"
#: ``/api/v1/devices/<id>/<action>``: the per-device endpoints (the id is checked with :data:`DEVICE_ID`).
DEVICE_PATH = re.compile(r"/api/v1/devices/([^/]*)/(assignment|session|heartbeat)")
#: A device id: what every configured id must be, so it can be signed (``keyid``) and routed (a path segment).
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
DEVICE_ID_RULE = "a device id is 1 to 32 of A-Z a-z 0-9 . _ -"
#: The longest a session long poll may hold the connection.
MAX_WAIT_S = 30
DEFAULT_MAX_BODY = 1 << 20

GENESIS_HASH = "0" * 64
EVENT_TYPES = ("rating", "detail", "unrated", "clock", "gap")
#: Why a device could no longer deliver events it had sealed (a ``gap`` event's ``reason``).
GAP_REASONS = ("unreadable_row", "lost_events", "restored_copy", "foreign_folder", "lost_wal")
#: The ``error`` of an event whose seq the hall holds under another id: the device seals it again after ``head``.
SEQ_TAKEN = "seq_taken"
#: Where a ``clock`` event's trusted time came from.
CLOCK_SOURCES = ("ntp", "hall")
#: The largest ``seq`` (and ``mono_ms``) the hall stores: SQLite's INTEGER.
MAX_INT = 2**63 - 1
#: Level name -> exchange-interface ``satisfaction`` (5 = 非常满意).
SATISFACTION = {
    "very_satisfied": 5,
    "satisfied": 4,
    "basically_satisfied": 3,
    "dissatisfied": 2,
    "very_dissatisfied": 1,
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadRequest(ValueError):
    """The request cannot be processed; carries the HTTP status to answer.

    Args:
        message: the reason, sent to the client as ``{"error": message}``.
        status: the HTTP status code; 400 unless said otherwise.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def canonical_json(obj: Any) -> str:
    """Keys sorted, no whitespace, UTF-8 without ASCII escaping."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event: Event) -> str:
    """The ``hash`` an event must carry: SHA-256 of its other fields."""
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def parse_time(value: Any) -> datetime.datetime | None:
    """An ISO 8601 timestamp with offset, or ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_int(value: Any) -> bool:
    """True for a JSON integer; ``True``/``False`` are not integers here."""
    # bool is an int subclass; True must not pass for seq 1.
    return isinstance(value, int) and not isinstance(value, bool)


def validate_event(event: Event, device_id: str) -> str | None:
    """Check one event against the records contract.

    Args:
        event: the event object as received (a dict with a string ``id``).
        device_id: the authenticated device.

    Returns:
        ``None`` if the event is acceptable, else the reason as text.
    """
    if not is_int(event.get("seq")) or not 1 <= event["seq"] <= MAX_INT:
        return f"seq must be an integer from 1 to {MAX_INT}"
    if event.get("type") not in EVENT_TYPES:
        return f"type must be one of {', '.join(EVENT_TYPES)}"
    if event.get("device_id") != device_id:
        return "device_id is not the device that signed the request"
    for field in ("hash", "prev_hash"):
        if not isinstance(event.get(field), str) or not _HEX64.fullmatch(event[field]):
            return f"{field} must be 64 lowercase hex digits"
    if parse_time(event.get("occurred_at")) is None:
        return "occurred_at must be ISO 8601 with a UTC offset"
    if "mono_ms" in event and not (is_int(event["mono_ms"]) and 0 <= event["mono_ms"] <= MAX_INT):
        return f"mono_ms must be an integer from 0 to {MAX_INT}"
    if event["type"] == "clock":
        return _clock_problem(event)
    if event["type"] == "gap":
        return _gap_problem(event)
    if event["type"] == "rating":
        level = event.get("level")
        if level not in SATISFACTION:
            return f"level must be one of {', '.join(SATISFACTION)}"
        if not is_int(event.get("satisfaction")) or event["satisfaction"] != SATISFACTION[level]:
            return f"satisfaction must be {SATISFACTION[level]} for {level} (5 = very_satisfied)"
    elif event["type"] == "detail":
        if not isinstance(event.get("rating_id"), str) or not event["rating_id"]:
            return "detail needs rating_id"
        if "reason_codes" in event and not isinstance(event["reason_codes"], list):
            return "reason_codes must be a list"
    return None


def _clock_problem(event: Event) -> str | None:
    """What is wrong with a ``clock`` event, or None (DESIGN.md Records)."""
    if event.get("source") not in CLOCK_SOURCES:
        return f"a clock event's source must be one of {', '.join(CLOCK_SOURCES)}"
    if parse_time(event.get("synced_at")) is None:
        return "a clock event's synced_at must be ISO 8601 with a UTC offset"
    if not isinstance(event.get("boot_id"), str) or not event["boot_id"]:
        return "a clock event needs its boot_id"
    if "mono_ms" not in event:
        return "a clock event needs its mono_ms"
    return None


def _gap_problem(event: Event) -> str | None:
    """What is wrong with a ``gap`` event, or None (common interface 4)."""
    for field in ("from_seq", "to_seq"):
        value = event.get(field)
        if value is not None and not (is_int(value) and 0 <= value <= MAX_INT):
            return f"a gap event's {field} must be an integer from 0 to {MAX_INT}, or null"
    if not is_int(event.get("count")) or not 0 <= event["count"] <= MAX_INT:
        return "a gap event's count must be a non-negative integer"
    if event.get("reason") not in GAP_REASONS:
        return f"a gap event's reason must be one of {', '.join(GAP_REASONS)}"
    if "level" in event:
        return "a gap event has no level"
    return None


def is_device_id(value: object) -> bool:
    """Whether ``value`` is a device id the contract allows (:data:`DEVICE_ID`)."""
    return isinstance(value, str) and DEVICE_ID.fullmatch(value) is not None


def _load_json(body: bytes) -> Any:
    """Strict JSON: no NaN or Infinity, and no stack overflow on deep nesting."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_batch(body: bytes, device_id: str) -> list[Event]:
    """Decode and shape-check a ``POST /api/v1/evaluations`` body.

    Args:
        body: the raw request body.
        device_id: the authenticated device.

    Returns:
        The batch's events, each a dict with a non-empty string ``id``; the
        fields are checked one event at a time by :func:`validate_event`.

    Raises:
        BadRequest: 400 for anything that is not the contract's shape, 403
            when the body speaks for another device than the one that signed.
    """
    batch = _load_json(body)
    if not isinstance(batch, dict):
        raise BadRequest("body must be a JSON object")
    if not isinstance(batch.get("device_id"), str) or not isinstance(batch.get("sent_at"), str):
        raise BadRequest("body needs device_id and sent_at strings")
    if batch["device_id"] != device_id:
        raise BadRequest("device_id in the body is not the device that signed the request", status=403)
    events = batch.get("events")
    if not isinstance(events, list):
        raise BadRequest("events must be a list")
    for index, event in enumerate(events):
        # Without an id nothing can be acknowledged or rejected by name, so
        # the whole batch is malformed and the device splits it.
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise BadRequest(f"events[{index}] must be an object with a string id")
    return events


def parse_heartbeat(body: bytes) -> dict[str, Any]:
    """Decode a heartbeat body: any JSON object.

    Raises:
        BadRequest: 400 when the body is not a JSON object.
    """
    heartbeat = _load_json(body)
    if not isinstance(heartbeat, dict):
        raise BadRequest("heartbeat must be a JSON object")
    return heartbeat


def parse_wait(query: str) -> float:
    """The ``wait`` seconds of a session long poll, clamped to ``0..MAX_WAIT_S``.

    Raises:
        BadRequest: 400 when ``wait`` is not a number.
    """
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "wait":
            try:
                wait = float(value)
            except ValueError:
                raise BadRequest("wait must be a number of seconds") from None
            if math.isnan(wait):  # float() takes "nan"; min/max would pass it through
                raise BadRequest("wait must be a number of seconds")
            return max(0.0, min(wait, MAX_WAIT_S))
    return 0.0


def check_chain(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Problems in one device's events, given in ``seq`` order.

    The first stored event of each seq is the one the chain is checked with;
    later ones with the same seq are reported as ``duplicate_seq``.

    Returns:
        ``{"seq", "problem", "detail"}`` per problem, ``problem`` one of
        ``gap``, ``duplicate_seq``, ``prev_hash``, ``hash``; empty when whole.
    """
    problems: list[dict[str, Any]] = []
    expected, prev = 1, None
    for event in events:
        seq = event["seq"]
        if prev is not None and seq == prev["seq"]:
            problems.append({"seq": seq, "problem": "duplicate_seq",
                             "detail": f"seq {seq} used by {prev['id']} and {event['id']}"})
            continue
        if seq > expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            problems.append({"seq": seq, "problem": "gap", "detail": f"missing seq {missing}"})
        elif seq == 1 and event["prev_hash"] != GENESIS_HASH:
            problems.append({"seq": seq, "problem": "prev_hash",
                             "detail": "seq 1 must have prev_hash of 64 zeros"})
        elif prev is not None and event["prev_hash"] != prev["hash"]:
            problems.append({"seq": seq, "problem": "prev_hash",
                             "detail": f"prev_hash does not match the hash of seq {prev['seq']}"})
        if event["hash"] != event_hash(event):
            problems.append({"seq": seq, "problem": "hash",
                             "detail": "hash does not match the event's contents"})
        expected, prev = seq + 1, event
    return problems
