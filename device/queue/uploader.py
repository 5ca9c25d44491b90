"""The uploader: drains the outbox to the hall server, beside the button loop.

It runs in its own thread and never holds the outbox lock while waiting on
the network, so a press is committed and thanked for however slow the
server is. Only the ids the server acknowledged are marked delivered;
everything else goes back to pending and is sent again later, which the
server's idempotency on ``id`` makes safe.

The same thread posts the heartbeat every ``heartbeat_s`` and prunes
delivered events older than ``retain_days`` in small batches (never while
the wall clock is not synced: a clock in 1970 or in the future would make
the age of every event wrong).
"""

import datetime
import email.utils
import logging
import random
import threading
from dataclasses import dataclass

from device import __version__, clock
from device.errors import StorageError, TransportError
from device.queue.outbox import REJECTED

logger = logging.getLogger(__name__)

EVALUATIONS = "/api/v1/evaluations"
#: With nothing to send, look again this often (an append wakes us sooner).
IDLE_POLL_S = 5.0
#: While a prune batch comes back full, the next one follows this soon.
PRUNE_AGAIN_S = 1.0


def heartbeat_path(device_id):
    return f"/api/v1/devices/{device_id}/heartbeat"


@dataclass
class UploadStatus:
    """What the screen, the console and the heartbeat show of the uplink."""

    online: bool | None = None      # None until the first attempt
    last_upload_at: str = ""        # wall time of the last acknowledged batch
    last_error: str = ""
    fault: str = ""                 # "auth" while the server refuses our key
    delivered: int = 0
    rejected: int = 0               # dead letters kept in the outbox
    storage: str = "ok"             # "ok", "low" or "full" (Outbox.storage_state)
    last_heartbeat_at: str = ""
    pruned: int = 0


class Uploader:
    """Sends pending events oldest first, in batches, with capped backoff.

    Args:
        outbox: the :class:`~device.queue.outbox.Outbox`.
        transport: an object with ``request(method, path, obj) -> Reply``.
        device_id: the ``device_id`` of the request body.
        batch_size: events per request at most.
        backoff_min_s, backoff_max_s: the bounds of the retry delay.
        heartbeat_s: seconds between heartbeats (0: none).
        retain_days: delivered events older than this are pruned (0: never).
        prune_every_s, prune_batch: how often, and how many events at most
            per transaction, so the button loop never waits long on the lock.
        firmware: reported in the heartbeat.
        extra_faults: returns further fault codes for the heartbeat (the app's).
        monotonic_ms, wall, synced, rand: injected so tests control time.
    """

    def __init__(self, outbox, transport, device_id, batch_size=100,
                 backoff_min_s=1.0, backoff_max_s=300.0, *, heartbeat_s=300.0, retain_days=90,
                 prune_every_s=3600.0, prune_batch=500, firmware=__version__, extra_faults=None,
                 monotonic_ms=clock.mono_ms, wall=clock.wall_now, synced=clock.kernel_clock_synced,
                 boot_id=None, rand=random.random):
        self.outbox = outbox
        self.transport = transport
        self.device_id = device_id
        self.batch_size = batch_size
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.monotonic_ms = monotonic_ms
        self.wall = wall
        self.synced = synced
        self.boot_id = boot_id or clock.boot_id()
        self.rand = rand
        self.heartbeat_s = heartbeat_s
        self.retain_days = retain_days
        self.prune_every_s = prune_every_s
        self.prune_batch = prune_batch
        self.firmware = firmware
        self.extra_faults = extra_faults
        self.started_ms = monotonic_ms()
        #: Monotonic ms at which the next heartbeat and prune are due (now: at start).
        self.next_heartbeat_ms = self.started_ms
        self.next_prune_ms = self.started_ms
        self._batch_synced = True
        self._idle = True
        self._force = False
        self.status = UploadStatus()
        self.failures = 0
        #: Shrinks on 413, grows back after successes.
        self.batch_limit = batch_size
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None

    # --- thread -----------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self.run, name="uploader", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=None):
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self, force=False):
        """Something was appended: send without waiting for the idle poll.

        A wait after a failure (backoff, Retry-After) is not cut short, or a
        press storm with the server down would hammer it; ``force=True`` (a
        technician's Upload command) cuts that short too.
        """
        self._force = self._force or force
        self._wake.set()

    def run(self):
        send_at = 0  # monotonic ms at which the next batch may go
        idle = True
        while not self._stopping.is_set():
            now = self.monotonic_ms()
            if now >= send_at:
                try:
                    delay = self.cycle()
                    idle = self._idle
                except Exception:  # one bad batch must never kill the uplink
                    logger.exception("uploader: unexpected error")
                    try:
                        self.outbox.release(e["id"] for e in self.outbox.events("sending"))
                    except Exception:
                        logger.exception("uploader: cannot put the batch back; it goes back at the next start")
                    delay, idle = self._backoff("unexpected error"), False
                send_at = now + int(delay * 1000)
            try:
                until = self.housekeeping()
            except Exception:
                logger.exception("uploader: housekeeping failed")
                until = IDLE_POLL_S
            wait = min((send_at - self.monotonic_ms()) / 1000, until)
            if wait > 0 and self._wake.wait(wait):
                self._wake.clear()
                if idle or self._force:
                    send_at = 0
                self._force = False

    # --- heartbeat and pruning -------------------------------------------------

    def housekeeping(self):
        """Heartbeat and prune when due. Returns seconds until the next is due."""
        now = self.monotonic_ms()
        if self.heartbeat_s and now >= self.next_heartbeat_ms:
            self.next_heartbeat_ms = now + int(self.heartbeat_s * 1000)
            self.heartbeat()
        if self.retain_days and now >= self.next_prune_ms:
            self.next_prune_ms = now + int(self.prune_every_s * 1000)
            if self.prune() >= self.prune_batch:
                self.next_prune_ms = now + int(PRUNE_AGAIN_S * 1000)
        due = [t for t, on in ((self.next_heartbeat_ms, self.heartbeat_s),
                               (self.next_prune_ms, self.retain_days)) if on]
        return max(0.0, (min(due) - now) / 1000) if due else IDLE_POLL_S * 60

    def prune(self):
        """Delete one batch of delivered events older than ``retain_days``.

        Returns:
            How many were deleted; 0 while the wall clock is not synced.
        """
        if not self.synced():
            logger.debug("uploader: clock not synced; pruning waits")
            return 0
        now = self.wall().timestamp()
        try:
            self.outbox.stamp_delivered(now)
            n = self.outbox.prune(now - self.retain_days * 86400, limit=self.prune_batch)
        except StorageError as e:  # a full disk must not stop the uplink
            logger.warning("uploader: pruning failed: %s", e)
            return 0
        if n:
            self.status.pruned += n
            logger.info("outbox: pruned %d delivered events older than %d days", n, self.retain_days)
        return n

    def heartbeat_body(self):
        """What the heartbeat reports: backlog, dead letters, clock, disk, faults."""
        synced = self.synced()
        now_ms = self.monotonic_ms()
        state, reason = self.outbox.storage_state()
        rejected = self.outbox.count(REJECTED)
        self.status.rejected, self.status.storage = rejected, state
        faults = []
        if self.status.fault:
            faults.append(self.status.fault)
        if self.status.online is False:
            faults.append("offline: " + (self.status.last_error or "server not reachable")[:120])
        if state != "ok":
            faults.append(f"storage_{state}: {reason}")
        if rejected:
            faults.append(f"dead_letters: {rejected}")
        if not synced:
            faults.append("clock_not_synced")
        if self.extra_faults is not None:
            faults.extend(self.extra_faults())
        return {
            "firmware": self.firmware,
            "uptime_s": round((now_ms - self.started_ms) / 1000),
            "backlog": self.outbox.waiting(),
            "oldest_pending_age_s": self._oldest_age(now_ms, synced),
            "rejected": rejected,
            "last_upload_at": self.status.last_upload_at or None,
            "clock_synced": synced,
            "disk_free_bytes": self.outbox.disk_free(),
            "faults": faults,
        }

    def _oldest_age(self, now_ms, synced):
        """Seconds the oldest waiting event has waited; None when no clock can tell."""
        event = self.outbox.oldest_waiting()
        if event is None:
            return 0
        if event.get("boot_id") == self.boot_id and isinstance(event.get("mono_ms"), int):
            return max(0, round((now_ms - event["mono_ms"]) / 1000))
        if synced and event.get("clock_synced"):
            try:
                when = datetime.datetime.fromisoformat(event["occurred_at"])
                return max(0, round((self.wall() - when).total_seconds()))
            except (KeyError, TypeError, ValueError):
                return None
        return None

    def heartbeat(self):
        """POST the heartbeat once. Returns True when the server took it."""
        body = self.heartbeat_body()
        try:
            reply = self.transport.request("POST", heartbeat_path(self.device_id), body)
        except TransportError as e:
            logger.info("uploader: heartbeat not sent: %s", e)
            return False
        if reply.status in (401, 403):
            self.status.fault = "auth"
        if reply.status != 200:
            logger.info("uploader: heartbeat answered %d", reply.status)
            return False
        self.status.last_heartbeat_at = clock.iso(self.wall())
        return True

    # --- one cycle ----------------------------------------------------------

    def cycle(self):
        """Send one batch. Returns the seconds to wait before the next cycle."""
        batch = self.outbox.claim(self.batch_limit)
        self._idle = not batch
        if not batch:
            return IDLE_POLL_S
        return self._deliver(batch)

    def drain(self, max_cycles=1000):
        """Send until nothing is pending or a cycle asks to wait (tests, Upload)."""
        for _ in range(max_cycles):
            if not self.outbox.waiting():
                return True
            if self.cycle():
                return False
        return False

    def _deliver(self, batch):
        try:
            reply = self.transport.request("POST", EVALUATIONS, self._body(batch))
        except TransportError as e:
            self.outbox.release(e_["id"] for e_ in batch)
            self.status.online = False
            return self._backoff(str(e))
        status = reply.status
        if status == 200:
            return self._on_ok(batch, reply)
        if status == 400:
            return self._on_bad_request(batch, reply)
        self.outbox.release(e["id"] for e in batch)
        if status == 413:
            if len(batch) == 1:
                self.status.rejected += self.outbox.mark_rejected(
                    {batch[0]["id"]: "413: too large for the server"})
                return 0
            self.batch_limit = max(1, len(batch) // 2)
            logger.warning("uploader: server says the batch is too large; now %d", self.batch_limit)
            return 0
        self.status.online = status not in (401, 403) and status < 500
        if status in (401, 403):
            self.status.fault = "auth"
            # An authentication problem is not cured by hammering: retry slowly.
            return self._backoff(f"{status}: server refused the device key", floor=self.backoff_max_s / 4)
        if status in (429, 503):
            wait = _retry_after(reply.headers.get("Retry-After"), self.wall())
            if wait is not None:
                self.status.last_error = f"{status}: server asks to wait {wait:g} s"
                return min(max(wait, self.backoff_min_s), self.backoff_max_s)
        return self._backoff(f"{status}: {reply.text[:100]}")

    def _on_ok(self, batch, reply):
        data = reply.data
        ids = {e["id"] for e in batch}
        try:
            acked = [i for i in list(data["accepted"]) + list(data["duplicate"]) if i in ids]
            rejected = {r["id"]: r.get("error", "rejected") for r in data.get("rejected", [])
                        if r["id"] in ids}
        except (TypeError, KeyError, AttributeError):
            self.outbox.release(ids)
            self.status.online = False
            return self._backoff("malformed answer from the server")
        # Retention counts from a wall time we trust; else stamped after sync.
        self.outbox.mark_delivered(acked, self.wall().timestamp() if self._batch_synced else None)
        if rejected:
            logger.warning("uploader: server rejected %d events: %s", len(rejected),
                           "; ".join(f"{k}: {v}" for k, v in list(rejected.items())[:3]))
            self.status.rejected += self.outbox.mark_rejected(rejected)
        unanswered = ids - set(acked) - set(rejected)
        self.outbox.release(unanswered)
        self.status.online = True
        self.status.fault = ""
        self.status.last_error = ""
        self.status.delivered += len(acked)
        self.status.last_upload_at = clock.iso(self.wall())
        self.failures = 0
        self.batch_limit = min(self.batch_size, self.batch_limit * 2)
        if unanswered and not acked and not rejected:
            return self._backoff("server acknowledged none of the batch")
        return 0

    def _on_bad_request(self, batch, reply):
        """400: some event in the batch is malformed. Split until it is alone."""
        if len(batch) == 1:
            error = (reply.data or {}).get("error") if isinstance(reply.data, dict) else None
            self.status.rejected += self.outbox.mark_rejected(
                {batch[0]["id"]: f"400: {error or reply.text[:200]}"})
            return 0
        mid = len(batch) // 2
        delay = self._deliver(batch[:mid])
        if delay:
            self.outbox.release(e["id"] for e in batch[mid:])
            return delay
        return self._deliver(batch[mid:])

    def _body(self, batch):
        synced = self._batch_synced = bool(self.synced())
        if synced:
            now_wall, now_ms = self.wall(), self.monotonic_ms()
            events = []
            for event in batch:
                if not event.get("clock_synced", True) and event.get("boot_id") == self.boot_id:
                    event = dict(event, corrected_at=clock.corrected_time(event, now_wall, now_ms))
                events.append(event)
        else:
            events = batch
        return {"device_id": self.device_id, "sent_at": clock.iso(self.wall()), "events": events}

    def _backoff(self, why, floor=0.0):
        """Capped exponential delay with jitter; never zero, so never a busy loop."""
        self.status.last_error = why
        base = min(self.backoff_max_s, self.backoff_min_s * (2 ** self.failures))
        self.failures = min(self.failures + 1, 30)
        delay = max(floor, base * (0.5 + 0.5 * self.rand()))
        logger.info("uploader: %s; next try in %.1f s", why, delay)
        return min(delay, self.backoff_max_s)


def _retry_after(value, now):
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())
