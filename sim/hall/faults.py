"""Fault injection: the failures a real uplink meets, made on request.

Tests and the soak tool queue faults with :meth:`FaultPlan.inject`; the HTTP
handler takes the first matching one per request and acts it out.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from sim.hall.contract import EVALUATIONS_PATH, is_int

FAULT_KINDS = ("status", "latency", "reset_after_commit", "malformed", "reset")
#: What a ``malformed`` fault answers unless given a ``body``: a proxy's page, not JSON.
DEFAULT_MALFORMED_BODY = b"<html>502 Bad Gateway</html>"


@dataclasses.dataclass
class Fault:
    """One injected fault; ``count`` requests are left to hit."""

    kind: str
    count: int
    #: ``None``: ``POST /api/v1/evaluations``; else this path, any method.
    path: str | None
    params: dict[str, Any]

    def matches(self, method: str, path: str) -> bool:
        """Whether a request for ``method path`` (no query) hits this fault."""
        if self.path is None:
            return method == "POST" and path == EVALUATIONS_PATH
        return path == self.path

    @property
    def seconds(self) -> float:
        """How long a ``latency`` fault holds the request."""
        return float(self.params.get("seconds", 1.0))

    def status_answer(self) -> tuple[int, Any, dict[str, str]]:
        """``(status, payload, headers)`` a ``status`` fault answers with."""
        status: int = self.params.get("status", 503)
        headers = {}
        if self.params.get("retry_after") is not None:
            headers["Retry-After"] = str(self.params["retry_after"])
        return status, self.params.get("body", {"error": f"injected {status}"}), headers

    def malformed_body(self) -> Any:
        """What a ``malformed`` fault answers with 200 instead of the real answer."""
        return self.params.get("body", DEFAULT_MALFORMED_BODY)


class FaultPlan:
    """The queue of injected faults, safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def inject(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Queue a fault for the next ``count`` matching requests.

        See :meth:`HallServer.inject() <sim.hall.HallServer.inject>` for the kinds.

        Raises:
            ValueError: an unknown ``kind`` or a ``count`` below 1.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not is_int(count) or count < 1:
            raise ValueError("count must be a positive integer")
        with self._lock:
            self._faults.append(Fault(kind, count, path, params))

    def take(self, method: str, path: str) -> Fault | None:
        """Use up one hit of the first fault matching this request, if any."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()
