"""The one thread base every background worker shares (uploader, hall link, console).

A :class:`Worker` owns its state. Other threads never write it: they read
the immutable snapshot it publishes (:attr:`Worker.status`) and ask it to
act by :meth:`Worker.wake`, or by :meth:`Worker.hand_over`, which queues a
function that the worker's own thread runs before its next cycle. Replacing
the snapshot is one reference assignment, atomic in CPython, so readers
need no lock and always see a whole snapshot, never half of an update.

Like huey's consumer, one bad cycle is logged with its traceback and the
loop goes on after a pause: a bug in one batch must not end the uplink.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

#: After a cycle raised, the worker waits this long before the next one.
ERROR_PAUSE_S = 5.0


class Worker(Generic[S]):
    """A daemon thread running :meth:`cycle` until stopped.

    Subclasses implement :meth:`cycle`, which does one unit of work and
    returns how many seconds to wait before the next (``None``: until woken).
    A :meth:`wake` cuts the wait short.

    Args:
        name: the thread's name (shown in logs and tracebacks).
        status: the first snapshot, an immutable value (a frozen dataclass).
        error_pause_s: the wait after a cycle that raised.
    """

    def __init__(self, name: str, status: S, *, error_pause_s: float = ERROR_PAUSE_S) -> None:
        self.name = name
        self._status = status
        self.error_pause_s = error_pause_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()

    # --- the published snapshot ----------------------------------------------

    @property
    def status(self) -> S:
        """The latest snapshot this worker published (read from any thread)."""
        return self._status

    def publish(self, **changes: Any) -> S:
        """Replace the snapshot by a copy with ``changes``; only the owning thread calls this."""
        self._status = dataclasses.replace(self._status, **changes)  # type: ignore[type-var]
        return self._status

    # --- the thread -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Worker[S]:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        self._wake.set()
        self.on_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        """End the current wait at once."""
        self._wake.set()

    def hand_over(self, fn: Callable[[], T]) -> Future[T]:
        """Have the worker's own thread run ``fn`` before its next cycle (from any thread).

        Returns:
            A future with what ``fn`` returned or raised; cancelled if the
            worker stops first. The worker is woken.
        """
        future: Future[T] = Future()
        self._requests.put((fn, future))
        self.wake()
        return future

    def run_requests(self) -> int:
        """Run what other threads handed over, in order (the owning thread only).

        :meth:`run` calls it before every cycle; a test that drives a worker
        by hand calls it itself. Returns how many ran.
        """
        done = 0
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return done
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as e:
                logger.exception("%s: a request handed over failed", self.name)
                future.set_exception(e)
            done += 1

    def run(self) -> None:
        """The loop: requests, a cycle, then a wait that :meth:`wake` or :meth:`stop` cuts short."""
        while not self._stopping.is_set():
            # Cleared before the cycle, not after the wait: a wake that comes
            # while the cycle runs (a request handed over, an append) makes
            # the wait below end at once instead of being lost.
            self._wake.clear()
            try:
                self.run_requests()
                wait = self.cycle()
            except Exception:
                logger.exception("%s: unexpected error; going on in %.0f s", self.name, self.error_pause_s)
                wait = self.error_pause_s
            if self._stopping.is_set():
                break
            if wait is None or wait > 0:
                self._wake.wait(wait)
        while True:  # nobody waits for ever on a request that will not run
            try:
                self._requests.get_nowait()[1].cancel()
            except queue.Empty:
                break
        self.on_exit()

    # --- for subclasses ------------------------------------------------------

    def cycle(self) -> float | None:
        """One unit of work; returns seconds until the next (None: until woken)."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Called by :meth:`stop` from the stopping thread (e.g. close a socket to end a read)."""

    def on_exit(self) -> None:
        """Called on the worker's own thread as its loop ends."""
