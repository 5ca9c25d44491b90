"""Who sent a request, and the hall's signature on its answers: contract v3 (RFC 9421).

Both directions are HTTP Message Signatures made with the maintained
``http-message-signatures`` library:

- a request is accepted only if its one signature verifies under a key of
  the device its ``keyid`` names (``ed25519`` under one of its registered
  public keys, both during a rotation; or ``hmac-sha256`` under its shared
  key), covers ``"@method" "@target-uri" "content-digest"`` (the digest
  matching the body) with ``@target-uri`` the hall's own public URL, carries
  ``created`` within :data:`WINDOW_S` seconds of the hall's clock either way,
  and a nonce of at least 128 bits not seen within that window
  (:class:`Authenticator`); else 401 with the reason;
- only an answer to a request that verified is signed (:func:`sign_answer`),
  over ``"@status" "content-digest" "request-nonce"`` with ``keyid="hall"``
  and ``created`` = the hall's time, echoing the request's nonce in
  ``Request-Nonce``: with the hall's own Ed25519 key when the device signed
  with ``ed25519``, with the shared key when it signed with
  ``hmac-sha256``. A stale or replayed but verified request gets a signed
  401, so the device can learn the hall's time from it. Every other answer
  (a body the hall could not read, a bad or unknown key, no signature) is
  unsigned: nothing the hall did not verify can be made to look like the
  hall's word on that request.

This is the only place the hall reads signature headers. It imports nothing
from ``device/``; :func:`sign_request` lets tests and tools speak v3 to the
hall without the device's code.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import http_sf
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from hall.contract import DEVICE_ID_RULE, BadRequest, is_device_id

logger = logging.getLogger(__name__)

LABEL = "sig1"
ALGORITHM = algorithms.HMAC_SHA256.algorithm_id
ED25519_ALGORITHM = algorithms.ED25519.algorithm_id
HALL_KEY_ID = "hall"
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest")
ANSWER_COMPONENTS = ("@status", "content-digest", "request-nonce")
REQUEST_NONCE = "Request-Nonce"
#: How far a request's ``created`` may be from the hall's clock, either way.
WINDOW_S = 300
#: 128 bits in URL-safe base64; hex takes 32.
MIN_NONCE_CHARS = 22
#: Nonces remembered at most for one device within the window (33 requests a second); past it that
#: device, and only it, is answered 429 rather than the hall forgetting one of its nonces.
MAX_NONCES_PER_DEVICE = 10_000

# The ``error`` of each 401.
UNSIGNED = "unsigned_request"
UNKNOWN_DEVICE = "unknown_device"
BAD_SIGNATURE = "bad_signature"
STALE = "stale_request"
REPLAYED = "replayed_request"
WEAK_NONCE = "weak_nonce"
BAD_DEVICE_ID = "bad_device_id"
#: The ``error`` of a 429: this device sent more than its share.
BUSY = "busy"

_NONCE = re.compile(r"[A-Za-z0-9_\-+/=.~]+")


class Refused(BadRequest):
    """401 (or 429): the request is not accepted; ``code`` says why.

    Args:
        code: the answer's ``error``.
        message: the reason in words.
        status: 401 unless the device sent more than its share (429).
        verified: set when the signature verified (stale, replayed, busy): the answer is signed.
        retry_after: seconds, for a 429.
    """

    def __init__(self, code: str, message: str, status: int = 401, verified: Verified | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, status)
        self.code = code
        self.verified = verified
        self.retry_after = retry_after


@dataclass(frozen=True)
class Claim:
    """What a request's ``Signature-Input`` says, unchecked: for echoing and choosing the answer's key."""

    keyid: str = ""
    nonce: str = ""
    alg: str = ""


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
    keyid, nonce, alg = params.get("keyid"), params.get("nonce"), params.get("alg")
    return Claim(keyid if isinstance(keyid, str) else "",
                 nonce if isinstance(nonce, str) and len(nonce) <= 200 else "",
                 alg if isinstance(alg, str) else "")


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
    """Resolves every ``keyid`` to the one key being tried."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def resolve_public_key(self, key_id: str) -> Any:
        return self.key

    def resolve_private_key(self, key_id: str) -> Any:
        raise KeyError(key_id)


class _RequestVerifier(HTTPMessageVerifier):
    """Leaves ``created`` to :class:`Authenticator`, which answers a stale request apart (and signed)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if type(sig_input.params.get("created")) is not int:
            raise InvalidSignature('a request must carry "created" as an integer')


@dataclass(frozen=True)
class Verified:
    """A request whose signature and ``Content-Digest`` verified: the hall may sign its answer.

    ``secret`` is the device's shared key when it signed with ``hmac-sha256``
    (the answer is signed with it), ``None`` for ``ed25519`` (the answer is
    signed with the hall's own key).
    """

    device_id: str
    nonce: str
    algorithm: str
    created: int
    #: Never in a repr: a Verified may end up in a log line.
    secret: str | None = field(default=None, repr=False)


class NonceStore(Protocol):
    """Where the nonces seen within the window are kept (durably, per device: :mod:`hall.limits`)."""

    def add(self, device_id: str, nonce: str, created: int, now: float) -> bool:
        """Remember a nonce; False if it was seen within the window. May raise :class:`Refused` (busy)."""
        ...


class NonceCache:
    """The nonces seen within the window, per device, in memory: bounded per device, thread-safe.

    A nonce is kept until its request's ``created`` is out of the window, so
    it is refused for as long as the request could pass the time check. One
    device reaching ``per_device`` is refused (429); others are not.

    Args:
        window_s: the window of ``created`` either way.
        per_device: the most nonces remembered for one device.
    """

    def __init__(self, window_s: float = WINDOW_S, per_device: int = MAX_NONCES_PER_DEVICE) -> None:
        self.window_s = window_s
        self.per_device = per_device
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, int]] = {}

    def add(self, device_id: str, nonce: str, created: int, now: float) -> bool:
        with self._lock:
            seen = self._seen.setdefault(device_id, {})
            if nonce in seen:
                return False
            if len(seen) >= self.per_device:
                for old in [n for n, c in seen.items() if c < now - self.window_s]:
                    del seen[old]
                if len(seen) >= self.per_device:
                    raise Refused(BUSY, "too many requests from this device within the window; try again later",
                                  429)
            seen[nonce] = created
            return True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._seen.values())


@dataclass(frozen=True)
class Credentials:
    """What a device may sign with: its shared key (``hmac-sha256``) and/or its public keys (``ed25519``)."""

    secret: str | None = None
    public_keys: tuple[ed25519.Ed25519PublicKey, ...] = ()

    def __bool__(self) -> bool:
        return self.secret is not None or bool(self.public_keys)


class Authenticator:
    """Checks that a request was signed, just now and once, by the device it names.

    Args:
        key_for: device id -> its shared key (``hmac-sha256``), or ``None``.
        clock: the hall's clock (Unix seconds).
        window_s: how far ``created`` may be from ``clock()``, either way.
        nonces: where seen nonces are kept; by default in memory.
        public_keys: device id -> its registered Ed25519 public keys. A
            device with one takes ``ed25519`` signatures with any of them
            (both keys during a rotation) and no shared default key.
        shared_key_for: device id -> a key it may use only when it has no
            public key (the simulator's one key for every device).
    """

    def __init__(self, key_for: Callable[[str], str | None], clock: Callable[[], float] = time.time,
                 window_s: float = WINDOW_S, nonces: NonceStore | None = None,
                 public_keys: Callable[[str], Sequence[ed25519.Ed25519PublicKey]] | None = None,
                 shared_key_for: Callable[[str], str | None] | None = None) -> None:
        self.key_for = key_for
        self.clock = clock
        self.window_s = window_s
        self.nonces: NonceStore = nonces if nonces is not None else NonceCache(window_s)
        self.public_keys = public_keys
        self.shared_key_for = shared_key_for

    def credentials(self, device_id: str) -> Credentials:
        """What ``device_id`` may sign with (empty for a device the hall does not know)."""
        if not is_device_id(device_id):
            return Credentials()
        public = tuple(self.public_keys(device_id)) if self.public_keys else ()
        secret = self.key_for(device_id)
        if secret is None and not public and self.shared_key_for is not None:
            secret = self.shared_key_for(device_id)
        return Credentials(secret, public)

    def authenticate(self, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes) -> str:
        """The device that signed this request (see :meth:`verify`)."""
        return self.verify(method, target_uri, headers, body).device_id

    def verify(self, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes) -> Verified:
        """Check a request's signature, digest, time and nonce.

        Args:
            method: the request's method.
            target_uri: the hall's public URL with the request's path and
                query (never rebuilt from ``Host``).
            headers: the request's field lines.
            body: the raw body, as digested.

        Returns:
            The verified request.

        Raises:
            Refused: 401 with the reason (``unsigned_request``,
                ``unknown_device``, ``bad_signature``, ``weak_nonce``,
                ``stale_request``, ``replayed_request``) or 429 (``busy``:
                this device sent too many within the window). Only the
                stale, replayed and busy refusals carry ``verified``: the
                signature was good, so the answer is signed.
        """
        lines = list(headers)
        claimed = claim(lines)
        if not any(n.lower() == "signature" for n, _ in lines) or not claimed.keyid:
            raise Refused(UNSIGNED, "the request carries no RFC 9421 signature")
        if not is_device_id(claimed.keyid):
            raise Refused(BAD_DEVICE_ID, f"keyid is not a device id: {DEVICE_ID_RULE}")
        credentials = self.credentials(claimed.keyid)
        if not credentials:
            raise Refused(UNKNOWN_DEVICE, "unknown device")
        request = _Request(method.upper(), target_uri, _Lines(lines))
        if claimed.alg == ED25519_ALGORITHM and credentials.public_keys:
            tries: list[tuple[Any, Any, str | None]] = [(algorithms.ED25519, k, None)
                                                        for k in credentials.public_keys]
        elif claimed.alg == ALGORITHM and credentials.secret is not None:
            tries = [(algorithms.HMAC_SHA256, credentials.secret.encode("utf-8"), credentials.secret)]
        else:
            held = "ed25519" if credentials.public_keys else ALGORITHM
            raise Refused(BAD_SIGNATURE, f'the signature must say alg="{held}" for this device')
        result = None
        error: BaseException | None = None
        secret = None
        for algorithm, key, candidate in tries:
            verifier = _RequestVerifier(signature_algorithm=algorithm, key_resolver=_Keys(key))
            try:
                (result,) = verifier.verify(request, require_components=REQUEST_COMPONENTS, body=body, max_age=None)
            except Exception as e:  # InvalidSignature, and anything a hostile header makes the library raise
                error = e
                continue
            secret = candidate
            break
        if result is None:
            logger.warning("bad signature from device %s: %s", claimed.keyid, _short(error or ValueError()))
            raise Refused(BAD_SIGNATURE, "bad signature")
        params = result.parameters
        device_id = str(params.get("keyid"))
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < MIN_NONCE_CHARS or not _NONCE.fullmatch(nonce):
            raise Refused(WEAK_NONCE, f"the signature needs a nonce of at least {MIN_NONCE_CHARS} characters")
        created = params["created"]
        if not isinstance(created, int):
            raise Refused(BAD_SIGNATURE, 'a request must carry "created" as an integer')
        verified = Verified(device_id, nonce, str(params.get("alg")), created, secret)
        now = self.clock()
        if abs(now - created) > self.window_s:
            logger.warning("stale request from device %s: created %s, hall time %d", device_id, created, now)
            raise Refused(STALE, f"created is more than {self.window_s:g} s from the hall's time", verified=verified)
        try:
            fresh = self.nonces.add(device_id, nonce, created, now)
        except Refused as busy:
            busy.verified = verified
            raise
        if not fresh:
            logger.warning("replayed request from device %s", device_id)
            raise Refused(REPLAYED, "this request was seen before", verified=verified)
        return verified


def _signer(key: str | ed25519.Ed25519PrivateKey, key_id: str) -> HTTPMessageSigner:
    """A signer for ``key_id``: ``hmac-sha256`` with a shared key (text), ``ed25519`` with a private key."""
    if isinstance(key, str):
        algorithm: Any = algorithms.HMAC_SHA256
        private: Any = key.encode("utf-8")
    else:
        algorithm, private = algorithms.ED25519, key
    return HTTPMessageSigner(signature_algorithm=algorithm,
                             key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private}))


def sign_answer(key: str | ed25519.Ed25519PrivateKey, status: int, headers: dict[str, str], body: bytes,
                nonce: str, created: int, key_id: str = HALL_KEY_ID) -> None:
    """Add ``Content-Digest``, ``Request-Nonce`` and the hall's signature to an answer's ``headers``.

    ``key`` is the device's shared key (``hmac-sha256``) or the hall's own Ed25519 private key.
    """
    headers[REQUEST_NONCE] = nonce
    _signer(key, key_id).sign(_Answer(status, headers), key_id=key_id, label=LABEL,
                              covered_component_ids=ANSWER_COMPONENTS, body=body,
                              created=datetime.datetime.fromtimestamp(created, datetime.UTC))


def sign_request(key: str | ed25519.Ed25519PrivateKey, device_id: str, method: str, target_uri: str, body: bytes,
                 created: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """The headers that sign a request as a device does (for tests and tools).

    ``key`` is the shared key (``hmac-sha256``) or the device's Ed25519 private key (``ed25519``).

    Returns:
        ``Content-Digest``, ``Signature-Input`` and ``Signature``.
    """
    headers: dict[str, str] = {}
    when = datetime.datetime.fromtimestamp(int(time.time() if created is None else created), datetime.UTC)
    _signer(key, device_id).sign(_Request(method.upper(), target_uri, headers), key_id=device_id, created=when,
                                 nonce=nonce or secrets.token_urlsafe(16), label=LABEL,
                                 covered_component_ids=REQUEST_COMPONENTS, body=body)
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
        """The key of ``device_id`` (its own, else the shared one), or None for a device the hall does not know."""
        with self._lock:
            if self._file:
                self._reload()
            return self._keys.get(device_id, self._default) if device_id else None

    def own_key(self, device_id: str) -> str | None:
        """The shared key set for ``device_id`` itself (not the default), or None."""
        with self._lock:
            if self._file:
                self._reload()
            return self._keys.get(device_id)

    def default_key(self, device_id: str) -> str | None:
        """The one key for every device (simulator use), or None."""
        with self._lock:
            if self._file:
                self._reload()
            return self._default

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
