"""The seam between the device's uplink workers and whatever carries their words to the hall.

The uploader, its upkeep and the hall link speak to a :class:`HallClient`:
deliver a batch and learn which ids the hall acknowledged, which it named
as rejected (and why), which seqs it holds under other ids, and its head;
fetch the assignment; poll for a session; post a heartbeat. None of them
reads an HTTP status code. :class:`HttpHallClient` is the one
implementation on the device: it carries each call over a
:class:`~device.queue.transport.Transport` (signed HTTP, verified
answers) and turns statuses into these answers; the tests hold an
in-memory one.

What a client must promise (the uploader trusts nothing else):

- :meth:`HallClient.deliver` returns a :class:`Delivery` only for an answer
  that verified as the hall's answer to this very request; only a
  :class:`Delivery` can name an event ``rejected`` (a dead letter);
- a refusal of the whole request, whatever its status, is a
  :class:`Refusal`, which never costs an event;
- no answer at all is :class:`~device.errors.TransportError`, and an answer
  that does not verify is its subclass
  :class:`~device.errors.UnauthenticatedAnswer`.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from device.clock import Clocks
from device.config import Config, Secret
from device.errors import TransportError
from device.keys import ED25519, Ed25519Signing, device_keys, parse_public_key
from device.queue import wire
from device.queue.transport import NO_HALL_KEY, HttpTransport, Transport

logger = logging.getLogger(__name__)

#: ``Refusal.kind``: the request was too large: send fewer events per request.
TOO_LARGE = "too_large"
#: ``Refusal.kind``: the hall asks to wait (429/503 with ``Retry-After``).
WAIT = "wait"
#: ``Refusal.kind``: the hall refused the device's signature or the device (401/403).
AUTH = "auth"
#: ``Refusal.kind``: anything else (400, 5xx, 404 ...): back off and retry.
OTHER = "other"
#: ``rejected`` error that never makes a dead letter: the hall holds that seq under another id.
SEQ_TAKEN = "seq_taken"


@dataclass(frozen=True)
class Delivery:
    """The hall's verified word on a batch."""

    #: Ids the hall now holds (accepted now, or before: duplicates included).
    acknowledged: tuple[str, ...] = ()
    #: Of those, the ones it held already.
    duplicate: tuple[str, ...] = ()
    #: ``{id: error}`` the hall will never take as they are (dead letters); never ``seq_taken``.
    rejected: Mapping[str, str] = field(default_factory=dict)
    #: Ids whose seq the hall holds under another id: seal them again after :attr:`head`.
    seq_taken: tuple[str, ...] = ()
    #: The highest gapless seq the hall holds for the device, and its hash.
    head: wire.Head | None = None
    #: The hall's time the answer was signed at (Unix seconds), when known.
    hall_time: int | None = None


@dataclass(frozen=True)
class Refusal:
    """A verified refusal of the whole request: never costs an event.

    ``kind`` is one of :data:`TOO_LARGE`, :data:`WAIT`, :data:`AUTH`, :data:`OTHER`.
    """

    kind: str
    #: The HTTP status (0 when the carrier has none).
    status: int = 0
    #: Seconds the hall asked to wait, when it said.
    retry_after: float | None = None
    #: The hall's ``error`` code, or a short text, for the fault and the log.
    why: str = ""

    def describe(self) -> str:
        return f"{self.status}: the hall refused the request ({self.why or self.kind})"


@dataclass(frozen=True)
class AssignmentAnswer:
    """What the hall says about the device's assignment: ``data`` is None when unchanged or none."""

    data: Any = None
    etag: str = ""
    unchanged: bool = False


@dataclass(frozen=True)
class HeartbeatAnswer:
    """The hall's verified answer to a heartbeat."""

    ok: bool
    status: int = 200
    data: Any = None
    hall_time: int | None = None
    #: Why not ok: the hall's ``error`` or a short text.
    why: str = ""
    #: The hall refused the device's signature or the device (401/403).
    auth: bool = False


class HallRefused(TransportError):
    """The hall refused an assignment fetch or a session poll (a verified answer other than 200)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class HallClient(Protocol):
    """What the uplink workers need of the hall, whatever carries it."""

    def deliver(self, device_id: str, sent_at: str, events: list[dict[str, Any]]) -> Delivery | Refusal:
        """Post a batch; the hall's verified word on each event, or its refusal of the whole."""
        ...

    def assignment(self, device_id: str, etag: str) -> AssignmentAnswer:
        """The assignment, conditional on ``etag``; :class:`HallRefused` for a refusal."""
        ...

    def poll_session(self, device_id: str, wait_s: float) -> Any:
        """The open session (a dict) or None, held up to ``wait_s``; :class:`HallRefused` for a refusal."""
        ...

    def heartbeat(self, device_id: str, body: dict[str, Any]) -> HeartbeatAnswer:
        """Post the heartbeat."""
        ...

    def close(self) -> None:
        ...


class HttpHallClient:
    """:class:`HallClient` over a signed HTTP :class:`~device.queue.transport.Transport`.

    Args:
        transport: the transport (owned from now on: closed with this client).
    """

    def __init__(self, transport: Transport, clocks: Clocks | None = None) -> None:
        self.transport = transport
        self.clocks = clocks

    @property
    def faults(self) -> tuple[str, ...]:
        """The transport's standing faults (plain HTTP allowed, TLS unverified ...)."""
        return tuple(getattr(self.transport, "faults", ()))

    @property
    def base_url(self) -> str:
        return str(getattr(self.transport, "base_url", ""))

    @property
    def algorithm(self) -> str:
        """The request signature in use: ``"ed25519"`` or ``"hmac-sha256"``."""
        return str(getattr(self.transport, "algorithm", ""))

    def use_clocks(self, clocks: Clocks) -> None:
        self.clocks = clocks
        use = getattr(self.transport, "use_clocks", None)
        if use is not None:
            use(clocks)

    def deliver(self, device_id: str, sent_at: str, events: list[dict[str, Any]]) -> Delivery | Refusal:
        reply = self.transport.request("POST", wire.evaluations_path(),
                                       wire.evaluations_body(device_id, sent_at, events))
        if reply.status != 200:
            now = self.clocks.wall() if self.clocks is not None else datetime.datetime.now(datetime.UTC)
            return refusal(reply.status, reply.data, reply.text, reply.headers, now)
        try:
            answer = wire.EvaluationsAnswer.from_json(reply.data)
        except ValueError as e:
            # Verified but not the contract's shape: a refusal like any other, never a dead letter.
            return Refusal(OTHER, 200, why=f"malformed answer ({e})")
        rejected = {i: error for i, error in answer.rejected.items() if error != SEQ_TAKEN}
        taken = tuple(i for i, error in answer.rejected.items() if error == SEQ_TAKEN)
        return Delivery(acknowledged=answer.accepted + answer.duplicate, duplicate=answer.duplicate,
                        rejected=rejected, seq_taken=taken, head=answer.head, hall_time=reply.hall_time)

    def assignment(self, device_id: str, etag: str) -> AssignmentAnswer:
        reply = self.transport.request("GET", wire.assignment_path(device_id), headers=wire.conditional(etag))
        if reply.status == 304:
            return AssignmentAnswer(etag=etag, unchanged=True)
        if reply.status == 404:
            return AssignmentAnswer()
        if reply.status != 200:
            raise HallRefused(f"assignment: server answered {reply.status}", reply.status)
        return AssignmentAnswer(reply.data, reply.headers.get(wire.ETAG, ""))

    def poll_session(self, device_id: str, wait_s: float) -> Any:
        reply = self.transport.request("GET", wire.session_path(device_id, wait_s))
        if reply.status != 200:
            raise HallRefused(f"session poll: server answered {reply.status}", reply.status)
        data = reply.data if isinstance(reply.data, dict) else {}
        session = data.get("session")
        return session if isinstance(session, dict) else None

    def heartbeat(self, device_id: str, body: dict[str, Any]) -> HeartbeatAnswer:
        """Post the heartbeat; during a key rotation, first signed with the next key (a probe).

        A probe the hall answers (verified, 2xx) makes the next key the
        device's key (:meth:`~device.keys.DeviceKeys.promote`); any other
        outcome leaves the current key signing, and the heartbeat goes again
        signed with it.
        """
        pending = getattr(self.transport, "pending_key", None)
        if pending is not None and pending():
            try:
                reply = self.transport.request("POST", wire.heartbeat_path(device_id), body, probe=True)
            except TransportError as e:
                logger.info("key rotation: the hall does not answer the next key yet (%s)", e)
            else:
                if 200 <= reply.status < 300:
                    return HeartbeatAnswer(True, reply.status, reply.data, reply.hall_time)
                logger.info("key rotation: the hall answered the next key with %d", reply.status)
        reply = self.transport.request("POST", wire.heartbeat_path(device_id), body)
        ok = 200 <= reply.status < 300
        why = "" if ok else (wire.error_code(reply.data) or reply.text[:100])
        return HeartbeatAnswer(ok, reply.status, reply.data, reply.hall_time, why, reply.status in (401, 403))

    def close(self) -> None:
        self.transport.close()


def refusal(status: int, data: Any, text: str, headers: Mapping[str, str], now: datetime.datetime) -> Refusal:
    """What a verified answer other than 200 to a batch means (never a dead letter).

    ``now`` (the device's best wall time) reads a ``Retry-After`` given as an HTTP date.
    """
    why = wire.error_code(data) or text[:100]
    if status == 413:
        return Refusal(TOO_LARGE, status, why=why)
    if status in (401, 403):
        return Refusal(AUTH, status, why=why or "refused")
    if status in (429, 503):
        return Refusal(WAIT, status, retry_after=wire.retry_after(headers, now), why=why)
    return Refusal(OTHER, status, why=why)


def as_client(carrier: HallClient | Transport) -> HallClient:
    """A :class:`HallClient` as given, or an HTTP one around a bare transport (older callers, tests' fakes)."""
    if isinstance(carrier, HallClient):
        return carrier
    return HttpHallClient(carrier)


#: ``ed25519`` configured, no hall public key, but a shared key provisioned: signing with that (v2).
SIGNATURE_FALLBACK = "signature_fallback_hmac"


def signing_for(config: Config, shared: Secret) -> Secret | Ed25519Signing:
    """What the device signs with, from ``upload.signature``.

    ``ed25519`` needs the hall's public key to verify answers: with it, the
    device's key pair is used (and made when missing); without it, the
    shared key is used (the transport then carries a standing fault:
    :data:`SIGNATURE_FALLBACK`, or :data:`NO_HALL_KEY` when there is no
    shared key either). No key file is touched unless it will sign.
    """
    u = config.upload
    if u.signature != ED25519 or not u.hall_public_key:
        return shared
    return Ed25519Signing(device_keys(u.private_key_file), parse_public_key(u.hall_public_key))


def for_config(config: Config, shared: Secret, timeout: float) -> HttpTransport:
    """The transport ``config`` asks for: server, TLS, and the signature ``upload.signature`` names."""
    u = config.upload
    transport = HttpTransport(u.server, config.device.id, signing_for(config, shared), timeout=timeout,
                              verify=u.ca_bundle or u.verify_tls, insecure_http=u.insecure_http)
    if u.signature == ED25519 and transport.algorithm != ED25519:
        transport.faults += (SIGNATURE_FALLBACK if shared else NO_HALL_KEY,)
    return transport
