"""The uplink's upkeep: its status snapshot, the heartbeat, pruning, and the uplink test.

The uploader publishes an :class:`UploadStatus`; the screen, the console and
the heartbeat read it. :class:`Upkeep` is the uploader's work beside sending
batches, done in the uploader's own cycles: the heartbeat every
``heartbeat_s``, and pruning delivered events older than ``retain_days`` in
small batches (never while the wall clock is not synced: a clock in 1970 or
in the future would make the age of every event wrong). The pure helpers
turn counts and clocks into the heartbeat's fault codes and ages, and
:func:`uplink_check` is the console's ``Test uplink``: one signed heartbeat,
its answer described, and whether it verified as the hall's.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from device import clock
from device.errors import StorageError, TransportError, UnauthenticatedAnswer
from device.queue.client import HallClient, as_client
from device.queue.outbox import Event, Outbox
from device.queue.transport import Transport

logger = logging.getLogger(__name__)

#: With neither heartbeat nor pruning on, look again this often anyway.
NOTHING_DUE_S = 300.0
#: While a prune batch comes back full, the next one follows this soon.
PRUNE_AGAIN_S = 1.0
#: The fault while the answers that come back do not verify as the hall's.
UNAUTHENTICATED = "unauthenticated_answer"
#: The fault while the hall refuses the device's signature (a verified 401 or 403).
AUTH = "auth"
#: The fault while the hall (verified) refuses whole requests (400, 413, 5xx ...): nothing is given up.
REFUSED = "hall_refused"
#: The fault while the hall keeps naming seqs of ours as taken and they cannot be sealed again.
SEQ_TAKEN = "seq_taken"


@dataclass(frozen=True)
class UploadStatus:
    """What the screen, the console and the heartbeat show of the uplink (a snapshot)."""

    online: bool | None = None      # None until the first attempt
    last_upload_at: str = ""        # wall time of the last acknowledged batch
    last_error: str = ""
    fault: str = ""                 # AUTH while the hall refuses us, UNAUTHENTICATED while answers do not verify
    delivered: int = 0
    rejected: int = 0               # dead letters kept in the outbox
    storage: str = "ok"             # "ok", "low" or "full" (Outbox.storage_state)
    last_heartbeat_at: str = ""
    pruned: int = 0
    backlog: int = 0                # events waiting, as last counted
    unauthenticated: int = 0        # answers that did not verify, since start
    clock_source: str = ""          # "ntp", "hall" or "" (not synced)
    hall_head: tuple[int, str] | None = None   # (seq, hash) the hall last said it holds
    transport_faults: tuple[str, ...] = ()     # standing: insecure_http, tls_unverified, plain_http_refused
    faults: tuple[str, ...] = ()    # the uplink's fault codes, as the heartbeat reports them
    held: int = 0                   # events the hall refused alone, held back a while (never given up)
    resealed: int = 0               # events sealed again after the hall said their seq was taken
    signature: str = ""             # the request signature in use: "ed25519" or "hmac-sha256"


class UplinkOwner(Protocol):
    """What :class:`Upkeep` reads of the worker that owns it (the uploader)."""

    outbox: Outbox
    client: HallClient
    device_id: str
    boot_id: str
    started_ms: int
    monotonic_ms: Callable[[], int]
    wall: Callable[[], datetime.datetime]
    synced: Callable[[], Any]

    @property
    def status(self) -> UploadStatus: ...

    def publish(self, **changes: Any) -> UploadStatus: ...

    def refresh_status(self) -> UploadStatus: ...


class Upkeep:
    """The heartbeat and pruning, done on the uploader's thread in its cycles.

    Args:
        uploader: the owner, whose outbox, transport, device id, clocks and
            snapshot are used.
        heartbeat_s: seconds between heartbeats (0: none).
        retain_days: delivered events older than this are pruned (0: never).
        prune_every_s, prune_batch: how often, and how many events at most
            per transaction, so the button loop never waits long on the lock.
        firmware: reported in the heartbeat.
        extra_faults: returns further fault codes for the heartbeat (the app's).
        extra_fields: returns further heartbeat fields (the app's: ignored presses, noise pulses).
    """

    def __init__(self, uploader: UplinkOwner, *, heartbeat_s: float, retain_days: int, prune_every_s: float,
                 prune_batch: int, firmware: str, extra_faults: Callable[[], Iterable[str]] | None,
                 extra_fields: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.uploader = uploader
        self.heartbeat_s = heartbeat_s
        self.retain_days = retain_days
        self.prune_every_s = prune_every_s
        self.prune_batch = prune_batch
        self.firmware = firmware
        self.extra_faults = extra_faults
        self.extra_fields = extra_fields
        #: Monotonic ms at which the next heartbeat and prune are due (now: at start).
        self.next_heartbeat_ms = self.next_prune_ms = uploader.started_ms

    def run(self) -> float:
        """Heartbeat and prune when due. Returns seconds until the next is due."""
        now = self.uploader.monotonic_ms()
        if self.heartbeat_s and now >= self.next_heartbeat_ms:
            self.next_heartbeat_ms = now + int(self.heartbeat_s * 1000)
            self.heartbeat()
        if self.retain_days and now >= self.next_prune_ms:
            self.next_prune_ms = now + int(self.prune_every_s * 1000)
            if self.prune() >= self.prune_batch:
                self.next_prune_ms = now + int(PRUNE_AGAIN_S * 1000)
        due = [t for t, on in ((self.next_heartbeat_ms, self.heartbeat_s),
                               (self.next_prune_ms, self.retain_days)) if on]
        return max(0.0, (min(due) - now) / 1000) if due else NOTHING_DUE_S

    def prune(self) -> int:
        """Delete one batch of delivered events older than ``retain_days``.

        Returns:
            How many were deleted; 0 while the wall clock is not synced.
        """
        up = self.uploader
        if not up.synced():
            logger.debug("uploader: clock not synced; pruning waits")
            return 0
        now = up.wall().timestamp()
        try:
            up.outbox.stamp_delivered(now)
            n = up.outbox.prune(now - self.retain_days * 86400, limit=self.prune_batch)
        except StorageError as e:  # a full disk must not stop the uplink
            logger.warning("uploader: pruning failed: %s", e)
            return 0
        if n:
            up.publish(pruned=up.status.pruned + n)
            logger.info("outbox: pruned %d delivered events older than %d days", n, self.retain_days)
        return n

    def heartbeat_body(self) -> dict[str, Any]:
        """What the heartbeat reports: backlog, dead letters, head, clock, disk, faults."""
        up = self.uploader
        status = up.refresh_status()
        synced = bool(up.synced())
        now_ms = up.monotonic_ms()
        faults = list(status.faults)
        if self.extra_faults is not None:
            faults.extend(self.extra_faults())
        faults = list(dict.fromkeys(faults))  # the hall link may report what the uploader does
        body: dict[str, Any] = {
            "firmware": self.firmware,
            "uptime_s": round((now_ms - up.started_ms) / 1000),
            "backlog": status.backlog,
            "oldest_pending_age_s": oldest_age(up.outbox.oldest_waiting(), up.boot_id, now_ms,
                                               up.wall() if synced else None),
            "rejected": status.rejected,
            "last_upload_at": status.last_upload_at or None,
            "head_seq": up.outbox.head()[0],
            "clock_synced": synced,
            "clock_source": status.clock_source or None,
            "disk_free_bytes": up.outbox.disk_free(),
            "faults": faults,
        }
        if self.extra_fields is not None:
            body.update(self.extra_fields())
        return body

    def heartbeat(self) -> bool:
        """POST the heartbeat once. Returns True when the server took it."""
        up = self.uploader
        body = self.heartbeat_body()
        try:
            answer = up.client.heartbeat(up.device_id, body)
        except UnauthenticatedAnswer as e:
            up.publish(fault=UNAUTHENTICATED, unauthenticated=up.status.unauthenticated + 1)
            logger.warning("uploader: heartbeat: %s", e)
            return False
        except TransportError as e:
            logger.info("uploader: heartbeat not sent: %s", e)
            return False
        if answer.auth:
            up.publish(fault=AUTH)
        if not answer.ok:
            logger.info("uploader: heartbeat answered %d", answer.status)
            return False
        up.publish(last_heartbeat_at=clock.iso(up.wall()))
        return True


def uplink_faults(status: UploadStatus, storage: tuple[str, str], rejected: int, synced: bool,
                  standing: Iterable[str] = ()) -> tuple[str, ...]:
    """The uplink's fault codes for the heartbeat and ``Status``.

    Args:
        status: the uploader's snapshot (fault, online, last error).
        storage: ``Outbox.storage_state()``.
        rejected: dead letters in the outbox.
        synced: whether the wall clock is synchronised.
        standing: the transport's standing faults (plain HTTP allowed, TLS unverified ...).
    """
    state, reason = storage
    faults = [status.fault] if status.fault else []
    faults.extend(standing)
    if status.online is False:
        faults.append("offline: " + (status.last_error or "server not reachable")[:120])
    if state != "ok":
        faults.append(f"storage_{state}: {reason}")
    if rejected:
        faults.append(f"dead_letters: {rejected}")
    if not synced:
        faults.append("clock_not_synced")
    return tuple(faults)


def oldest_age(event: Event | None, boot_id: str, now_ms: int, wall: datetime.datetime | None) -> int | None:
    """Seconds the oldest waiting ``event`` has waited; None when no clock can tell.

    Args:
        event: the oldest waiting event, or None (then 0).
        boot_id, now_ms: this boot and its monotonic clock (exact for its events).
        wall: the wall clock when it is synced, else None.
    """
    if event is None:
        return 0
    if event.get("boot_id") == boot_id and isinstance(event.get("mono_ms"), int):
        return max(0, round((now_ms - event["mono_ms"]) / 1000))
    if wall is not None and event.get("clock_synced"):
        try:
            when = datetime.datetime.fromisoformat(event["occurred_at"])
            return max(0, round((wall - when).total_seconds()))
        except (KeyError, TypeError, ValueError):
            return None
    return None


def uplink_check(transport: HallClient | Transport, device_id: str, body: dict[str, Any], *,
                 monotonic: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """POST a signed heartbeat and describe the answer, for the console's ``Test uplink``.

    Args:
        transport: a :class:`~device.queue.transport.HttpTransport` (or alike).
        device_id: whose heartbeat endpoint to use.
        body: the heartbeat JSON object.
        monotonic: the clock that times the answer.

    Returns:
        ``{"ok", "verified", "status", "elapsed_ms", "server", ...}``:
        ``verified`` says whether an answer came back signed as the hall's
        answer to this request (then ``hall_time`` too); on failure also
        ``error`` (``unauthenticated_answer`` for an answer that does not
        verify, else ``uplink_failed``) and ``message``. Never the key or the
        signature.
    """
    hall = as_client(transport)
    server = getattr(hall, "base_url", "")
    started = monotonic()
    try:
        reply = hall.heartbeat(device_id, body)
    except UnauthenticatedAnswer as e:
        return {"ok": False, "verified": False, "error": UNAUTHENTICATED, "server": server,
                "message": f"{e}; a wrong device key, a captive portal, a proxy or not the hall server"}
    except TransportError as e:
        return {"ok": False, "verified": False, "error": "uplink_failed", "message": str(e), "server": server}
    result: dict[str, Any] = {"ok": 200 <= reply.status < 300, "verified": True, "status": reply.status,
                              "server": server, "elapsed_ms": round((monotonic() - started) * 1000),
                              "signature": str(getattr(hall, "algorithm", ""))}
    if reply.hall_time is not None:
        result["hall_time"] = clock.iso(datetime.datetime.fromtimestamp(reply.hall_time, datetime.UTC))
    if result["ok"]:
        text = json.dumps(reply.data, ensure_ascii=False, separators=(",", ":"))
        result["answer"] = reply.data if len(text) <= 200 else text[:200] + "…"
    else:
        why = {401: f"the hall refused the request ({reply.why or 'unauthorized'})",
               403: "the hall refused this device"}
        result.update(error="uplink_failed",
                      message=f"the server answered {reply.status}: {why.get(reply.status, reply.why)}")
    return result
