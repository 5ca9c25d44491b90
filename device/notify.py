"""systemd as the supervisor's supervisor: READY, WATCHDOG, STATUS and STOPPING.

The shipped unit runs the device with ``Type=notify`` and ``WatchdogSec=``.
systemd counts the device as started only once it says ``READY=1`` (after
the first frame, or once recovery is up), shows its ``STATUS=`` line in
``systemctl status``, and restarts it when the ``WATCHDOG=1`` pings stop:
they are sent only while the supervisor says the device is healthy, so a
loop stuck on a bus or an outbox that no longer answers ends in a restart
instead of a frozen counter.

The protocol (``sd_notify(3)``) is one datagram of newline-separated
``NAME=value`` lines to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``
(a name starting with ``@`` is in the abstract namespace). It is a few
lines, so they live here rather than in a dependency: ``sdnotify`` on PyPI
has had no release since 2017, and ``systemd-python`` needs libsystemd's
headers to build on the Pi.

Outside systemd (the simulator, tests, a shell) ``$NOTIFY_SOCKET`` is unset
and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, MutableMapping

logger = logging.getLogger(__name__)

#: Without a systemd watchdog, how old the last sign of life may be before it counts as none.
STALE_S = 30.0


class Notifier:
    """Sends ``sd_notify`` messages to systemd (or nothing, without a socket).

    Args:
        address: ``$NOTIFY_SOCKET``: a path, or ``@name`` for the abstract namespace; None or empty
            when not run by systemd.
        watchdog_s: the watchdog timeout systemd expects pings within (``$WATCHDOG_USEC``), or None.
    """

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address or ""
        self.watchdog_s = watchdog_s if watchdog_s and watchdog_s > 0 else None
        self._socket: socket.socket | None = None
        # Reentrant: SIGTERM's handler says STOPPING on the main thread, which may be inside notify() itself.
        self._lock = threading.RLock()
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None, unset: bool = True) -> Notifier:
        """The notifier systemd asked for through the environment.

        Args:
            environ: the environment (default ``os.environ``).
            unset: remove the variables, as ``sd_notify(unset_environment=1)`` does, so that
                programs the device starts (``nmcli``) do not talk to systemd in its name.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        watchdog_s = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is for; another one's is not ours.
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        if unset:
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(name, None)
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        """True when systemd listens (the device runs under a ``Type=notify`` unit)."""
        return bool(self.address)

    def notify(self, *assignments: str) -> bool:
        """Send ``NAME=value`` lines in one datagram; False if not sent (never raises)."""
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message, address)
            except OSError as e:
                if not self._failed:  # once: a vanished socket must not flood the journal
                    logger.warning("cannot notify systemd at %s: %s", self.address, e)
                self._failed = True
                return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up is complete (the first frame is on the panel, or recovery is up)."""
        return self.notify("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        """The one line ``systemctl status`` shows."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """The device is healthy: systemd's watchdog timer starts again."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        """Shutting down (SIGTERM): systemd waits for the exit instead of calling it a failure."""
        return self.notify("STOPPING=1", _status(status))

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _status(text: str) -> str:
    # One line: a newline would start another assignment.
    return "STATUS=" + " ".join(text.split())[:200]


class Liveness:
    """Signs of life, and READY then STATUS as what the device is doing changes.

    Args:
        notifier: the :class:`Notifier`; its watchdog timeout sets :attr:`limit_s`.
        clock: monotonic seconds.
    """

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.clock = clock
        self.at = clock()
        self._told: str | None = None

    @property
    def limit_s(self) -> float:
        """A sign of life older than this is none: half the watchdog timeout (a ping is due in it)."""
        return self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else STALE_S

    def beat(self) -> None:
        """A sign of life."""
        self.at = self.clock()

    def age(self, now: float | None = None) -> float:
        """Seconds since the last sign of life."""
        return (self.clock() if now is None else now) - self.at

    def tell(self, status: str) -> None:
        """READY with the first status (the first frame is up, or recovery is); STATUS at each change."""
        if status == self._told:
            return
        first, self._told = self._told is None, status
        if first:
            self.notifier.ready(status)
        else:
            self.notifier.status(status)


class Watchdog:
    """Pings systemd's watchdog while ``health()`` finds nothing wrong.

    ``health()`` returns ``""`` when healthy, else why not. The check runs on
    this thread: a check that blocks (an outbox stuck on a dying SD card)
    stops the pings just as a failed one does, and systemd restarts the device.

    Args:
        notifier: the :class:`Notifier` (its ``watchdog_s`` sets the pace).
        health: ``() -> str``, ``""`` when the device is healthy.
        interval_s: seconds between checks; default a quarter of the watchdog timeout.
        describe: ``() -> str``, the status line to show again once healthy after a failed check.
    """

    def __init__(self, notifier: Notifier, health: Callable[[], str], interval_s: float | None = None,
                 describe: Callable[[], str] | None = None) -> None:
        self.notifier = notifier
        self.health = health
        self.describe = describe
        self.interval_s = interval_s or (notifier.watchdog_s or 0.0) / 4
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Why the last check failed ("" while healthy).
        self.problem = ""

    def start(self) -> Watchdog:
        """Start pinging, if systemd expects pings; a no-op otherwise."""
        if self.notifier.enabled and self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def check(self) -> bool:
        """One check, and a ping if it passed; True when pinged."""
        try:
            problem = self.health()
        except Exception as e:  # a check that fails is a reason not to ping, never a crash
            problem = f"health check failed: {type(e).__name__}: {e}"
        if problem != self.problem:
            if problem:
                logger.error("watchdog: not healthy, systemd will restart the device if this lasts: %s", problem)
                self.notifier.status(f"not healthy: {problem}")
            else:
                logger.info("watchdog: healthy again")
                if self.describe is not None:
                    self.notifier.status(self.describe())
            self.problem = problem
        if problem:
            return False
        return self.notifier.watchdog()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
