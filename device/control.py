"""The console's view of the running device (``console.DeviceControl``).

The console runs in its own thread. Anything that touches the state
machine, the configuration or the screen is handed to the app's loop as a
:class:`Call` and waited for, so the loop stays the only thread that changes
them; the outbox has its own lock and is read directly.
"""

import dataclasses
import logging
import os
import queue
import threading
import typing

from device import __version__
from device import config as config_mod
from device.config import Secret
from device.console import uplink_check  # moves to the wire contract
from device.queue.transport import HttpTransport

logger = logging.getLogger(__name__)

#: Sections and keys that only take effect when the program starts again.
RESTART_KEYS = ("display.", "buttons.", "console.", "outbox.", "log.", "session.source")


class DeviceControl(typing.Protocol):
    """Everything the console asks of the device. Methods are called from the
    console's thread; an implementation hands work to the device's own loop
    where it must (see the module's wiring notes in the report)."""

    def current_config(self) -> config_mod.Config:
        """The configuration last committed (what reads answer)."""

    def status(self) -> dict:
        """Device state for ``Status``: uptime, backlog, online, faults ... never secrets."""

    def queue(self) -> dict:
        """Outbox counts for ``Queue``: pending, sending, delivered, rejected, oldest ..."""

    def upload_now(self) -> None:
        """Wake the uploader now."""

    def apply(self, config: config_mod.Config, key: Secret | None = None) -> list[str]:
        """Take a committed configuration (and a new device key, if one was
        committed) into use; return the keys that only take effect after a restart."""

    def test_display(self) -> dict | None:
        """Show a test pattern for a few seconds; optionally describe it."""

    def test_uplink(self) -> dict:
        """Send a signed heartbeat and report the answer (see :func:`uplink_check`)."""

    def button_test(self, active: bool) -> None:
        """Start (True) or end (False) the button test: while active, presses
        are not ratings; they go to :meth:`wait_button`."""

    def wait_button(self, timeout: float) -> int | None:
        """The next rating button pressed (1 to 5) during the test, or None on timeout."""

    def restart(self) -> None:
        """Restart the device program (after the answer has been written)."""

    def factory_reset(self) -> None:
        """Settings, key and PIN are already gone; forget the rest (never an
        undelivered rating) and restart."""


@dataclasses.dataclass(eq=False)
class Call:
    """An input for the app's loop: run ``fn`` there and hand back its result."""

    fn: object
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # handed back to the waiting thread
            self.error = e
        finally:
            self.done.set()

    def wait(self, timeout=10.0):
        if not self.done.wait(timeout):
            raise TimeoutError("the device loop did not answer in time")
        if self.error is not None:
            raise self.error
        return self.result


class AppControl(DeviceControl):
    """DeviceControl over the current :class:`~device.app.App` (replaced on restart)."""

    def __init__(self, app=None):
        self.app = app

    def _on_loop(self, fn, timeout=10.0):
        call = Call(fn)
        self.app.events.put(call)
        return call.wait(timeout)

    def current_config(self):
        return self.app.committed_config

    def status(self):
        app = self.app
        status = app.uploader.status
        counts = app.outbox.counts()
        return {
            "device_id": app.config.device.id,
            "firmware": __version__,
            "uptime_s": round(app.monotonic() - app.started),
            "window": app.config.device.window_no,
            "staff": app.config.staff.no,
            "source": app.rules.source,
            "screen": app.state.screen,
            "backlog": counts["pending"] + counts["sending"],
            "rejected": counts["rejected"],
            "online": status.online,
            "last_upload_at": status.last_upload_at,
            "last_error": status.last_error,
            "faults": app.faults(),
            "clock_synced": app.clock_synced(),
            "ignored_presses": app.state.ignored,
        }

    def queue(self):
        counts = self.app.outbox.counts()
        oldest = self.app.outbox.oldest_waiting()
        counts["oldest_pending_seq"] = oldest["seq"] if oldest else None
        return counts

    def upload_now(self):
        # A technician's Upload is also the command that sends dead letters again.
        retried = self.app.outbox.retry_rejected()
        if retried:
            logger.info("technician asked to send %d rejected events again", retried)
        self.app.uploader.wake(force=True)

    def apply(self, config, key=None):
        return self._on_loop(lambda: self.app.reconfigure(config, key))

    def test_display(self):
        self._on_loop(self.app.show_test_pattern)
        return {"pattern": "checkerboard", "seconds": self.app.TEST_PATTERN_S}

    def test_uplink(self):
        app = self.app
        c = app.config.upload
        transport = HttpTransport(c.server, app.config.device.id, app.key, timeout=c.timeout_s,
                                  verify=c.ca_bundle or c.verify_tls)
        try:
            return uplink_check(transport, app.config.device.id, app.uploader.heartbeat_body())
        finally:
            transport.close()

    def button_test(self, active):
        self._on_loop(lambda: self.app.set_button_test(queue.Queue() if active else None))

    def wait_button(self, timeout):
        q = self.app.button_test
        if q is None:
            return None
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return None

    def restart(self):
        # After the console has written its answer: give it a moment, then stop.
        threading.Timer(0.2, self.app.request_restart).start()

    def factory_reset(self):
        try:
            os.remove(self.app.assignment_path)
        except FileNotFoundError:
            pass
        self.restart()


def needs_restart(old, new):
    """Keys whose change only a restart applies."""
    from device.config import as_dict

    before, after = as_dict(old), as_dict(new)
    changed = [f"{s}.{k}" for s in after for k in after[s] if after[s][k] != before[s][k]]
    return [k for k in changed if k.startswith(RESTART_KEYS)]

