"""The event record: fields, canonical JSON and the hash chain.

Every fact the device learns is an append-only event. ``hash`` is the hex
SHA-256 of the event's canonical JSON without ``hash`` itself and without the
fields the uploader adds at sending time; ``prev_hash`` is the previous
event's ``hash`` (64 zeros before ``seq`` 1). Anyone holding the events can
then tell that one was deleted or edited.
"""

import hashlib
import json

GENESIS_HASH = "0" * 64

#: Added by the uploader when sending, so outside the hash.
SEND_TIME_FIELDS = frozenset({"corrected_at"})

EVENT_TYPES = ("rating", "detail", "unrated")


# One encoder for every event: json.dumps would build a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_OUTSIDE_HASH = SEND_TIME_FIELDS | {"hash"}


def canonical_json(obj):
    """Keys sorted, no whitespace, UTF-8 without ASCII escaping."""
    return _CANONICAL.encode(obj)


def hashed_json(event):
    """The canonical JSON the ``hash`` is taken over: the event without ``hash`` and send-time fields."""
    if not _OUTSIDE_HASH.isdisjoint(event):
        event = {k: v for k, v in event.items() if k not in _OUTSIDE_HASH}
    return _CANONICAL.encode(event)


def event_hash(event):
    """The ``hash`` an event must carry, computed from its other fields."""
    return hashlib.sha256(hashed_json(event).encode("utf-8")).hexdigest()


def seal_text(fields, seq, prev_hash):
    """Seal like :func:`seal`, also returning the exact text that was hashed.

    Returns:
        ``(event, text)``; ``sha256(text) == event["hash"]``, and
        ``json.loads(text)`` plus ``hash`` is the event again.
    """
    event = dict(fields, seq=seq, prev_hash=prev_hash)
    text = hashed_json(event)
    event["hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return event, text


def seal(fields, seq, prev_hash):
    """Return a new event: ``fields`` plus ``seq``, ``prev_hash`` and ``hash``."""
    return seal_text(fields, seq, prev_hash)[0]


def first_break(events):
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
