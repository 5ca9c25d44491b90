"""What the console may ask of the device, and the supervisor's answer to it.

The console runs in its own thread and changes nothing itself. Anything that
touches the state machine, the configuration, the screen, the outbox, the
settings file, the device key or the assignment goes to the thread that owns
it as a request (:meth:`DeviceControl.ask`) and is waited for: the device's
loop, or in recovery (the device did not start) the supervisor, which builds
the device again when settings are committed. What the console reads comes
from snapshots the loop and the workers publish.
"""

from __future__ import annotations

import logging
import queue
import threading
import typing
from typing import TYPE_CHECKING, Any

from device import __version__
from device import config as config_mod
from device.checks import FIX_HINTS, load_key
from device.config import Secret
from device.errors import DeviceUnavailable
from device.handlers.commands import CommitSettings, SetButtonTest, UploadNow
from device.handlers.panel import ShowTestPattern
from device.loop import Command
from device.queue.damage import summary
from device.queue.health import uplink_check

if TYPE_CHECKING:
    from device.app import App
    from device.supervisor import Supervisor

logger = logging.getLogger(__name__)


class DeviceControl(typing.Protocol):
    """Everything the console asks of the device. Methods are called from the
    console's thread; an implementation hands work to the device's own loop
    where it must. In recovery, what needs the parts that did not start raises
    :class:`~device.errors.DeviceUnavailable`."""

    def ask(self, request: Command) -> Any:
        """Hand ``request`` to the thread that owns what it changes (the loop, or the supervisor in
        recovery) and wait for its answer. A new console request that needs the device is a
        :class:`~device.loop.Command` and one ``loop.register`` in the composition root: nothing here."""

    def current_config(self) -> config_mod.Config:
        """The configuration last committed (what reads answer)."""

    def status(self) -> dict[str, Any]:
        """Device state for ``Status``: uptime, backlog, online, faults ... never secrets."""

    def queue(self) -> dict[str, Any]:
        """Outbox counts for ``Queue``: pending, sending, delivered, rejected, oldest ..."""

    def upload_now(self) -> None:
        """Wake the uploader now."""

    def apply(self, config: config_mod.Config, key: Secret | None = None) -> list[str]:
        """Take a committed configuration (and a new device key, if one was
        committed) into use; return the keys that only take effect after a restart."""

    def test_display(self) -> dict[str, Any] | None:
        """Show a test pattern for a few seconds; optionally describe it."""

    def test_uplink(self) -> dict[str, Any]:
        """Send a signed heartbeat and report the answer (see :func:`uplink_check`)."""

    def button_test(self, active: bool) -> None:
        """Start (True) or end (False) the button test: while active, presses
        are not ratings; they go to :meth:`wait_button`."""

    def wait_button(self, timeout: float) -> int | None:
        """The next rating button pressed (1 to 5) during the test, or None on timeout."""

    def restart(self) -> None:
        """Restart the device program (after the answer has been written)."""

    def factory_reset(self) -> None:
        """Settings, key and PIN are already gone (erased by their owners); restart."""


class SupervisorControl(DeviceControl):
    """:class:`DeviceControl` over the supervisor and the app it runs (if any).

    It changes nothing itself: every change is a request carried out by the
    thread that owns it, and every read a look at a published snapshot.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._button_sink: queue.Queue[int] | None = None

    def _app(self, what: str) -> App:
        app = self.supervisor.app
        if app is None:
            faults = ", ".join(f.code for f in self.supervisor.faults) or "starting"
            raise DeviceUnavailable(f"{what} needs the running device; it is in {self.supervisor.mode} ({faults})")
        return app

    def ask(self, request: Command, timeout: float = 10.0) -> Any:
        app = self.supervisor.app
        if app is not None:
            app.events.put(request)
        elif self.supervisor.serves(type(request)):
            # In recovery the supervisor's own thread carries it out (a Commit is the repair).
            self.supervisor.events.put(request)
        else:
            self._app(type(request).__name__)
        return request.wait(timeout)

    def current_config(self) -> config_mod.Config:
        return self.supervisor.config

    def status(self) -> dict[str, Any]:
        sup = self.supervisor
        answer: dict[str, Any] = {"firmware": __version__, **sup.status()}
        app = sup.app
        if app is None:
            return answer
        loop, upload = app.loop.status, app.uploader.status
        counts = app.outbox.counts()
        answer.update({
            "uptime_s": round(app.clocks.monotonic() - app.loop.started),
            "window": loop.window_no,
            "staff": loop.staff_no,
            "source": loop.source,
            "screen": loop.screen,
            "backlog": counts["pending"] + counts["sending"],
            "rejected": counts["rejected"],
            "online": upload.online,
            "last_upload_at": upload.last_upload_at,
            "last_error": upload.last_error,
            "signature": upload.signature,
            "held_back": upload.held,
            "resealed": upload.resealed,
            "clock_synced": loop.clock_synced,
            "ignored_presses": loop.ignored_presses,
            "noise_pulses": app.hardware.buttons.noise_pulses,
        })
        answer["faults"] += [{"code": code.split(":")[0], "message": code, "fix": ""}
                             for code in app.uplink.faults() + _loop_faults(loop)]
        # A speaker, buzzer or LED that does not work: a fault; rating goes on.
        answer["faults"] += [{"code": f.split(":")[0], "message": f, "fix": OUTPUT_FIX} for f in app.outputs.faults()]
        answer["storage_damage"], damage_faults = _damage(app)
        answer["faults"] += damage_faults
        return answer

    def queue(self) -> dict[str, Any]:
        outbox = self._app("Queue").outbox
        counts: dict[str, Any] = dict(outbox.counts())
        oldest = outbox.oldest_waiting()
        counts["oldest_pending_seq"] = oldest["seq"] if oldest else None
        return counts

    def upload_now(self) -> None:
        self._app("Upload")
        self.ask(UploadNow())

    def apply(self, config: config_mod.Config, key: Secret | None = None) -> list[str]:
        """Settings already written by their owner: take them into use (a rebuild in recovery)."""
        restart: list[str] = self.ask(CommitSettings(lambda: None, config, key))
        return restart

    def test_display(self) -> dict[str, Any] | None:
        self._app("Test display")
        result: dict[str, Any] = self.ask(ShowTestPattern())
        return result

    def test_uplink(self) -> dict[str, Any]:
        app = self.supervisor.app
        if app is not None and app.uploader.running:
            # The same signed path the uploader uses, on its own thread.
            return app.uploader.check_uplink(timeout=30.0)
        config = self.supervisor.config
        transport = self.supervisor.transport_for(config, load_key(config.upload.key_file))
        faults = [f.code for f in self.supervisor.faults]
        try:
            return uplink_check(transport, config.device.id, {"faults": faults})
        finally:
            transport.close()

    def button_test(self, active: bool) -> None:
        self._app("Test buttons")
        self._button_sink = queue.Queue() if active else None
        self.ask(SetButtonTest(self._button_sink))

    def wait_button(self, timeout: float) -> int | None:
        sink = self._button_sink
        if sink is None:
            return None
        try:
            return sink.get(timeout=timeout)
        except queue.Empty:
            return None

    def restart(self) -> None:
        # After the console has written its answer: give it a moment, then rebuild.
        threading.Timer(0.2, self.supervisor.request_rebuild).start()

    def factory_reset(self) -> None:
        self.restart()


def _damage(app: App) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The outbox's damage for ``Status``: its counts, and a standing fault once any was found."""

    damage = app.outbox.damage()
    text = summary(damage)
    faults = [{"code": "storage_damage", "message": f"outbox damage found: {text} (last: {damage['last']})",
               "fix": FIX_HINTS["storage_damage"]}] if text else []
    return damage, faults


#: The fix hint of a fault of the voice, the buzzer or the LED.
OUTPUT_FIX = ("check audio.device and the speaker (aplay -l lists the sound cards), the prompts folder "
              "and the buzzer's and LED's wiring; rating goes on meanwhile")


def _loop_faults(status: Any) -> list[str]:
    faults = []
    if status.display_fault:
        faults.append(f"display: {status.display_fault}")
    if status.assignment_fault:
        faults.append(f"assignment: {status.assignment_fault}")
    return faults
