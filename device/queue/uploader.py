"""The uploader: drains the outbox to the hall server, beside the button loop.

It runs in its own thread and never holds the outbox lock while waiting on
the network, so a press is committed and thanked for however slow the
server is. Only the ids the server acknowledged are marked delivered;
everything else goes back to pending and is sent again later, which the
server's idempotency on ``id`` makes safe.
"""

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass

from device import clock
from device.errors import TransportError

logger = logging.getLogger(__name__)

EVALUATIONS = "/api/v1/evaluations"
#: With nothing to send, look again this often (an append wakes us sooner).
IDLE_POLL_S = 5.0


@dataclass
class UploadStatus:
    """What the screen, the console and the heartbeat show of the uplink."""

    online: bool | None = None      # None until the first attempt
    last_upload_at: str = ""        # wall time of the last acknowledged batch
    last_error: str = ""
    fault: str = ""                 # "auth" while the server refuses our key
    delivered: int = 0


class Uploader:
    """Sends pending events oldest first, in batches, with capped backoff.

    Args:
        outbox: the :class:`~device.queue.outbox.Outbox`.
        transport: an object with ``request(method, path, obj) -> Reply``.
        device_id: the ``device_id`` of the request body.
        batch_size: events per request at most.
        backoff_min_s, backoff_max_s: the bounds of the retry delay.
        monotonic, wall, synced, rand: injected so tests control time.
    """

    def __init__(self, outbox, transport, device_id, batch_size=100,
                 backoff_min_s=1.0, backoff_max_s=300.0, *, monotonic_ms=clock.mono_ms,
                 wall=clock.wall_now, synced=clock.kernel_clock_synced, boot_id=None,
                 rand=random.random):
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

    def wake(self):
        """Something was appended: send without waiting for the idle poll."""
        self._wake.set()

    def run(self):
        while not self._stopping.is_set():
            try:
                delay = self.cycle()
            except Exception:  # one bad batch must never kill the uplink
                logger.exception("uploader: unexpected error")
                self.outbox.release(e["id"] for e in self.outbox.events("sending"))
                delay = self._backoff("unexpected error")
            if delay:
                self._wake.wait(delay)
                self._wake.clear()

    # --- one cycle ----------------------------------------------------------

    def cycle(self):
        """Send one batch. Returns the seconds to wait before the next cycle."""
        batch = self.outbox.claim(self.batch_limit)
        if not batch:
            return IDLE_POLL_S
        return self._deliver(batch)

    def drain(self, max_cycles=1000):
        """Send until nothing is pending or a cycle asks to wait (tests, Upload)."""
        for _ in range(max_cycles):
            if not self.outbox.counts()["pending"]:
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
                self.outbox.mark_rejected({batch[0]["id"]: "413: too large for the server"})
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
        self.outbox.mark_delivered(acked, time.time())
        if rejected:
            logger.warning("uploader: server rejected %d events: %s", len(rejected),
                           "; ".join(f"{k}: {v}" for k, v in list(rejected.items())[:3]))
            self.outbox.mark_rejected(rejected)
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
            self.outbox.mark_rejected({batch[0]["id"]: f"400: {error or reply.text[:200]}"})
            return 0
        mid = len(batch) // 2
        delay = self._deliver(batch[:mid])
        if delay:
            self.outbox.release(e["id"] for e in batch[mid:])
            return delay
        return self._deliver(batch[mid:])

    def _body(self, batch):
        synced = self.synced()
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
