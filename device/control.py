"""What the console may ask of the device, and the supervisor's answer to it.

The console runs in its own thread and changes nothing itself. Anything that
touches the state machine, the configuration, the screen or the outbox goes
to the device's loop as a command (:mod:`device.loop`) and is waited for; what
the console reads comes from snapshots the loop and the workers publish. In
recovery (the device did not start) the supervisor answers what it can and
builds the device again when settings are committed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import typing
from typing import TYPE_CHECKING, Any

from device import __version__
from device import config as config_mod
from device.config import Secret
from device.errors import DeviceUnavailable

if TYPE_CHECKING:
    from device.app import App
    from device.supervisor import Supervisor

logger = logging.getLogger(__name__)


class DeviceControl(typing.Protocol):
    """Everything the console asks of the device. Methods are called from the
    console's thread; an implementation hands work to the device's own loop
    where it must. In recovery, what needs the parts that did not start raises
    :class:`~device.errors.DeviceUnavailable`."""

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
        """Settings, key and PIN are already gone; forget the rest (never an
        undelivered rating) and restart."""



class SupervisorControl(DeviceControl):
    """:class:`DeviceControl` over the supervisor and the app it runs (if any)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._button_sink: queue.Queue[int] | None = None

    def _app(self, what: str) -> App:
        app = self.supervisor.app
        if app is None:
            faults = ", ".join(f.code for f in self.supervisor.faults) or "starting"
            raise DeviceUnavailable(f"{what} needs the running device; it is in {self.supervisor.mode} ({faults})")
        return app

    def _on_loop(self, command: Any, what: str, timeout: float = 10.0) -> Any:
        from device.loop import Command

        assert isinstance(command, Command)
        self._app(what).events.put(command)
        return command.wait(timeout)

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
            "clock_synced": loop.clock_synced,
            "ignored_presses": loop.ignored_presses,
            "noise_pulses": app.hardware.buttons.noise_pulses,
        })
        answer["faults"] += [{"code": code.split(":")[0], "message": code, "fix": ""}
                             for code in app.uplink.faults() + _loop_faults(loop)]
        # access (issue 19): a speaker, buzzer or LED that does not work; rating goes on.
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
        from device.loop import UploadNow

        self._on_loop(UploadNow(), "Upload")

    def apply(self, config: config_mod.Config, key: Secret | None = None) -> list[str]:
        from device.loop import Reconfigure

        # What reads answer from now on: the configuration as committed.
        self.supervisor.config = config
        if self.supervisor.app is None:
            # In recovery a commit is the repair: build the device again with it.
            self.supervisor.request_rebuild()
            return []
        restart: list[str] = self._on_loop(Reconfigure(config, key), "Commit")
        return restart

    def test_display(self) -> dict[str, Any] | None:
        from device.loop import ShowTestPattern

        result: dict[str, Any] = self._on_loop(ShowTestPattern(), "Test display")
        return result

    def test_uplink(self) -> dict[str, Any]:
        from device.checks import load_key
        from device.queue.health import uplink_check

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
        from device.loop import SetButtonTest

        self._button_sink = queue.Queue() if active else None
        self._on_loop(SetButtonTest(self._button_sink), "Test buttons")

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
        path = os.path.join(os.path.dirname(os.path.abspath(self.supervisor.config.outbox.path)),
                            "assignment.json")
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        self.restart()


def _damage(app: App) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The outbox's damage for ``Status``: its counts, and a standing fault once any was found."""
    from device.checks import FIX_HINTS
    from device.queue.damage import summary

    damage = app.outbox.damage()
    text = summary(damage)
    faults = [{"code": "storage_damage", "message": f"outbox damage found: {text} (last: {damage['last']})",
               "fix": FIX_HINTS["storage_damage"]}] if text else []
    return damage, faults


#: access: the fix hint of a fault of the voice, the buzzer or the LED.
OUTPUT_FIX = ("check audio.device and the speaker (aplay -l lists the sound cards), the prompts folder "
              "and the buzzer's and LED's wiring; rating goes on meanwhile")


def _loop_faults(status: Any) -> list[str]:
    faults = []
    if status.display_fault:
        faults.append(f"display: {status.display_fault}")
    if status.assignment_fault:
        faults.append(f"assignment: {status.assignment_fault}")
    return faults
