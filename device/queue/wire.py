"""The uplink's wire contract v2: everything both ends of a request agree on.

Paths, header names, the bytes of a JSON body, how a request is signed and
an answer verified, how much of an answer the device reads, and how a
``Retry-After`` is read all live here and nowhere else (DESIGN.md "Uplink
contract v2"). The uploader, the hall link and the console's uplink test
build every path and header through it, and
:class:`~device.queue.transport.HttpTransport` is the one place that signs,
verifies and reads answers.

Both directions are signed with HTTP Message Signatures (RFC 9421, through
the maintained ``http-message-signatures`` library), ``hmac-sha256`` under
the device key, and every message carries ``Content-Digest`` (RFC 9530):

- a request's signature ``sig1`` covers ``"@method" "@target-uri"
  "content-digest"`` with ``created`` (the device's idea of the time),
  ``nonce`` (128 random bits), ``keyid`` (the device id) and ``alg``;
- an answer's signature covers ``"@status" "content-digest"
  "request-nonce"``, with ``keyid="hall"``, and its ``Request-Nonce`` header
  echoes the request's nonce. An answer is this request's answer only if it
  verifies under the device key *and* echoes this request's nonce: the nonce
  makes it fresh, so its ``created`` is not judged by the device's clock
  (which may read 1970) but taken as the hall's time (:attr:`Verdict.hall_time`).

Header names are matched case-insensitively everywhere (HTTP says so, and a
proxy may well send ``retry-after``).

The stand-in hall server (``sim/``) imports nothing from ``device/`` and
keeps its own copy of the server's side; ``tests/test_wire.py`` holds the
two together.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import math
import secrets
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from device.config import Secret
from device.keys import Ed25519PrivateKey, Ed25519PublicKey

#: The version prefix every path starts with.
API_PREFIX = "/api/v1"
#: ``POST`` a batch of events.
EVALUATIONS_PATH = API_PREFIX + "/evaluations"

# --- header names ------------------------------------------------------------

CONTENT_TYPE = "Content-Type"
CONTENT_LENGTH = "Content-Length"
CONTENT_DIGEST = "Content-Digest"
SIGNATURE_INPUT = "Signature-Input"
SIGNATURE = "Signature"
#: On every answer: the nonce of the request it answers.
REQUEST_NONCE = "Request-Nonce"
ETAG = "ETag"
IF_NONE_MATCH = "If-None-Match"
RETRY_AFTER = "Retry-After"
ACCEPT_ENCODING = "Accept-Encoding"
#: The media type of every body, both ways.
JSON_TYPE = "application/json; charset=utf-8"

# --- signatures --------------------------------------------------------------

#: The label of the one signature on every message.
LABEL = "sig1"
#: RFC 9421's name of the shared-key algorithm (v2), carried as ``alg``.
ALGORITHM = algorithms.HMAC_SHA256.algorithm_id
#: The ``keyid`` of every answer the hall signs.
HALL_KEY_ID = "hall"
#: What a request's signature covers.
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest")
#: What an answer's signature covers.
ANSWER_COMPONENTS = ("@status", "content-digest", "request-nonce")
#: Random bytes in a request's nonce (128 bits, as the contract asks at least).
NONCE_BYTES = 16
#: How far a request's ``created`` may be from the hall's clock, either way.
WINDOW_S = 300
#: The ``error`` of a verified 401 that refuses a request for its ``created``.
STALE_REQUEST = "stale_request"

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
    """The exact bytes sent (and digested) for a JSON body: compact UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(body: bytes) -> Any:
    """The JSON value of an answer's body; None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # an HTML error page, a truncated answer, bad UTF-8
        return None


def evaluations_body(device_id: str, sent_at: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of ``POST /api/v1/evaluations``."""
    return {"device_id": device_id, "sent_at": sent_at, "events": events}


@dataclass(frozen=True)
class Head:
    """The highest gapless ``seq`` the hall holds for the device, and that event's ``hash``."""

    seq: int
    hash: str


@dataclass(frozen=True)
class EvaluationsAnswer:
    """What a 200 to a batch says about each event id, and the hall's head."""

    accepted: tuple[str, ...]
    duplicate: tuple[str, ...]
    #: ``{id: error}`` for events the server will never take as they are.
    rejected: Mapping[str, str]
    #: None when the hall holds nothing of this device yet.
    head: Head | None = None

    @classmethod
    def from_json(cls, data: Any) -> EvaluationsAnswer:
        """Read the answer; ``ValueError`` when its shape is not the contract's."""
        try:
            accepted = tuple(str(i) for i in data["accepted"])
            duplicate = tuple(str(i) for i in data["duplicate"])
            rejected = {str(r["id"]): str(r.get("error", "rejected")) for r in data.get("rejected", [])}
            head = _head(data.get("head"))
        except (TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"malformed evaluations answer ({type(e).__name__}: {e})") from None
        return cls(accepted, duplicate, rejected, head)


def _head(value: Any) -> Head | None:
    if value is None:
        return None
    seq, digest = value["seq"], value["hash"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(digest, str):
        raise TypeError("head must be {seq: int, hash: str}")
    return Head(seq, digest) if seq > 0 else None


def conditional(etag: str) -> dict[str, str]:
    """Headers that make a GET conditional on ``etag`` (none without one)."""
    return {IF_NONE_MATCH: etag} if etag else {}


def error_code(data: Any) -> str:
    """The ``error`` a JSON answer names, or ``""``."""
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else ""


# --- signing and verification ---------------------------------------------------------

@dataclass
class _Message:
    """What the library reads of a request (method, URL, headers) or an answer (status, headers)."""

    headers: Any
    method: str = ""
    url: str = ""


@dataclass
class _AnswerMessage:
    status_code: int
    headers: Any


class _Fields:
    """Header field lines as received (repeated names kept), for verification only."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> Iterable[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)

    def get(self, name: str, default: str = "") -> str:
        values = [v for n, v in self._lines if n.lower() == name.lower()]
        return ", ".join(values) if values else default


class _AnswerVerifier(HTTPMessageVerifier):
    """Verifies answers without judging ``created`` by the device's clock.

    An answer is fresh because it echoes the nonce of a request made just
    now, not because of its ``created``: that is the hall's time, which a
    device without a synchronised clock is about to learn from it.
    """

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        created = sig_input.params.get("created")
        if type(created) is not int:
            raise InvalidSignature('an answer must carry its "created" time as an integer')


def key_bytes(key: Secret | str) -> bytes:
    """The HMAC key: the device key's UTF-8 bytes."""
    return (key.reveal() if isinstance(key, Secret) else key).encode("utf-8")


def new_nonce() -> str:
    """128 random bits, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(NONCE_BYTES)


@dataclass(frozen=True)
class SignedRequest:
    """The headers that authenticate one request, and what its answer must match."""

    headers: dict[str, str] = field(repr=False)
    nonce: str = ""
    #: Unix seconds the request says it was made at.
    created: int = 0


#: What signs a request: the shared key (``hmac-sha256``) or the device's private key (``ed25519``).
SigningKey = Secret | str | Ed25519PrivateKey
#: What verifies an answer: the shared key, or the hall's public key.
VerifyingKey = Secret | str | Ed25519PublicKey



def sign_request(key: SigningKey, device_id: str, method: str, url: str, body: bytes,
                 created: float, nonce: str | None = None) -> SignedRequest:
    """Sign one request as the contract says.

    Args:
        key: the shared device key (``hmac-sha256``) or the device's
            Ed25519 private key (``ed25519``).
        device_id: who signs (``keyid``).
        method: ``GET`` or ``POST``.
        url: the request's target URI: scheme, authority, path and query,
            exactly as sent (:func:`target_uri`).
        body: the exact bytes sent (``b""`` for none; digested all the same).
        created: Unix time of the request by the device's best clock (the
            hall's time where the device has nothing better).
        nonce: a fresh nonce (tests pass their own).

    Returns:
        :class:`SignedRequest`: its ``headers`` (``Content-Digest``,
        ``Signature-Input``, ``Signature``) go with the request; keep it to
        verify the answer with :func:`verify_answer`.
    """
    nonce = nonce or new_nonce()
    message = _Message(headers={}, method=method.upper(), url=url)
    if isinstance(key, Ed25519PrivateKey):
        algorithm: Any = algorithms.ED25519
        private: Any = key
    else:
        algorithm, private = algorithms.HMAC_SHA256, key_bytes(key)
    signer = HTTPMessageSigner(signature_algorithm=algorithm,
                               key_resolver=MappingKeyResolver(public_keys={}, private_keys={device_id: private}))
    when = datetime.datetime.fromtimestamp(int(created), datetime.UTC)
    signer.sign(message, key_id=device_id, created=when, nonce=nonce, label=LABEL,
                covered_component_ids=REQUEST_COMPONENTS, body=body)
    return SignedRequest(dict(message.headers), nonce, int(created))


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is the hall's answer to this request, and the hall's time if so."""

    ok: bool
    #: ``created`` of a verified answer: Unix seconds by the hall's clock.
    hall_time: int | None = None
    #: Why it did not verify (for the log and the fault's message).
    why: str = ""


def verify_answer(key: VerifyingKey, request: SignedRequest, status: int,
                  headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes) -> Verdict:
    """Whether an answer really comes from the hall server, for this request.

    The answer must carry one signature, made with the shared device key
    (``hmac-sha256``) or the hall's Ed25519 key (``ed25519``: ``key`` is
    then the hall's public key) under ``keyid="hall"``, covering ``@status``, ``Content-Digest`` (which must
    match ``body``) and ``Request-Nonce`` (which must be this request's
    nonce). Anything else (no signature, another key, a digest of other
    bytes, another request's nonce, a header the library cannot parse) is
    not an answer.

    Args:
        key: the device key.
        request: what :func:`sign_request` returned for the request.
        status, headers, body: the answer as read (body within the limit);
            ``headers`` as field lines or a mapping.
    """
    lines = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    fields = _Fields(lines)
    echoed = fields.get(REQUEST_NONCE)
    if echoed != request.nonce:
        return Verdict(False, why="the answer does not echo this request's nonce" if echoed
                       else "the answer carries no Request-Nonce")
    if isinstance(key, Ed25519PublicKey):
        algorithm: Any = algorithms.ED25519
        public: Any = key
    else:
        algorithm, public = algorithms.HMAC_SHA256, key_bytes(key)
    verifier = _AnswerVerifier(signature_algorithm=algorithm,
                               key_resolver=MappingKeyResolver(public_keys={HALL_KEY_ID: public}, private_keys={}))
    try:
        (result,) = verifier.verify(_AnswerMessage(status, fields), require_components=ANSWER_COMPONENTS,
                                    body=body, max_age=None)
    except Exception as e:  # InvalidSignature, and anything a hostile header makes the parser raise
        return Verdict(False, why=f"the answer's signature does not verify ({_short(e)})")
    # See what is signed: the nonce and time trusted are the ones the signature covers.
    if result.covered_components.get('"request-nonce"') != request.nonce:
        return Verdict(False, why="the signed Request-Nonce is not this request's nonce")
    if result.parameters.get("keyid") != HALL_KEY_ID:
        return Verdict(False, why="the answer is not signed as the hall")
    alg = result.parameters.get("alg")
    if alg is not None and alg != algorithm.algorithm_id:
        return Verdict(False, why=f"the answer is signed with {alg}, not {algorithm.algorithm_id}")
    created = result.parameters.get("created")
    return Verdict(True, hall_time=created if isinstance(created, int) else None)


def target_uri(base_url: str, path: str) -> str:
    """The ``@target-uri`` of a request for ``path`` on the server at ``base_url``."""
    return base_url.rstrip("/") + path


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 160 else text[:160] + "…"


# --- Retry-After -------------------------------------------------------------------------

def header(headers: Iterable[tuple[str, str]] | Mapping[str, str], name: str) -> str:
    """The value of header ``name``, however it is spelt (``""`` when absent)."""
    lines = headers.items() if isinstance(headers, Mapping) else headers
    values = [value for key, value in lines if key.lower() == name.lower()]
    return ", ".join(values)


def retry_after(headers: Iterable[tuple[str, str]] | Mapping[str, str], now: datetime.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, however its name is spelt.

    Args:
        headers: the answer's headers (a mapping or field lines; looked up
            case-insensitively).
        now: the wall clock, for the HTTP-date form.

    Returns:
        Delta-seconds or the time until the HTTP date (never negative), or
        None when there is no such header or it cannot be read.
    """
    value = header(headers, RETRY_AFTER).strip()
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
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())
