"""The uploader: drains the outbox to the hall server, beside the button loop.

It is a :class:`~device.worker.Worker`: it runs in its own thread, owns its
transport, its counters and its backoff, and publishes an immutable
:class:`UploadStatus` that any thread may read. Other threads only hand it
requests (:meth:`Uploader.reconfigure`, :meth:`Uploader.retry_rejected`,
:meth:`Uploader.check_uplink`, :meth:`Uploader.wake`), which its own thread
carries out before its next cycle (:meth:`~device.worker.Worker.hand_over`).

It never holds the outbox lock while waiting on the network, so a press is
committed and thanked for however slow the server is, and no request takes
longer than the transport's deadline (``upload.timeout_s``). Only the ids
the server acknowledged in an answer that verified as the hall's are marked
delivered; everything else goes back to pending and is sent again later,
which the server's idempotency on ``id`` makes safe. An answer that does not
verify (a captive portal, a proxy's error page, a rogue server) is no answer
at all: never an acknowledgement, a rejection or a dead letter; the uploader
backs off and shows the fault ``unauthenticated_answer``.

The same thread posts the heartbeat and prunes delivered events
(:class:`~device.queue.health.Upkeep`).
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future
from typing import Any

from device import __version__, clock
from device.clock import Clocks
from device.errors import TransportError, UnauthenticatedAnswer
from device.queue import client as client_mod
from device.queue import wire
from device.queue.client import Delivery, HallClient, Refusal, as_client
from device.queue.health import (
    AUTH,
    REFUSED,
    SEQ_TAKEN,
    UNAUTHENTICATED,
    Upkeep,
    UploadStatus,
    uplink_check,
    uplink_faults,
)
from device.queue.outbox import REJECTED, Event, Outbox
from device.queue.transport import Backoff, Transport
from device.records import GENESIS_HASH
from device.worker import Worker

logger = logging.getLogger(__name__)

#: With nothing to send, look again this often (an append wakes us sooner).
IDLE_POLL_S = 5.0
#: Answers in a row naming ``seq_taken`` with nothing acknowledged, before the uploader backs off.
MAX_RESEALS_IN_A_ROW = 3


class Uploader(Worker[UploadStatus]):
    """Sends pending events oldest first, in batches, with capped backoff.

    Args:
        outbox: the :class:`~device.queue.outbox.Outbox`.
        transport: an object with ``request(method, path, obj) -> Reply``;
            the uploader owns it from now on (uses it, and closes it when replaced).
        device_id: the ``device_id`` of the request body.
        batch_size: events per request at most.
        backoff_min_s, backoff_max_s: the bounds of the retry delay.
        heartbeat_s: seconds between heartbeats (0: none).
        retain_days: delivered events older than this are pruned (0: never).
        prune_every_s, prune_batch: how often, and how many events at most
            per transaction, so the button loop never waits long on the lock.
        firmware: reported in the heartbeat.
        extra_faults: returns further fault codes for the heartbeat (the
            app's); called on the uploader's thread, so it must only read
            published snapshots.
        heartbeat_fields: returns further heartbeat fields (the app's, e.g.
            ``ignored_presses``, ``noise_pulses``); the same rule.
        clocks: the device's :class:`~device.clock.Clocks`, handed to the
            transport too (it signs with them and teaches them the hall's
            time); ``monotonic_ms``, ``wall``, ``synced`` and ``boot_id``
            override single clocks (plain callables, so tests move time by hand).
        rand: jitter in [0, 1).
    """

    def __init__(self, outbox: Outbox, transport: HallClient | Transport, device_id: str, batch_size: int = 100,
                 backoff_min_s: float = 1.0, backoff_max_s: float = 300.0, *, heartbeat_s: float = 300.0,
                 retain_days: int = 90, prune_every_s: float = 3600.0, prune_batch: int = 500,
                 firmware: str = __version__, extra_faults: Callable[[], Iterable[str]] | None = None,
                 heartbeat_fields: Callable[[], Mapping[str, Any]] | None = None,
                 clocks: Clocks | None = None, monotonic_ms: Callable[[], int] | None = None,
                 wall: Callable[[], datetime.datetime] | None = None,
                 synced: Callable[[], bool] | None = None, boot_id: str | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        super().__init__("uploader", UploadStatus())
        clocks = clocks or Clocks()
        self.clocks = clocks
        self.outbox = outbox
        #: How the hall is reached (:class:`~device.queue.client.HallClient`); a bare transport is wrapped.
        self.client: HallClient = as_client(transport)
        _hand_clocks(self.client, clocks)
        self.device_id = device_id
        self.batch_size = batch_size
        self.backoff = Backoff(backoff_min_s, backoff_max_s, rand)
        self.monotonic_ms = monotonic_ms or clocks.mono_ms
        self.wall = wall or clocks.wall
        self.synced = synced or clocks.is_synced
        self.clock_source: Callable[[], str] = ((lambda: clock.NTP if synced() else "") if synced
                                                else clocks.source)
        self.boot_id = boot_id or clocks.boot_id
        self.started_ms = self.monotonic_ms()
        #: The heartbeat and pruning, done in this worker's cycles.
        self.upkeep = Upkeep(self, heartbeat_s=heartbeat_s, retain_days=retain_days, prune_every_s=prune_every_s,
                             prune_batch=prune_batch, firmware=firmware, extra_faults=extra_faults,
                             extra_fields=heartbeat_fields)
        #: Monotonic ms before which no batch goes (a backoff or Retry-After).
        self.send_at_ms = 0
        self._batch_synced = True
        self._idle = True
        #: Shrinks on 413, grows back after successes.
        self.batch_limit = batch_size
        self._force_lock = threading.Lock()
        self._force = False
        #: ``{id: monotonic ms}``: events refused alone, kept claimed (held back) until then.
        self._held: dict[str, int] = {}
        self._held_failures: dict[str, int] = {}
        self._reseals_in_a_row = 0

    @property
    def transport(self) -> Any:
        """The transport under the hall client (the client itself when it has none)."""
        return getattr(self.client, "transport", self.client)

    # --- requests from other threads (they only hand work over) -----------------

    def wake(self, force: bool = False) -> None:
        """Something was appended: send without waiting for the idle poll.

        A wait after a failure (backoff, Retry-After) is not cut short, or a
        press storm with the server down would hammer it; ``force=True`` (a
        technician's Upload, a new configuration) cuts that short too.
        """
        if force:
            with self._force_lock:
                self._force = True
        super().wake()

    def reconfigure(self, *, transport: HallClient | Transport | None = None, device_id: str | None = None,
                    batch_size: int | None = None) -> None:
        """Use a new transport (server, key), device id or batch size from the next cycle on.

        The uploader closes the transport it replaces; a new transport also
        clears the ``auth`` fault and the backoff, so the new key is tried at once.
        """
        self.hand_over(lambda: self._apply(transport, device_id, batch_size))
        self.wake(force=True)

    def retry_rejected(self) -> Future[int]:
        """Send the dead letters again (the technician's ``Upload``), at once.

        Returns:
            A future of how many went back to pending.
        """
        future = self.hand_over(self._retry_rejected)
        self.wake(force=True)
        return future

    def check_uplink(self, timeout: float = 30.0) -> dict[str, Any]:
        """Post a heartbeat now, on the uploader's own thread, and describe the answer.

        What :func:`uplink_check` returns; ``uplink_off`` when the uploader
        is not running (no device key), ``uplink_busy`` when it does not get
        to it within ``timeout`` seconds.
        """
        off = {"ok": False, "error": "uplink_off",
               "message": "the uploader is not running (is a device key provisioned?)"}
        if not self.running:
            return off
        answer = self.hand_over(lambda: uplink_check(self.client, self.device_id, self.upkeep.heartbeat_body()))
        try:
            return answer.result(timeout)
        except CancelledError:
            return off
        except TimeoutError:
            answer.cancel()
            return {"ok": False, "error": "uplink_busy",
                    "message": f"the uploader did not get to the test within {timeout:g} s"}

    def _apply(self, transport: HallClient | Transport | None, device_id: str | None,
               batch_size: int | None) -> None:
        if transport is not None and transport is not self.client and transport is not self.transport:
            old, self.client = self.client, as_client(transport)
            old.close()
            _hand_clocks(self.client, self.clocks)
            self.backoff.reset()
            self.send_at_ms = 0
            self.publish(fault="", last_error="")
        if device_id is not None:
            self.device_id = device_id
        if batch_size is not None:
            self.batch_size = self.batch_limit = batch_size
        logger.info("uploader: configuration changed")

    def _retry_rejected(self) -> int:
        retried = self.outbox.retry_rejected()
        logger.info("uploader: sending %d rejected events again, as the technician asked", retried)
        self.publish(rejected=max(0, self.status.rejected - retried))
        return retried

    # --- the cycle (the worker's own thread) ----------------------------------------

    def cycle(self) -> float:
        """Send a batch when one may go, then heartbeat and prune when due.

        Requests handed over by other threads have run just before
        (:meth:`~device.worker.Worker.run_requests`).

        Returns:
            Seconds until something is due (a wake cuts it short).
        """
        with self._force_lock:
            force, self._force = self._force, False
        held_s = self.release_held()
        now = self.monotonic_ms()
        if force or now >= self.send_at_ms:
            delay = self._send_safely()
            # Idle: any wake (an append) may send at once; else wait the delay out.
            self.send_at_ms = now if self._idle else now + int(delay * 1000)
            send_wait = delay
        else:
            send_wait = (self.send_at_ms - now) / 1000
        try:
            until = self.upkeep.run()
        except Exception:
            logger.exception("uploader: housekeeping failed")
            until = IDLE_POLL_S
        self.refresh_status()
        return max(0.0, min(send_wait, until, held_s))

    def on_stop(self) -> None:
        self.client.close()

    def _send_safely(self) -> float:
        try:
            return self.send_batch()
        except Exception:  # one bad batch must never kill the uplink
            logger.exception("uploader: unexpected error")
            try:
                self.outbox.release(e["id"] for e in self.outbox.events("sending"))
            except Exception:
                logger.exception("uploader: cannot put the batch back; it goes back at the next start")
            self._held.clear()  # released with the rest
            self._idle = False
            return self._backoff("unexpected error")

    def send_batch(self) -> float:
        """Send one batch now (one request). Returns the seconds to wait before the next."""
        batch = self.outbox.claim(self.batch_limit)
        self._idle = not batch
        if not batch:
            return IDLE_POLL_S
        return self._deliver(batch)

    def drain(self, max_cycles: int = 1000) -> bool:
        """Send until nothing is pending or a batch asks to wait (tests, tools, the benchmark)."""
        for _ in range(max_cycles):
            if not self.outbox.waiting():
                return True
            if self.send_batch():
                return False
        return False

    def _deliver(self, batch: list[Event]) -> float:
        try:
            word = self.client.deliver(self.device_id, self._sent_at(), list(batch))
        except UnauthenticatedAnswer as e:
            # No answer at all: not an acknowledgement, not a rejection, not a time.
            self.outbox.release(e_["id"] for e_ in batch)
            self.publish(online=False, fault=UNAUTHENTICATED, unauthenticated=self.status.unauthenticated + 1)
            logger.warning("uploader: %s", e)
            return self._backoff(str(e))
        except TransportError as e:
            self.outbox.release(e_["id"] for e_ in batch)
            self.publish(online=False)
            return self._backoff(str(e))
        if isinstance(word, Refusal):
            return self._on_refusal(batch, word)
        return self._on_delivery(batch, word)

    def _on_refusal(self, batch: list[Event], refusal: Refusal) -> float:
        """The hall (verified) refused the whole request: never a dead letter, whatever it said."""
        if refusal.kind == client_mod.TOO_LARGE and len(batch) > 1:
            self.outbox.release(e["id"] for e in batch)
            self.batch_limit = max(1, len(batch) // 2)
            self.publish(online=True, last_error=refusal.describe())
            logger.warning("uploader: the hall says the batch is too large; now %d", self.batch_limit)
            return 0
        if refusal.kind == client_mod.OTHER and refusal.status == 400 and len(batch) > 1:
            # One event in it may be one the hall cannot read: send smaller batches to find it.
            self.outbox.release(e["id"] for e in batch)
            self.batch_limit = max(1, len(batch) // 2)
            self.publish(online=True, last_error=refusal.describe())
            return 0
        if refusal.kind == client_mod.AUTH:
            self.outbox.release(e["id"] for e in batch)
            self.publish(online=False, fault=AUTH, last_error=refusal.describe())
            # An authentication problem is not cured by hammering: retry slowly.
            return self._backoff(refusal.describe(), floor=self.backoff.max_s / 4)
        if refusal.kind == client_mod.WAIT:
            self.outbox.release(e["id"] for e in batch)
            self.publish(online=refusal.status < 500)
            if refusal.retry_after is not None:
                self.publish(last_error=f"{refusal.status}: server asks to wait {refusal.retry_after:g} s")
                return self.backoff.within(refusal.retry_after)
            return self._backoff(refusal.describe())
        if len(batch) == 1 and refusal.status in (400, 413):
            # Refused alone: kept (never given up) but held back a while, so the events behind it go.
            self._hold(batch[0]["id"])
        else:
            self.outbox.release(e["id"] for e in batch)
        self.publish(online=refusal.status < 500, fault=REFUSED)
        logger.warning("uploader: %s (nothing given up; tried again later)", refusal.describe())
        return self._backoff(refusal.describe())

    def _hold(self, event_id: str) -> None:
        """Keep a refused event claimed (so claims pass it by) until its hold runs out."""
        failures = self._held_failures.get(event_id, 0) + 1
        self._held_failures[event_id] = failures
        hold_s = min(self.backoff.max_s, self.backoff.min_s * (2 ** min(failures, 20)))
        self._held[event_id] = self.monotonic_ms() + int(hold_s * 1000)
        logger.warning("uploader: event %s refused alone %d times; held back %.0f s", event_id, failures, hold_s)

    def release_held(self, everything: bool = False) -> float:
        """Put held events whose hold ran out back to pending. Returns seconds until the next runs out."""
        if not self._held:
            return IDLE_POLL_S
        now = self.monotonic_ms()
        due = [i for i, until in self._held.items() if everything or until <= now]
        if due:
            self.outbox.release(due)
            for i in due:
                del self._held[i]
        return (min(self._held.values()) - now) / 1000 if self._held else IDLE_POLL_S

    def _on_delivery(self, batch: list[Event], word: Delivery) -> float:
        ids = {e["id"] for e in batch}
        acked = [i for i in word.acknowledged if i in ids]
        rejected = {i: error for i, error in word.rejected.items() if i in ids}
        taken = [i for i in word.seq_taken if i in ids]
        # Retention counts from a wall time we trust; else stamped after sync.
        self.outbox.mark_delivered(acked, self.wall().timestamp() if self._batch_synced else None)
        for i in acked:
            self._held_failures.pop(i, None)
        if rejected:
            logger.warning("uploader: the hall rejected %d events: %s", len(rejected),
                           "; ".join(f"{k}: {v}" for k, v in list(rejected.items())[:3]))
            self._reject(rejected)
        unanswered = ids - set(acked) - set(rejected)
        self.outbox.release(unanswered)
        self.publish(online=True, fault="", last_error="", delivered=self.status.delivered + len(acked),
                     last_upload_at=clock.iso(self.wall()),
                     hall_head=(word.head.seq, word.head.hash) if word.head else self.status.hall_head)
        self._after_delivery(word.head, bool(acked))
        self.backoff.reset()
        self.batch_limit = min(self.batch_size, self.batch_limit * 2)
        if taken:
            return self._reseal(word.head, len(taken), bool(acked))
        self._reseals_in_a_row = 0
        if unanswered and not acked and not rejected:
            return self._backoff("server acknowledged none of the batch")
        return 0

    def _after_delivery(self, head: wire.Head | None, delivered: bool) -> None:
        """Tell the outbox the hall's head, and copy its WAL in while nothing waits on it."""
        try:
            if head is not None:
                self.outbox.note_acknowledged_head(head.seq, head.hash)
            if delivered:
                self.outbox.checkpoint(passive=True)
        except Exception:  # bookkeeping must never stop delivery
            logger.exception("uploader: bookkeeping after a delivered batch failed")

    def _reseal(self, head: wire.Head | None, taken: int, acked: bool) -> float:
        """The hall holds seqs of ours under other ids: seal what it has not acknowledged after its head."""
        reseal = getattr(self.outbox, "reseal", None)
        if reseal is None:
            self.publish(fault=SEQ_TAKEN, last_error=f"the hall holds {taken} of our seqs under other ids")
            return self._backoff("seq_taken, and this outbox cannot seal again")
        self._reseals_in_a_row = 0 if acked else self._reseals_in_a_row + 1
        if self._reseals_in_a_row > MAX_RESEALS_IN_A_ROW:
            self.publish(fault=SEQ_TAKEN)
            return self._backoff(f"the hall still says seq_taken after {MAX_RESEALS_IN_A_ROW} reseals")
        self.release_held(everything=True)
        after_seq, after_hash = (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)
        n = reseal(after_seq, after_hash)
        logger.warning("uploader: the hall holds %d of our seqs under other ids; %d events sealed again "
                       "after its head %d", taken, n, after_seq)
        self.publish(resealed=self.status.resealed + n)
        return 0

    def _reject(self, rejections: dict[str, str]) -> None:
        self.publish(rejected=self.status.rejected + self.outbox.mark_rejected(rejections))

    def _sent_at(self) -> str:
        # Events go as sealed: one stamped before the clock was set is dated by its boot's clock event.
        self._batch_synced = bool(self.synced())
        return clock.iso(self.wall())

    def _backoff(self, why: str, floor: float = 0.0) -> float:
        """Capped exponential delay with jitter; never zero, so never a busy loop."""
        self.publish(last_error=why)
        delay = self.backoff.next(floor)
        logger.info("uploader: %s; next try in %.1f s", why, delay)
        return delay

    # --- the published counts --------------------------------------------------------------

    def refresh_status(self) -> UploadStatus:
        """Count backlog, dead letters and storage again, and publish them with the uplink's faults."""
        storage = self.outbox.storage_state()
        rejected = self.outbox.count(REJECTED)
        standing = tuple(getattr(self.client, "faults", ()))
        clock_faults: tuple[str, ...] = (clock.DISAGREES,) if self.clocks.disagrees() else ()
        if self._held:
            clock_faults += (f"{REFUSED}: {len(self._held)} events refused alone, held back (kept)",)
        return self.publish(rejected=rejected, storage=storage[0], backlog=self.outbox.waiting(),
                            clock_source=self.clock_source(), transport_faults=standing,
                            held=len(self._held), signature=str(getattr(self.client, "algorithm", "")),
                            faults=uplink_faults(self.status, storage, rejected, bool(self.synced()),
                                                 standing + clock_faults))


def _hand_clocks(transport: HallClient | Transport, clocks: Clocks) -> None:
    """The worker that owns a transport hands it its clocks (a test's fake may take none)."""
    use = getattr(transport, "use_clocks", None)
    if use is not None:
        use(clocks)

