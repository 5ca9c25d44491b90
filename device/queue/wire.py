"""The uplink's wire contract: everything both ends of a request agree on.

Paths, header names, the bytes of a JSON body, how a request is signed and
an answer verified, how much of an answer the device reads, and how a
``Retry-After`` is read all live here and nowhere else, so the next version
of the contract (RFC 9421 signatures both ways, DESIGN.md "Uplink contract
v2") is a change in this module. The uploader, the hall link and the
console's uplink test build every path and header through it, and
:class:`~device.queue.transport.HttpTransport` is the one place that signs,
verifies and reads answers.

This is contract **v1**: a request carries ``X-Device-Id`` and
``X-Signature: hex(HMAC-SHA256(device_key, body_bytes))``; answers are not
signed, so :func:`verify_answer` accepts every answer (see its note).

Header names are matched case-insensitively everywhere (HTTP says so, and a
proxy may well send ``retry-after``): answers' headers are a
``requests.structures.CaseInsensitiveDict``, and :func:`retry_after` takes
any mapping.

The stand-in hall server (``sim/``) imports nothing from ``device/`` and
keeps its own copy of the server's side; ``tests/test_wire.py`` holds the
two together.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import hmac
import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from requests.structures import CaseInsensitiveDict

from device.config import Secret

#: The version prefix every path starts with.
API_PREFIX = "/api/v1"
#: ``POST`` a batch of events.
EVALUATIONS_PATH = API_PREFIX + "/evaluations"

# --- header names ------------------------------------------------------------

DEVICE_ID = "X-Device-Id"
SIGNATURE = "X-Signature"
CONTENT_TYPE = "Content-Type"
CONTENT_LENGTH = "Content-Length"
ETAG = "ETag"
IF_NONE_MATCH = "If-None-Match"
RETRY_AFTER = "Retry-After"
#: The media type of every body, both ways.
JSON_TYPE = "application/json; charset=utf-8"

# --- limits ----------------------------------------------------------------------

#: The most of an evaluations answer the device reads (ids of a whole batch).
MAX_EVALUATIONS_ANSWER = 1 << 20
#: The most of any other answer (assignment, session, heartbeat).
MAX_ANSWER = 64 << 10


# --- paths -------------------------------------------------------------------------

def evaluations_path() -> str:
    """``/api/v1/evaluations``: where batches of events are posted."""
    return EVALUATIONS_PATH


def assignment_path(device_id: str) -> str:
    """``GET``: the window, staff, QR URL and reason tags assigned to ``device_id``."""
    return _device_path(device_id, "assignment")


def session_path(device_id: str, wait_s: float) -> str:
    """``GET``: long poll for a service session, answered within ``wait_s`` seconds."""
    return f"{_device_path(device_id, 'session')}?wait={wait_s:g}"


def heartbeat_path(device_id: str) -> str:
    """``POST``: the device's heartbeat."""
    return _device_path(device_id, "heartbeat")


def _device_path(device_id: str, action: str) -> str:
    # Quoted whole, "/" included: a device id never reaches another endpoint.
    return f"{API_PREFIX}/devices/{urllib.parse.quote(device_id, safe='')}/{action}"


def answer_limit(path: str) -> int:
    """How many bytes of the answer to a request for ``path`` the device reads at most."""
    return MAX_EVALUATIONS_ANSWER if path == EVALUATIONS_PATH else MAX_ANSWER


# --- bodies ---------------------------------------------------------------------------

def encode(obj: object) -> bytes:
    """The exact bytes sent (and signed) for a JSON body: compact UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(body: bytes) -> Any:
    """The JSON value of an answer's body; None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:  # an HTML error page, a truncated answer, bad UTF-8
        return None


def evaluations_body(device_id: str, sent_at: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of ``POST /api/v1/evaluations``."""
    return {"device_id": device_id, "sent_at": sent_at, "events": events}


@dataclass(frozen=True)
class EvaluationsAnswer:
    """What a 200 to a batch says about each event id."""

    accepted: tuple[str, ...]
    duplicate: tuple[str, ...]
    #: ``{id: error}`` for events the server will never take as they are.
    rejected: Mapping[str, str]

    @classmethod
    def from_json(cls, data: Any) -> EvaluationsAnswer:
        """Read the answer; ``ValueError`` when its shape is not the contract's."""
        try:
            accepted = tuple(str(i) for i in data["accepted"])
            duplicate = tuple(str(i) for i in data["duplicate"])
            rejected = {str(r["id"]): str(r.get("error", "rejected")) for r in data.get("rejected", [])}
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"malformed evaluations answer ({type(e).__name__}: {e})") from None
        return cls(accepted, duplicate, rejected)


def conditional(etag: str) -> dict[str, str]:
    """Headers that make a GET conditional on ``etag`` (none without one)."""
    return {IF_NONE_MATCH: etag} if etag else {}


# --- signing and verification ---------------------------------------------------------

def sign_request(key: Secret | str, device_id: str, method: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that authenticate one request.

    Args:
        key: the device key.
        device_id: who signs.
        method, path: the request's method and path with query (v1 does not
            sign them; v2 covers ``@method`` and ``@target-uri``).
        body: the exact bytes sent.

    Returns:
        Headers to send with the request; pass them to :func:`verify_answer`
        with the answer (v2 needs the request's nonce from them).
    """
    raw = key.reveal() if isinstance(key, Secret) else key
    signature = hmac.new(raw.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return {DEVICE_ID: device_id, SIGNATURE: signature}


def verify_answer(key: Secret | str, request_headers: Mapping[str, str], status: int,
                  headers: Mapping[str, str], body: bytes) -> bool:
    """Whether an answer really comes from the hall server, for this request.

    Contract v1 does not sign answers, so **this accepts every answer**: a
    rogue server or a captive portal is believed. Contract v2 (issue 10)
    verifies the answer's signature over ``@status``, ``Content-Digest`` and
    ``Request-Nonce`` here; the transport already treats ``False`` as no
    answer at all.

    Args:
        key: the device key.
        request_headers: what :func:`sign_request` returned for the request.
        status, headers, body: the answer as read (body within the limit).
    """
    return True


# --- Retry-After -------------------------------------------------------------------------

def retry_after(headers: Mapping[str, str], now: datetime.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, however its name is spelt.

    Args:
        headers: the answer's headers (any mapping; looked up case-insensitively).
        now: the wall clock, for the HTTP-date form.

    Returns:
        Delta-seconds or the time until the HTTP date (never negative), or
        None when there is no such header or it cannot be read.
    """
    if not isinstance(headers, CaseInsensitiveDict):
        headers = CaseInsensitiveDict(headers)
    value = (headers.get(RETRY_AFTER) or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())
