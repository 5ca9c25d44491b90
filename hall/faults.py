"""Fault injection: the failures and the lies a real uplink meets, made on request.

Tests and the soak tool queue faults with :meth:`FaultPlan.inject`; the HTTP
handler takes the first matching one per request and acts it out. Besides
the hall's own failures (errors, latency, resets, malformed answers) these
are the peers the device must not believe or wait on: an impostor that
answers what the device would like to hear (``rogue``, unsigned, signed with
another key, or echoing another request's nonce), a proxy's unsigned error
page (``status`` with ``sign="none"``), a server that dribbles its answer
(``dribble``), an answer of 100 MB (``huge``), and a hall that opens a
session on every poll (``session``).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import uuid
from typing import Any

from hall.contract import EVALUATIONS_PATH, is_int

FAULT_KINDS = ("status", "latency", "reset_after_commit", "malformed", "reset", "rogue", "dribble", "huge",
               "session")
#: How an answer is signed: as the hall does, not at all, with another key, or echoing another nonce.
SIGN_MODES = ("hall", "none", "wrong_key", "other_nonce")
#: ``path`` that makes a fault match every request.
EVERY_PATH = "*"
#: What a ``malformed`` fault answers unless given a ``body``: a proxy's page, not JSON.
DEFAULT_MALFORMED_BODY = b"<html>502 Bad Gateway</html>"
#: The size of a ``huge`` answer unless given one.
DEFAULT_HUGE = 100 * 1024 * 1024


@dataclasses.dataclass
class Fault:
    """One injected fault; ``count`` requests are left to hit."""

    kind: str
    count: int
    #: ``None``: ``POST /api/v1/evaluations``; ``"*"``: every request; else this path, any method.
    path: str | None
    params: dict[str, Any]

    def matches(self, method: str, path: str) -> bool:
        """Whether a request for ``method path`` (no query) hits this fault."""
        if self.path is None:
            return method == "POST" and path == EVALUATIONS_PATH
        return self.path in (EVERY_PATH, path)

    @property
    def seconds(self) -> float:
        """How long a ``latency`` fault holds the request, or a ``dribble`` waits between bytes."""
        return float(self.params.get("seconds", 1.0))

    @property
    def sign(self) -> str:
        """How the answer is signed (:data:`SIGN_MODES`); a ``rogue`` cannot sign as the hall."""
        return str(self.params.get("sign", "none" if self.kind == "rogue" else "hall"))

    def status_answer(self) -> tuple[int, Any, dict[str, str]]:
        """``(status, payload, headers)`` a ``status`` fault answers with."""
        status: int = self.params.get("status", 503)
        headers = {}
        if self.params.get("retry_after") is not None:
            headers[str(self.params.get("retry_after_header", "Retry-After"))] = str(self.params["retry_after"])
        return status, self.params.get("body", {"error": f"injected {status}"}), headers

    def malformed_body(self) -> Any:
        """What a ``malformed`` fault answers with 200 instead of the real answer."""
        return self.params.get("body", DEFAULT_MALFORMED_BODY)

    @property
    def huge_size(self) -> int:
        return int(self.params.get("size", DEFAULT_HUGE))


class FaultPlan:
    """The queue of injected faults, safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._nonces: collections.deque[str] = collections.deque(maxlen=2)

    def note_nonce(self, nonce: str) -> None:
        """Remember a request's nonce, for an answer that echoes another request's (``other_nonce``)."""
        with self._lock:
            if nonce and (not self._nonces or self._nonces[-1] != nonce):
                self._nonces.append(nonce)

    def other_nonce(self, nonce: str) -> str:
        """A nonce of another request (the one before), as a replayed answer would echo."""
        with self._lock:
            others = [n for n in self._nonces if n != nonce]
        return others[-1] if others else uuid.uuid4().hex

    def inject(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Queue a fault for the next ``count`` matching requests.

        See :meth:`HallServer.inject() <hall.HallServer.inject>` for the kinds.

        Raises:
            ValueError: an unknown ``kind`` or ``sign``, or a ``count`` below 1.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not is_int(count) or count < 1:
            raise ValueError("count must be a positive integer")
        fault = Fault(kind, count, path, params)
        if fault.sign not in SIGN_MODES:
            raise ValueError(f"sign must be one of {', '.join(SIGN_MODES)}")
        with self._lock:
            self._faults.append(fault)

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
