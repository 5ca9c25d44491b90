"""Who sent a request, and the hall's signature on every answer: contract v2 (RFC 9421).

Both directions are HTTP Message Signatures made with the maintained
``http-message-signatures`` library, ``hmac-sha256`` under the device's key:

- a request is accepted only if its one signature verifies under the key of
  the device its ``keyid`` names, covers ``"@method" "@target-uri"
  "content-digest"`` (the digest matching the body), carries ``created``
  within :data:`WINDOW_S` seconds of the hall's clock either way, and a
  nonce of at least 128 bits not seen within that window
  (:class:`Authenticator`); else 401 with the reason;
- every answer is signed over ``"@status" "content-digest"
  "request-nonce"`` with ``keyid="hall"`` and ``created`` = the hall's time,
  echoing the request's nonce in ``Request-Nonce`` (:func:`sign_answer`),
  401s for stale and replayed requests included, so the device can tell
  them from a captive portal and learn the hall's time from them. Only an
  answer to a request naming no known device goes unsigned: there is no key
  to sign it with.

This is the only place the hall reads signature headers. It imports nothing
from ``device/``; :func:`sign_request` lets tests and tools speak v2 to the
hall without the device's code.
"""

from __future__ import annotations

import collections
import datetime
import logging
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from sim.hall.contract import BadRequest

logger = logging.getLogger(__name__)

LABEL = "sig1"
ALGORITHM = algorithms.HMAC_SHA256.algorithm_id
HALL_KEY_ID = "hall"
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest")
ANSWER_COMPONENTS = ("@status", "content-digest", "request-nonce")
REQUEST_NONCE = "Request-Nonce"
#: How far a request's ``created`` may be from the hall's clock, either way.
WINDOW_S = 300
#: 128 bits in URL-safe base64; hex takes 32.
MIN_NONCE_CHARS = 22
#: Nonces remembered at most; past it the hall answers 503 rather than forget one within the window.
MAX_NONCES = 200_000

# The ``error`` of each 401.
UNSIGNED = "unsigned_request"
UNKNOWN_DEVICE = "unknown_device"
BAD_SIGNATURE = "bad_signature"
STALE = "stale_request"
REPLAYED = "replayed_request"
WEAK_NONCE = "weak_nonce"

_NONCE = re.compile(r"[A-Za-z0-9_\-+/=.~]+")


class Refused(BadRequest):
    """401 (or 503): the request is not authenticated; ``code`` says why.

    Args:
        code: the answer's ``error``.
        message: the reason in words.
        status: 401 unless the hall cannot take more requests (503).
    """

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message, status)
        self.code = code


@dataclass(frozen=True)
class Claim:
    """What a request's ``Signature-Input`` says, unchecked: for echoing and choosing the answer's key."""

    keyid: str = ""
    nonce: str = ""


def claim(headers: Iterable[tuple[str, str]]) -> Claim:
    """The ``keyid`` and ``nonce`` a request claims (``""`` where it names none or cannot be read)."""
    value = ", ".join(v for n, v in headers if n.lower() == "signature-input")
    if not value:
        return Claim()
    try:
        parsed: Any = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
        member = parsed.get(LABEL) or next(iter(parsed.values()))
        params: Any = member[1]
    except Exception:  # anything a hostile header makes the parser raise
        return Claim()
    keyid, nonce = params.get("keyid"), params.get("nonce")
    return Claim(keyid if isinstance(keyid, str) else "",
                 nonce if isinstance(nonce, str) and len(nonce) <= 200 else "")


@dataclass
class _Request:
    method: str
    url: str
    headers: Any


@dataclass
class _Answer:
    status_code: int
    headers: Any


class _Lines:
    """Field lines as received, repeated names kept (what the library reads)."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> Iterable[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Any:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._lines)


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, key_for: Callable[[str], str | None]) -> None:
        self.key_for = key_for

    def resolve_public_key(self, key_id: str) -> bytes | None:
        key = self.key_for(key_id)
        return key.encode("utf-8") if key else None

    def resolve_private_key(self, key_id: str) -> bytes:
        raise KeyError(key_id)


class _RequestVerifier(HTTPMessageVerifier):
    """Leaves ``created`` to :class:`Authenticator`, which answers a stale request apart (and signed)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if type(sig_input.params.get("created")) is not int:
            raise InvalidSignature('a request must carry "created" as an integer')


class NonceCache:
    """The nonces seen within the window, per device; thread-safe and bounded.

    Args:
        window_s: how long a nonce is remembered (the window of ``created``
            either way, so twice it covers every request that could still pass).
        max_entries: the most remembered; :meth:`add` refuses past it.
    """

    def __init__(self, window_s: float = WINDOW_S, max_entries: int = MAX_NONCES) -> None:
        self.keep_s = 2 * window_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._order: collections.deque[tuple[float, tuple[str, str]]] = collections.deque()

    def add(self, keyid: str, nonce: str, now: float) -> bool:
        """Remember a nonce; False if it was seen within the window.

        Raises:
            Refused: 503 when the cache is full of nonces still in the window.
        """
        item = (keyid, nonce)
        with self._lock:
            while self._order and self._order[0][0] <= now - self.keep_s:
                self._seen.discard(self._order.popleft()[1])
            if item in self._seen:
                return False
            if len(self._seen) >= self.max_entries:
                raise Refused("busy", "too many requests within the window; try again later", 503)
            self._seen.add(item)
            self._order.append((now, item))
            return True

    def __len__(self) -> int:
        return len(self._seen)


class Authenticator:
    """Checks that a request was signed, just now and once, by the device it names.

    Args:
        key_for: device id -> its key, or ``None`` for an unknown device.
        clock: the hall's clock (Unix seconds).
        window_s: how far ``created`` may be from ``clock()``, either way.
    """

    def __init__(self, key_for: Callable[[str], str | None], clock: Callable[[], float] = time.time,
                 window_s: float = WINDOW_S) -> None:
        self.key_for = key_for
        self.clock = clock
        self.window_s = window_s
        self.nonces = NonceCache(window_s)
        self._verifier = _RequestVerifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_Keys(key_for))

    def authenticate(self, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes) -> str:
        """The device that signed this request.

        Args:
            method: the request's method.
            target_uri: ``scheme://host[:port]/path?query`` as the request reached the hall.
            headers: the request's field lines.
            body: the raw body, as digested.

        Returns:
            The authenticated device id (the signature's ``keyid``).

        Raises:
            Refused: 401 with the reason (``unsigned_request``,
                ``unknown_device``, ``bad_signature``, ``weak_nonce``,
                ``stale_request``, ``replayed_request``).
        """
        lines = list(headers)
        claimed = claim(lines)
        if not any(n.lower() == "signature" for n, _ in lines) or not claimed.keyid:
            raise Refused(UNSIGNED, "the request carries no RFC 9421 signature")
        if self.key_for(claimed.keyid) is None:
            raise Refused(UNKNOWN_DEVICE, "unknown device")
        try:
            (result,) = self._verifier.verify(_Request(method.upper(), target_uri, _Lines(lines)),
                                              require_components=REQUEST_COMPONENTS, body=body, max_age=None)
        except Exception as e:  # InvalidSignature, and anything a hostile header makes the library raise
            logger.warning("bad signature from device %s: %s", claimed.keyid, _short(e))
            raise Refused(BAD_SIGNATURE, "bad signature") from None
        params = result.parameters
        device_id = str(params.get("keyid"))
        nonce = params.get("nonce")
        if params.get("alg") != ALGORITHM:
            raise Refused(BAD_SIGNATURE, f'the signature must say alg="{ALGORITHM}"')
        if not isinstance(nonce, str) or len(nonce) < MIN_NONCE_CHARS or not _NONCE.fullmatch(nonce):
            raise Refused(WEAK_NONCE, f"the signature needs a nonce of at least {MIN_NONCE_CHARS} characters")
        now = self.clock()
        created = params["created"]
        if not isinstance(created, int) or abs(now - created) > self.window_s:
            logger.warning("stale request from device %s: created %s, hall time %d", device_id, created, now)
            raise Refused(STALE, f"created is more than {self.window_s:g} s from the hall's time")
        if not self.nonces.add(device_id, nonce, now):
            logger.warning("replayed request from device %s", device_id)
            raise Refused(REPLAYED, "this request was seen before")
        return device_id


def sign_answer(key: str, status: int, headers: dict[str, str], body: bytes, nonce: str, created: int,
                key_id: str = HALL_KEY_ID) -> None:
    """Add ``Content-Digest``, ``Request-Nonce`` and the hall's signature to an answer's ``headers``."""
    headers[REQUEST_NONCE] = nonce
    signer = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256,
                               key_resolver=MappingKeyResolver(public_keys={},
                                                               private_keys={key_id: key.encode("utf-8")}))
    signer.sign(_Answer(status, headers), key_id=key_id, label=LABEL, covered_component_ids=ANSWER_COMPONENTS,
                body=body, created=datetime.datetime.fromtimestamp(created, datetime.UTC))


def sign_request(key: str, device_id: str, method: str, target_uri: str, body: bytes,
                 created: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """The headers that sign a request as a device does (for tests and tools).

    Returns:
        ``Content-Digest``, ``Signature-Input`` and ``Signature``.
    """
    import secrets

    headers: dict[str, str] = {}
    signer = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256,
                               key_resolver=MappingKeyResolver(public_keys={},
                                                               private_keys={device_id: key.encode("utf-8")}))
    when = datetime.datetime.fromtimestamp(int(time.time() if created is None else created), datetime.UTC)
    signer.sign(_Request(method.upper(), target_uri, headers), key_id=device_id, created=when,
                nonce=nonce or secrets.token_urlsafe(16), label=LABEL, covered_component_ids=REQUEST_COMPONENTS,
                body=body)
    return headers


def load_keys_file(path: str) -> tuple[dict[str, str], str | None]:
    """A key file: ``[devices]`` table of id = key, and an optional top-level ``default_key``.

    Returns:
        ``(device_keys, default_key)``.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not TOML of that shape.
    """
    with open(path, "rb") as f:
        data = tomllib.load(f)
    devices = data.get("devices", {})
    if not isinstance(devices, dict) or not all(isinstance(v, str) and v for v in devices.values()):
        raise ValueError(f"{path}: [devices] must map device ids to non-empty key strings")
    default = data.get("default_key")
    if default is not None and not (isinstance(default, str) and default):
        raise ValueError(f"{path}: default_key must be a non-empty string")
    return dict(devices), default


class KeyRing:
    """Device keys: a per-device table (optionally a key file, read again when it changes) and a shared key.

    With a shared ``default_key`` any device id may sign; the hall then
    still takes from a request only what speaks for the device its
    ``keyid`` names (its endpoints, its body, its events).

    Args:
        device_keys: device id -> key.
        default_key: the key of any device not in the table (simulator use).
        keys_file: a key file (:func:`load_keys_file`) whose table and
            default replace the given ones, re-read when its time stamp changes.
    """

    def __init__(self, device_keys: Mapping[str, str] | None = None, default_key: str | None = None,
                 keys_file: str | None = None) -> None:
        self._lock = threading.Lock()
        self._keys = dict(device_keys or {})
        self._default = default_key
        self._file = keys_file
        self._stamp: float | None = None
        if keys_file:
            self._reload()

    def _reload(self) -> None:
        import os

        assert self._file is not None
        try:
            stamp = os.stat(self._file).st_mtime
        except OSError as e:
            logger.error("key file %s: %s; keeping the keys held", self._file, e)
            return
        if stamp == self._stamp:
            return
        try:
            keys, default = load_keys_file(self._file)
        except (OSError, ValueError) as e:
            logger.error("key file %s not read: %s; keeping the keys held", self._file, e)
            return
        self._keys, self._default, self._stamp = keys, default, stamp
        logger.info("key file %s: %d devices%s", self._file, len(keys), ", and a shared key" if default else "")

    def key_for(self, device_id: str) -> str | None:
        """The key of ``device_id``, or None for a device the hall does not know."""
        with self._lock:
            if self._file:
                self._reload()
            return self._keys.get(device_id, self._default) if device_id else None

    def set_key(self, device_id: str, key: str) -> None:
        with self._lock:
            self._keys[device_id] = key

    @property
    def shared(self) -> bool:
        """Whether one shared key lets any device id sign."""
        return self._default is not None


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 160 else text[:160] + "…"
