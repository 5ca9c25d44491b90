"""``HallServer``: the stand-in hall's lifecycle, state and public API."""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric import ed25519

from hall import dating, keys
from hall.auth import MAX_NONCES_PER_DEVICE, Authenticator, KeyRing, Refused, Verified, sign_answer
from hall.contract import (
    DEFAULT_MAX_BODY,
    BadRequest,
    Event,
    canonical_json,
    check_chain,
    parse_batch,
    parse_heartbeat,
    validate_event,
)
from hall.faults import Fault, FaultPlan
from hall.handler import Answer, Capacity, HallHTTPServer
from hall.limits import DurableNonces, InFlight
from hall.phone import PhonePage
from hall.report import build_report, format_report
from hall.sms import RecordingGateway, SmsGateway
from hall.store import Storage

#: ``hall_key_file`` default: beside the database.
BESIDE_DB = "beside-db"
#: Addresses that only this machine reaches.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: ``Host`` of a loopback URL with a port: what a relay on this machine (the simulator's link) is reached by.
_LOOPBACK_AUTHORITY = re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}")

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CapturedRequest:
    """A request as it reached the hall (``capture=True``): what an eavesdropper could replay."""

    method: str
    #: Path and query, as on the request line.
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class HallServer:
    """The stand-in hall server.

    Args:
        db_path: SQLite file for received events (``":memory:"`` works).
        device_keys: device id -> key.
        default_key: key for any device not in ``device_keys``.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (see ``url``).
        assignment: the assignment served to every device without its own.
        tls: ``(certfile, keyfile)`` to serve HTTPS.
        max_body: largest accepted request body in bytes; settable later.
        keys_file: a TOML key file (``[devices]`` id = key, optional
            ``default_key``), read again whenever it changes; it replaces
            ``device_keys`` and ``default_key``.
        clock: the hall's clock (Unix seconds): signs answers and judges
            requests' ``created``.
        session_max_age_s: a session neither rated nor closed is given up
            after this many seconds (the hall forgot to close it).
        capture: keep every request as received (:attr:`captured`), for
            replaying it in tests.
        public_url: the URL (or URLs) the hall serves, that every request's
            ``@target-uri`` must name; by default the URL it binds (and, on a
            loopback address, the same with ``localhost``). Never rebuilt
            from the ``Host`` header: a request made for another hall fails.
        public_keys: device id -> its Ed25519 public key text (or several,
            during a rotation), added to the registry in the database.
        hall_key_file: the hall's own Ed25519 private key (PEM, 0600), made
            when missing; by default beside the database (in memory for
            ``":memory:"``); ``None`` keeps a new one in memory.
        capacity: worker pool, backlog and deadlines (:class:`~hall.handler.Capacity`).
        per_device_nonces: requests one device may send within the 300 s
            window (its nonces, kept durably); past it that device alone is
            answered 429.
        sms: the SMS gateway for reminders; a stand-in that records them by default (``phone.sms``).

    A device with a public key in the registry signs with ``ed25519`` (any of
    its keys) and gets answers signed with the hall's key; a device with only
    a shared key (its own, or the ``default_key``) signs with
    ``hmac-sha256``. With a shared ``default_key`` (the simulator's), any
    device id without a public key may sign, and the hall takes from a
    request only what speaks for the device its signature names: its own
    endpoints, its own body and events.

    Use as a context manager, or call ``start()`` and ``stop()``/``close()``.
    """

    def __init__(self, db_path: str | os.PathLike[str], device_keys: Mapping[str, str] | None = None,
                 default_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 assignment: dict[str, Any] | None = None, tls: tuple[str, str] | None = None,
                 max_body: int = DEFAULT_MAX_BODY, *, keys_file: str | None = None,
                 clock: Callable[[], float] = time.time, capture: bool = False,
                 session_max_age_s: float = 600.0, public_url: str | Sequence[str] | None = None,
                 public_keys: Mapping[str, str | Sequence[str]] | None = None,
                 hall_key_file: str | os.PathLike[str] | None = BESIDE_DB,
                 capacity: Capacity | None = None, per_device_nonces: int = MAX_NONCES_PER_DEVICE,
                 sms: SmsGateway | None = None) -> None:
        self._storage = Storage(db_path)
        #: The phone page (``/S/<code>``) and SMS reminders (hall/phone.py); None on ``:memory:``.
        self.phone: PhonePage | None = None
        if str(db_path) != ":memory:":
            self.phone = PhonePage(str(db_path), public_url=lambda: self.public_url, clock=clock,
                                   reasons=self._reasons_of, sms=sms if sms is not None else RecordingGateway())
        self._keys = KeyRing(device_keys, default_key, keys_file)
        if self._keys.shared:
            logger.warning("one shared key for every device: any device id may sign (simulator use only)")
        self._clock = clock
        self._registry = keys.PublicKeys(db_path)
        for device_id, texts in (public_keys or {}).items():
            for text in [texts] if isinstance(texts, str) else texts:
                self._registry.add(device_id, text, "constructor")
        if hall_key_file == BESIDE_DB:
            hall_key_file = keys.default_hall_key_path(db_path)
        self._hall_key: ed25519.Ed25519PrivateKey = keys.load_or_make_hall_key(hall_key_file)
        self.hall_key_file = os.fspath(hall_key_file) if hall_key_file is not None else None
        self._nonce_store = DurableNonces(db_path, clock, per_device=per_device_nonces)
        self._in_flight = InFlight()
        self._auth = Authenticator(self._keys.own_key, clock, nonces=self._nonce_store,
                                   public_keys=self._registry.keys_of, shared_key_for=self._keys.default_key)
        self._capture_on = capture
        self._captured: list[CapturedRequest] = []
        self._host, self._port = host, port
        self._tls = tls
        self._public_urls = [public_url] if isinstance(public_url, str) else list(public_url or [])
        self._extra_urls: list[str] = []
        self.max_body = max_body
        self.capacity = capacity or Capacity()
        #: Set while stopping: wakes long polls, slow answers and injected waits.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._assignments: dict[str | None, dict[str, Any]] = {None: assignment} if assignment is not None else {}
        #: device id -> (the open session, monotonic seconds it opened at); one open at a time.
        self._sessions: dict[str, tuple[dict[str, Any], float]] = {}
        #: device id -> the id of the session its polls were last given (news is anything else).
        self._given: dict[str, str] = {}
        self.session_max_age_s = session_max_age_s
        self._session_cond = threading.Condition(self._lock)
        self._faults = FaultPlan()
        self._requests_log: list[tuple[str, str, int]] = []
        self._httpd: HallHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; may be called again after ``stop()``."""
        if self._httpd is not None:
            return self
        self.stopping.clear()
        httpd = HallHTTPServer((self._host, self._port), self)
        if self._tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        # Keep the port, so a restart after stop() comes back at the same URL.
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="hall-server", daemon=True,
        )
        self._thread.start()
        logger.info("hall server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and wake long polls; data stays."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        with self._session_cond:
            self._session_cond.notify_all()
        httpd.closing.set()
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            connections = list(httpd.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop, then close the database."""
        self.stop()
        if self.phone is not None:
            self.phone.close()
        self._storage.close()
        self._registry.close()
        self._nonce_store.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Base URL, such as ``http://127.0.0.1:41234``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self._port}"

    @property
    def public_urls(self) -> list[str]:
        """The URLs requests must be signed for: those configured, else the bound URL (and ``localhost``)."""
        with self._lock:
            configured = list(self._public_urls)
            extra = list(self._extra_urls)
        if configured:
            return [u.rstrip("/") for u in configured + extra]
        urls = [self.url]
        if self._host in LOOPBACK_HOSTS:
            urls.append(f"{'https' if self._tls else 'http'}://localhost:{self._port}")
        return urls + [u.rstrip("/") for u in extra]

    def add_public_url(self, url: str) -> None:
        """Serve one more public URL, such as a relay's in front of this hall (the simulator's network link)."""
        with self._lock:
            if url not in self._extra_urls:
                self._extra_urls.append(url)

    @property
    def public_url(self) -> str:
        """The URL devices are given for this hall (the first of :attr:`public_urls`)."""
        return self.public_urls[0]

    def _reasons_of(self, device_id: str) -> list[dict[str, Any]]:
        """The reason tags of the assignment served to the device (the phone page offers the same)."""
        with self._lock:
            assignment = self._assignments.get(device_id, self._assignments.get(None)) or {}
        reasons = assignment.get("reasons")
        return list(reasons) if isinstance(reasons, list) else []

    @property
    def port(self) -> int:
        """The bound port (the one asked for until ``start()``)."""
        return self._port

    # -- state for tests and the simulator ---------------------------------

    def events(self, device_id: str | None = None) -> list[Event]:
        """Stored events (as received) ordered by device, then seq."""
        return self._storage.events(device_id)

    @property
    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Device id -> the last heartbeat body received."""
        return self._storage.heartbeats()

    @property
    def requests_log(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` per request; status 0 means reset, no answer."""
        with self._lock:
            return list(self._requests_log)

    def set_key(self, device_id: str, key: str) -> None:
        """Add or replace one device's shared key (``hmac-sha256``)."""
        self._keys.set_key(device_id, key)

    def add_public_key(self, device_id: str, public_key: str, source: str = "api") -> keys.DeviceKey:
        """Register an Ed25519 public key for the device beside any it has (both valid during a rotation).

        Raises:
            hall.keys.KeyProblem: a device id or key the hall cannot take.
        """
        return self._registry.add(device_id, public_key, source)

    def remove_public_key(self, device_id: str, key_or_fingerprint: str | None = None) -> int:
        """Withdraw one of the device's public keys (by text or fingerprint), or all; returns how many."""
        return self._registry.remove(device_id, key_or_fingerprint)

    def public_keys(self, device_id: str | None = None) -> list[keys.DeviceKey]:
        """The registered device public keys."""
        return self._registry.list(device_id)

    def import_results(self, path: str | os.PathLike[str]) -> tuple[list[keys.DeviceKey], list[str]]:
        """Register the public keys of a provisioning results CSV's ``ok`` rows (common interface 2).

        Returns:
            ``(keys imported, problems of rows not imported)``.
        """
        rows, problems = keys.read_results(path)
        return keys.import_results(self._registry, rows, f"results {os.path.basename(os.fspath(path))}"), problems

    @property
    def hall_public_key(self) -> str:
        """The hall's own Ed25519 public key text: what devices are given as ``upload.hall_public_key``."""
        return keys.public_key_text(self._hall_key.public_key())

    @property
    def hall_fingerprint(self) -> str:
        """The fingerprint of :attr:`hall_public_key`."""
        return keys.fingerprint(self.hall_public_key)

    def flagged_events(self, device_id: str | None = None) -> dict[str, str]:
        """Event id -> its ``flag`` for every stored event the hall flagged (kept out of the figures)."""
        return self._storage.flagged_events(device_id)

    @property
    def captured(self) -> list[CapturedRequest]:
        """Every request received so far when made with ``capture=True``."""
        with self._lock:
            return list(self._captured)

    def head(self, device_id: str) -> dict[str, Any]:
        """``{"seq", "hash"}``: the highest gapless seq held for the device (seq 0: none yet)."""
        seq, digest = self._storage.head(device_id)
        return {"seq": seq, "hash": digest}

    def flags(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Chain breaks flagged as events arrived: ``{"device_id", "seq", "id", "problem", "detail", "flagged_at"}``."""
        return self._storage.flags(device_id)

    def exact_times(self, device_id: str | None = None) -> dict[str, datetime.datetime | None]:
        """Event id -> when it happened, in China time; None for an event not yet datable.

        Each event of a boot whose clock was not synced is dated from that
        boot's ``clock`` event, whichever of the two arrived first
        (:func:`hall.dating.date_events`).
        """
        return dating.date_events(self.events(device_id))

    def set_assignment(self, device_id: str | None, assignment: dict[str, Any] | None) -> None:
        """Serve ``assignment`` to ``device_id`` (``None``: every device); ``None`` removes."""
        with self._lock:
            if assignment is None:
                self._assignments.pop(device_id, None)
            else:
                self._assignments[device_id] = json.loads(json.dumps(assignment))

    def open_session(self, device_id: str, ticket: str | None = None, project_no: str | None = None,
                     task_code: str | None = None, task_name: str | None = None,
                     qr_url: str | None = None, mobile: str | None = None) -> dict[str, Any]:
        """Open a service session for the device, in place of any still open.

        The session is the answer to every session poll of the device until
        it is rated (an event with its ``session_id`` arrives, ``rating`` or
        ``unrated``), the hall closes it (:meth:`close_session`) or it is
        older than ``session_max_age_s``.

        ``mobile``, a citizen's number from the queue or case system, stays at
        the hall (never sent to the device): the phone page's link goes to it
        by SMS once the session's event arrives (:meth:`PhonePage.arrived`).

        Returns:
            The session as the device receives it, with a new ``session_id``.
        """
        session = {
            "session_id": uuid.uuid4().hex, "ticket": ticket, "project_no": project_no,
            "task_code": task_code, "task_name": task_name, "qr_url": qr_url,
        }
        if mobile and self.phone is not None:
            self.phone.expect_mobile(device_id, str(session["session_id"]), mobile)
        with self._session_cond:
            self._sessions[device_id] = (session, time.monotonic())
            self._session_cond.notify_all()
        return dict(session)

    def close_session(self, device_id: str, session_id: str | None = None) -> bool:
        """Close the device's open session (only if it is ``session_id``, when given).

        Returns:
            Whether a session was open and is closed now.
        """
        with self._session_cond:
            return self._close(device_id, session_id)

    def _close(self, device_id: str, session_id: str | None) -> bool:
        """Close under the lock held by the caller."""
        open_ = self._sessions.get(device_id)
        if open_ is None or (session_id is not None and open_[0]["session_id"] != session_id):
            return False
        del self._sessions[device_id]
        self._session_cond.notify_all()
        logger.info("device %s: session %s closed", device_id, open_[0]["session_id"])
        return True

    def _open_session_of(self, device_id: str) -> dict[str, Any] | None:
        """The device's open session under the lock, given up once too old."""
        open_ = self._sessions.get(device_id)
        if open_ is None:
            return None
        session, opened_at = open_
        if time.monotonic() - opened_at >= self.session_max_age_s:
            logger.info("device %s: session %s given up unrated after %.0f s",
                        device_id, session["session_id"], self.session_max_age_s)
            del self._sessions[device_id]
            return None
        return session

    def resolve(self, rating_id: str, note: str = "") -> None:
        """Mark a 差评 as rectified, so the report no longer lists it as open."""
        self._storage.resolve(rating_id, note, _now())

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        """Inject a fault into the next ``count`` matching requests.

        Faults are used up in the order injected. By default they match
        ``POST /api/v1/evaluations``; ``path=`` targets another endpoint (any
        method, query ignored).

        Kinds and their params:
            ``status``: answer ``status`` (default 503) with ``body`` and an
                optional ``retry_after`` header, storing nothing.
            ``latency``: wait ``seconds`` (default 1.0), then handle normally.
            ``reset_after_commit``: handle (and store), then reset the connection.
            ``malformed``: handle (and store), then answer 200 with ``body``
                (default a non-JSON page; pass a dict for a wrong shape).
            ``reset``: reset the connection without handling.
            ``rogue``: an impostor's answer, without handling: every event of
                the batch acknowledged, a session, another staff member's
                assignment; unsigned unless ``sign`` says otherwise.
            ``dribble``: handle, then send the answer one byte every
                ``seconds`` (default 1.0).
            ``huge``: answer 200 with ``size`` bytes (default 100 MiB),
                ``declared`` in Content-Length or not (default True).
            ``session``: answer a session poll at once with a new session
                (or ``session_id`` again), signed: a hall in a session storm.

        Every answer, injected or not, is signed as the hall signs unless
        ``sign`` says ``"none"`` (a proxy or a captive portal),
        ``"wrong_key"`` or ``"other_nonce"`` (an earlier request's nonce).
        ``path="*"`` matches every request.

        Raises:
            ValueError: an unknown ``kind`` or ``sign``, or a ``count`` below 1.
        """
        path = params.pop("path", None)
        self._faults.inject(kind, count, path, **params)

    def clear_faults(self) -> None:
        """Drop every injected fault not yet used up."""
        self._faults.clear()

    def integrity(self, device_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Check each device's stored events for gaps, reused seqs and chain breaks.

        Returns:
            device id -> list of problems, each ``{"seq", "problem", "detail"}``
            with ``problem`` one of ``gap``, ``duplicate_seq``, ``prev_hash``,
            ``hash``; an empty list when the device's chain is whole.
        """
        by_device: dict[str, list[Event]] = collections.defaultdict(list)
        for event in self.events(device_id):
            by_device[event["device_id"]].append(event)
        return {device: check_chain(events) for device, events in by_device.items()}

    def report_data(self, month: str, today: datetime.date | None = None) -> dict[str, Any]:
        """The month's per-window figures as a dict; see :func:`~hall.report.build_report`."""
        events = self.events()
        if self.phone is not None:  # ratings made on the phone, in place of their services' unrated events
            events = self.phone.with_records(events)
        return build_report(events, month, self._storage.resolved_ids(), today,
                            flags={i: flag.split(",")[0] for i, flag in self._storage.flagged_events().items()})

    def report(self, month: str, today: datetime.date | None = None) -> str:
        """The month's per-window 好差评 report as text (``month`` is ``YYYY-MM``)."""
        return format_report(self.report_data(month, today))

    # -- the handler's interface (hall.handler.Hall) ------------------------

    def target_uri(self, path: str, host: str | None) -> str:
        """The ``@target-uri`` a request must have been signed for: one of the hall's public URLs with ``path``.

        ``Host`` only chooses among the configured URLs. The one exception is
        the simulator's hall: on a loopback address, with one shared key for
        every device and no public URL configured, a device may reach it
        through a relay on another loopback port (the simulator's network
        link), so any loopback URL of the same scheme is taken. A hall with
        per-device keys only, or with ``public_url``, takes only its own.
        """
        urls = self.public_urls
        wanted = (host or "").strip().lower()
        if wanted:
            for url in urls:
                if urllib.parse.urlsplit(url).netloc.lower() == wanted:
                    return url + path
            if (not self._public_urls and self._keys.shared and self._host in LOOPBACK_HOSTS
                    and _LOOPBACK_AUTHORITY.fullmatch(wanted)):
                return f"{urllib.parse.urlsplit(urls[0]).scheme}://{wanted}{path}"
        return urls[0] + path

    def verify(self, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes) -> Verified:
        """Verify a request and count it in flight for its device (undone by :meth:`done`).

        Raises:
            Refused: not verified (401), or verified but stale, replayed or
                over its device's share (``verified`` set: answered signed).
        """
        verified = self._auth.verify(method, target_uri, headers, body)
        try:
            self._in_flight.enter(verified.device_id)
        except Refused as busy:
            busy.verified = verified
            raise
        return verified

    def done(self, verified: Verified) -> None:
        self._in_flight.leave(verified.device_id)

    def sign(self, mode: str, verified: Verified | None, claimed_nonce: str, status: int,
             headers: dict[str, str], data: bytes) -> None:
        """Sign an answer: as the hall only for a verified request; or as a peer that is not the hall would."""
        self._faults.note_nonce(claimed_nonce)
        if mode == "none":
            if claimed_nonce:
                headers["Request-Nonce"] = claimed_nonce  # echoing is easy; signing is not
            return
        if mode == "wrong_key":
            if claimed_nonce:
                wrong: str | ed25519.Ed25519PrivateKey
                if verified is not None and verified.secret is None:
                    wrong = ed25519.Ed25519PrivateKey.generate()
                else:
                    wrong = "not-" + (verified.secret if verified is not None and verified.secret else "a-key")
                sign_answer(wrong, status, headers, data, claimed_nonce, int(self._clock()))
            return
        if verified is None:
            return  # never the hall's signature on what the hall did not verify
        nonce = verified.nonce if mode == "hall" else self._faults.other_nonce(verified.nonce)
        key: str | ed25519.Ed25519PrivateKey = verified.secret if verified.secret is not None else self._hall_key
        sign_answer(key, status, headers, data, nonce, int(self._clock()))

    def capture(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        if self._capture_on:
            with self._lock:
                self._captured.append(CapturedRequest(method, target, tuple(headers), body))

    def take_fault(self, method: str, path: str) -> Fault | None:
        return self._faults.take(method, path)

    def receive_batch(self, device_id: str, body: bytes) -> dict[str, Any]:
        """Store a verified device's batch: the answer's ``accepted``, ``duplicate``, ``rejected`` and ``head``."""
        events = parse_batch(body, device_id)
        valid: list[Event] = []
        rejected: list[dict[str, str]] = []
        for event in events:
            error = validate_event(event, device_id)
            if error:
                rejected.append({"id": event["id"], "error": error})
            else:
                valid.append(event)
        receipt = self._storage.store(device_id, valid, _now())
        rejected += receipt.rejected
        with self._session_cond:
            # Rated (or ended unrated) by the device: the service is over.
            stored = set(receipt.accepted)
            for event in valid:
                if event.get("session_id") and event["id"] in stored:
                    self._close(device_id, str(event["session_id"]))
        if self.phone is not None and receipt.accepted:
            try:
                self.phone.arrived(device_id)  # SMS reminders for this device's services now here
            except Exception:  # a reminder never costs a device its acknowledgement
                logger.exception("SMS reminders failed")
        if rejected:
            logger.warning("device %s: rejected %d events (%s)", device_id, len(rejected),
                           ", ".join(sorted({r["error"][:40] for r in rejected})))
        answer: dict[str, Any] = {"accepted": receipt.accepted, "duplicate": receipt.duplicate,
                                  "rejected": rejected,
                                  "head": {"seq": receipt.head[0], "hash": receipt.head[1]}}
        if receipt.flagged:
            # Stored all the same (never dropped), and said (never silently kept).
            logger.warning("device %s: flagged: %s", device_id,
                           "; ".join(f"seq {f['seq']} {f['problem']}" for f in receipt.flagged[:5]))
            answer["flagged"] = receipt.flagged
        return answer

    def serve_assignment(self, device_id: str, if_none_match: str | None) -> Answer:
        with self._lock:
            assignment = self._assignments.get(device_id, self._assignments.get(None))
        if assignment is None:
            raise BadRequest(f"no assignment for device {device_id}", 404)
        etag = '"' + hashlib.sha256(canonical_json(assignment).encode()).hexdigest()[:32] + '"'
        if if_none_match:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            if etag in tags or "*" in tags:
                return 304, None, {"ETag": etag}
        return 200, assignment, {"ETag": etag}

    def wait_session(self, device_id: str, wait: float) -> dict[str, Any] | None:
        """A long poll: answers at once with news, else holds up to ``wait`` seconds.

        News is an open session this device has not been given yet, or the
        end of the one it was given (rated, closed or given up: answered
        ``None``). Without news the poll is held until there is some, then
        answered with the state as it is: so a session the hall opens right
        after the last one ended reaches the device at once, and a device
        that already has the open session is not answered in a busy loop.
        """
        deadline = time.monotonic() + wait
        with self._session_cond:
            while True:
                session = self._open_session_of(device_id)
                given = self._given.get(device_id)
                if session is not None and session["session_id"] != given:
                    self._given[device_id] = session["session_id"]
                    return dict(session)
                if session is None and given is not None:
                    del self._given[device_id]
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopping.is_set():
                    return dict(session) if session is not None else None
                self._session_cond.wait(remaining)

    def receive_heartbeat(self, device_id: str, body: bytes) -> None:
        self._storage.put_heartbeat(device_id, parse_heartbeat(body), _now())

    def record(self, method: str, path: str, status: int, device_id: str) -> None:
        with self._lock:
            self._requests_log.append((method, path, status))
        logger.info("%s %s %s device=%s", method, path, status or "reset", device_id or "-")
