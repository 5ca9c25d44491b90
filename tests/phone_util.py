"""Shared by the phone page tests: a device that posts signed, chained events to a real hall, and a clock."""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from typing import Any

import requests

from hall.auth import sign_request
from hall.contract import event_hash
from hall.levels import LEVELS
from hall.phone import link

KEY = "phone-test-key"
ZERO = "0" * 64
REASONS = [
    {"level": "dissatisfied", "code": "401", "text": "办事效率低"},
    {"level": "dissatisfied", "code": "402", "text": "服务态度差"},
    {"level": "very_dissatisfied", "code": "501", "text": "推诿扯皮"},
    {"level": "very_satisfied", "code": "101", "text": "热情周到"},
]
ASSIGNMENT = {"window": {"no": "07", "name": "不动产登记"}, "staff": {"no": "7001", "name": "赵六", "dept": ""},
              "qr_url": "", "reasons_version": "v1", "reasons": REASONS}


class Clock:
    """The hall's clock (Unix seconds), moved by the test."""

    def __init__(self, when: str) -> None:
        self.lock = threading.Lock()
        self.set(when)

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def set(self, when: str) -> None:
        with self.lock:
            self.now = datetime.datetime.fromisoformat(when).timestamp()


class Device:
    """Seals events into a chain and posts them signed, as a device's uploader does."""

    def __init__(self, hall_url: str, device_id: str = "WE-0007") -> None:
        self.url = hall_url
        self.device_id = device_id
        self.seq = 0
        self.prev = ZERO

    def event(self, kind: str, at: str, session_id: str | None = None, **extra: Any) -> dict[str, Any]:
        self.seq += 1
        fields: dict[str, Any] = {
            "id": str(uuid.uuid4()), "seq": self.seq, "type": kind, "device_id": self.device_id, "window_no": "07",
            "staff_no": "7001", "staff_name": "赵六", "occurred_at": at, "clock_synced": True, "boot_id": "b1",
            "mono_ms": self.seq * 1000, "prev_hash": self.prev, **extra}
        if session_id is not None:
            fields.update(session_id=session_id, ticket=f"A{self.seq:03d}", project_no="", task_code="",
                          task_name="不动产登记")
        if kind == "rating":
            fields.setdefault("channel", "5")
            fields.setdefault("assess_number", 1)
            fields.setdefault("suspect", False)
        fields["hash"] = self.prev = event_hash(fields)
        return fields

    def post(self, *events: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"device_id": self.device_id, "sent_at": events[0]["occurred_at"],
                           "events": list(events)}).encode()
        url = self.url + "/api/v1/evaluations"
        headers = {"Content-Type": "application/json", **sign_request(KEY, self.device_id, "POST", url, body)}
        answer = requests.post(url, data=body, headers=headers, timeout=5)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        assert not result["rejected"], result
        return result

    def service(self, at: str, level: str | None = None) -> tuple[str, str]:
        """One service ended (rated at the counter with ``level``, or unrated) and delivered: (session id, link)."""
        session_id = str(uuid.uuid4())
        extra = {"level": level, "satisfaction": 5 - LEVELS.index(level)} if level else {}
        self.post(self.event("rating" if level else "unrated", at, session_id, **extra))
        return session_id, link(self.url, session_id)
