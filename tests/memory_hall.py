"""An in-memory hall: the second implementation of :class:`device.queue.client.HallClient`.

It keeps events per device by ``seq`` and ``id`` the way the contract says a
hall must (idempotent on ``id``; never two events under one ``seq``:
``seq_taken``), and can be told to refuse whole requests. The uploader and
the hall link run against it unchanged: that is the seam.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device.queue.client import (
    OTHER,
    SEQ_TAKEN,
    TOO_LARGE,
    AssignmentAnswer,
    Delivery,
    HeartbeatAnswer,
    Refusal,
)
from device.queue.wire import Head


@dataclass
class MemoryHall:
    """Events by device and seq; refusals queued by the test."""

    events: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    #: Whole-request refusals still to give, in order.
    refusals: list[Refusal] = field(default_factory=list)
    #: ``{id: error}`` the hall names as rejected (dead letters).
    reject: dict[str, str] = field(default_factory=dict)
    assignment_data: Any = None
    session: Any = None
    requests: int = 0
    closed: bool = False
    algorithm: str = "memory"
    faults: tuple[str, ...] = ()

    def held(self, device_id: str) -> list[dict[str, Any]]:
        return [self.events.get(device_id, {})[s] for s in sorted(self.events.get(device_id, {}))]

    def head(self, device_id: str) -> Head | None:
        held = self.events.get(device_id, {})
        seq = 0
        while seq + 1 in held:
            seq += 1
        return Head(seq, held[seq]["hash"]) if seq else None

    # --- HallClient -----------------------------------------------------------------

    def deliver(self, device_id: str, sent_at: str, events: list[dict[str, Any]]) -> Delivery | Refusal:
        self.requests += 1
        if self.refusals:
            return self.refusals.pop(0)
        held = self.events.setdefault(device_id, {})
        ids = {e["id"]: s for s, e in held.items()}
        acked, duplicate, rejected = [], [], {}
        for event in events:
            if event["id"] in self.reject:
                rejected[event["id"]] = self.reject[event["id"]]
            elif event["id"] in ids:
                acked.append(event["id"])
                duplicate.append(event["id"])
            elif event["seq"] in held:
                rejected[event["id"]] = SEQ_TAKEN
            else:
                held[event["seq"]] = dict(event)
                ids[event["id"]] = event["seq"]
                acked.append(event["id"])
        taken = tuple(i for i, e in rejected.items() if e == SEQ_TAKEN)
        return Delivery(acknowledged=tuple(acked), duplicate=tuple(duplicate),
                        rejected={i: e for i, e in rejected.items() if e != SEQ_TAKEN},
                        seq_taken=taken, head=self.head(device_id))

    def assignment(self, device_id: str, etag: str) -> AssignmentAnswer:
        self.requests += 1
        if self.assignment_data is None:
            return AssignmentAnswer()
        tag = f'"{hash(repr(self.assignment_data)) & 0xFFFF:x}"'
        if tag == etag:
            return AssignmentAnswer(etag=etag, unchanged=True)
        return AssignmentAnswer(self.assignment_data, tag)

    def poll_session(self, device_id: str, wait_s: float) -> Any:
        self.requests += 1
        return self.session

    def heartbeat(self, device_id: str, body: dict[str, Any]) -> HeartbeatAnswer:
        self.requests += 1
        self.heartbeats.append(body)
        return HeartbeatAnswer(True, 200, {"ok": True})

    def close(self) -> None:
        self.closed = True


def refuse(status: int, kind: str = OTHER) -> Refusal:
    """A verified refusal of a whole request (``TOO_LARGE`` for 413)."""
    return Refusal(TOO_LARGE if status == 413 else kind, status, why=f"refused {status}")
