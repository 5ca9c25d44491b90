"""The loop: the one thread that changes the device.

Inputs arrive on one queue: button events from the drivers, sessions and
assignments from the hall link, and the console's commands. Each is stepped
through the pure state machine (:func:`device.state.step`); the loop carries
out the effects. The outcome of an effect (a rating kept, or not) goes on
the loop's own queue of outcomes, which is emptied before the next input is
taken: nothing re-enters the handler, and a thank-you can only follow a
rating that is on disk.

Other threads read what the loop publishes (:attr:`Loop.status`, an
immutable snapshot) and never write its objects.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from device import state as st
from device.checks import check_screens, fit_to_screen, qr_fits
from device.errors import StorageError
from device.queue.hall import Assignment, AssignmentChanged, save_assignment
from device.records import Origin, RecordFactory
from device.screen import Screen, test_pattern
from device.session_marker import SessionMarker
from device.ui import care
from device.ui.models import BootScreen, Indicators
from device.view import Identity, View, view

if TYPE_CHECKING:
    from device.clock import Clocks
    from device.config import Config, Secret
    from device.queue.outbox import Outbox

logger = logging.getLogger(__name__)

#: Longest the loop sleeps with nothing to do (indicators refresh this often).
IDLE_WAKE_S = 1.0
#: How often the idle loop copies the outbox's WAL into the database.
CHECKPOINT_EVERY_S = 30.0
#: How long ``Test display`` keeps its pattern up.
TEST_PATTERN_S = 3.0


# --- the console's commands, as loop inputs ---------------------------------------

@dataclass(eq=False)
class Command:
    """A console request the loop carries out; the answer comes back through ``reply``."""

    reply: Future[Any] = field(default_factory=Future, init=False)

    def wait(self, timeout: float = 10.0) -> Any:
        """The loop's answer (or its exception), for the console's thread."""
        try:
            return self.reply.result(timeout)
        except TimeoutError:
            raise TimeoutError("the device loop did not answer in time") from None


@dataclass(eq=False)
class Reconfigure(Command):
    """Take a committed configuration (and a new key, if one was committed) into use."""

    config: Config
    key: Secret | None = None


@dataclass(eq=False)
class ShowTestPattern(Command):
    """``Test display``: a checkerboard for a few seconds."""


@dataclass(eq=False)
class SetButtonTest(Command):
    """``Test buttons``: while ``sink`` is set, presses go to it and are never ratings."""

    sink: queue.Queue[int] | None


@dataclass(eq=False)
class UploadNow(Command):
    """``Upload``: send now, dead letters included."""


@dataclass(frozen=True)
class Wake:
    """Ends the loop's wait (used when it is asked to stop)."""


class Uplink(Protocol):
    """What the loop asks of the uplink workers (the app wires them)."""

    def wake(self, force: bool = False) -> None: ...

    def reconfigure(self, config: Config, key: Secret | None) -> None: ...

    def retry_rejected(self) -> None: ...

    def offline(self) -> bool: ...

    def faults(self) -> list[str]: ...

    def last_upload_at(self) -> str: ...


@dataclass(frozen=True)
class LoopStatus:
    """What the loop publishes for the console and the heartbeat."""

    screen: str = st.IDLE
    source: str = ""
    device_id: str = ""
    window_no: str = ""
    staff_no: str = ""
    ignored_presses: int = 0
    clock_synced: bool = True
    display_fault: str = ""
    assignment_fault: str = ""


#: Sections and keys that only take effect when the device is built again.
RESTART_KEYS = ("display.", "buttons.", "console.", "outbox.", "log.", "session.source", "audio.", "led.")
#: Display keys the loop applies at once (rules and OLED care are rebuilt from the configuration).
APPLIED_AT_ONCE = ("display.show_level", "display.contrast", "display.dim_contrast", "display.dim_after_s",
                   "display.shift_every_s", "display.large_text")


def needs_restart(old: Config, new: Config) -> list[str]:
    """Keys whose change only a restart applies."""
    from device.config import as_dict

    before, after = as_dict(old), as_dict(new)
    changed = [f"{s}.{k}" for s in after for k in after[s] if after[s][k] != before[s][k]]
    return [k for k in changed if k.startswith(RESTART_KEYS) and k not in APPLIED_AT_ONCE]


class Loop:
    """Steps the state machine with every input and carries out its effects.

    Args:
        config: the committed configuration.
        events: the input queue (buttons, hall link, console).
        outbox: where every event is kept.
        screen: the panel's :class:`~device.screen.Screen`.
        records: the :class:`~device.records.RecordFactory`.
        clocks: :class:`~device.clock.Clocks`.
        uplink: the uplink workers (:class:`Uplink`).
        assignment: the hall's last assignment, kept across reboots (or None).
        assignment_path: where a new assignment is kept.
        service_info: extra lines for the technician's service screen (address, firmware).
    """

    def __init__(self, config: Config, events: queue.Queue[Any], outbox: Outbox, screen: Screen,
                 records: RecordFactory, clocks: Clocks, uplink: Uplink, *,
                 assignment: Assignment | None = None, assignment_path: str = "",
                 service_info: Callable[[], tuple[str, ...]] = tuple) -> None:
        self.events = events
        self.outbox = outbox
        self.screen = screen
        self.records = records
        self.clocks = clocks
        self.uplink = uplink
        self.assignment_path = assignment_path
        self.service_info = service_info
        self.state = st.State()
        self.committed_config = config
        self._outcomes: collections.deque[Any] = collections.deque()
        self._button_test: queue.Queue[int] | None = None
        #: Buttons whose press only woke the panel; their release is not a rating either.
        self._waking: set[int] = set()
        self._assignment_fault = ""
        #: access (issue 19): output effects (Say, Beep) → their handlers, filled by the app.
        self.handlers: dict[type, Callable[[Any], None]] = {}
        self._use(config)
        if assignment is not None:
            self._apply_assignment(assignment, save=False)
        self.marker = SessionMarker(os.path.dirname(os.path.abspath(outbox.path)))
        #: The session whose marker is on disk (or was tried), if any.
        self._marked: str | None = None
        self._recover_open_session()
        self.started = clocks.monotonic()
        self.last_activity = self.started
        self._checkpointed_at = self.started
        self._clock_checked = False
        self.status = LoopStatus()

    def _use(self, config: Config) -> None:
        self.config = config
        self.identity = Identity.from_config(config)
        self.origin = Origin.from_config(config)
        self.reasons = config.reasons.by_level()
        self.reasons_version = config.reasons.version
        self.rules = st.Rules.from_config(config, self.reasons)
        d, h = config.display, config.hours
        self.care_config = care.CareConfig(
            shift_every_s=d.shift_every_s, contrast=d.contrast, dim_contrast=d.dim_contrast,
            dim_after_s=d.dim_after_s, open_days=h.open_days, open_from=h.open_from,
            open_until=h.open_until, closed_dates=h.closed_dates)
        self.screen.care_config = self.care_config

    # --- running ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Take inputs until ``stop`` is set."""
        from device import __version__

        self.screen.show(BootScreen(__version__))
        logger.info("device %s ready: window %s, session source %s", self.config.device.id,
                    self.config.device.window_no, self.rules.source)
        self.refresh()
        while not stop.is_set():
            try:
                event = self.events.get(timeout=self._timeout())
            except queue.Empty:
                event = None
            try:
                self.handle(st.Tick() if event is None else event)
                self.refresh()
                if event is None:
                    self.housekeeping()
            except Exception:
                # One bad step (a bus glitch, a bug) must not end rating:
                # what was committed is on disk; log it and go on.
                logger.exception("device loop: error handling %r", event)
            finally:
                if event is not None:
                    # Lets a driver wait (queue.join) until its inputs are handled.
                    self.events.task_done()
        self.stopping()

    def stopping(self) -> None:
        """The loop ends (restart, rebuild, shutdown): a session still open ends as one ``unrated`` event.

        Nothing after this would take the session's press; a new build starts
        with no session, so without this the service would vanish from the records.
        """
        try:
            self.handle(st.Stopping())
            self._drop_marker()
        except Exception:
            logger.exception("device loop: the open session could not be recorded as unrated")

    def pump(self) -> None:
        """Handle every input already queued, then redraw (tests and tools)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            try:
                self.handle(event)
            finally:
                self.events.task_done()
        self.handle(st.Tick())
        self.refresh()
        self.housekeeping()

    def housekeeping(self) -> None:
        """Work kept off the press path: done when the loop waited for nothing."""
        self._drop_marker()
        self.keep_clock_event()
        now = self.clocks.monotonic()
        if self.state.screen == st.IDLE and now - self._checkpointed_at >= CHECKPOINT_EVERY_S:
            self._checkpointed_at = now
            self.outbox.checkpoint()

    def keep_clock_event(self) -> None:
        """Append the ``clock`` event once this boot's clock has become trustworthy (NTP or the hall).

        The loop is the outbox's one writer, so the event is made here; from
        it anyone holding the events dates every event this boot stamped
        before the clock was set (DESIGN.md Records).
        """
        if not self._clock_checked:
            # A process before this one in the same boot may have stamped events unsynced and
            # stopped before its clock was set: the oldest waiting event tells.
            self._clock_checked = True
            oldest = self.outbox.oldest_waiting()
            if oldest is not None and oldest.get("boot_id") == self.clocks.boot_id \
                    and oldest.get("clock_synced") is False:
                self.clocks.stamped_unsynced()
        source = self.clocks.clock_event_due()
        if not source:
            return
        try:
            event = self.outbox.append(self.records.clock(self.origin, source))
        except StorageError as e:
            logger.error("clock event not kept (tried again later): %s", e)
            return
        self.clocks.clock_event_kept()
        logger.info("clock set by %s: clock event kept as seq %d", source, event["seq"])
        self.uplink.wake()

    def _timeout(self) -> float:
        now = self.clocks.monotonic()
        wake = now + IDLE_WAKE_S
        deadline = st.next_deadline(self.state, self.rules)
        if deadline is not None:
            wake = min(wake, deadline)
        countdown = self.state.session.deadline if self.state.session else (
            self.state.screen_until if self.state.screen == st.REASONS else None)
        if countdown is not None:
            # The countdown on the screen changes every whole second.
            wake = min(wake, now + ((countdown - now) % 1.0 or 1.0))
        return max(0.0, wake - now)

    # --- one input ------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        """One input, then every outcome it led to, in order."""
        self._handle_one(event)
        while self._outcomes:
            self._handle_one(self._outcomes.popleft())
        session = self.state.session
        if session is not None and session.session_id != self._marked:
            self._mark(session)

    def _handle_one(self, event: Any) -> None:
        if isinstance(event, Command):
            self._command(event)
            return
        if isinstance(event, AssignmentChanged):
            self._apply_assignment(event.assignment)
            return
        if isinstance(event, Wake):
            return
        if isinstance(event, st.SessionOpened) and self.outbox.has_session(event.session_id):
            # A session this device already recorded (rated, or ended unrated before a restart)
            # that the hall still offers: opening it again could record it twice.
            logger.info("session %s already recorded; not opened again", event.session_id)
            return
        if isinstance(event, st.SessionOpened) and event.qr_url and not qr_fits(event.qr_url, self.screen.size):
            # A session's QR from outside that the panel cannot show: the window's own QR instead, reported.
            self._assignment_fault = f"session {event.session_id}: its qr_url is too long for the display " \
                                     f"({len(event.qr_url)} characters); the window's QR is shown"
            logger.warning("%s", self._assignment_fault)
            event = dataclasses.replace(event, qr_url="")
        now = self.clocks.monotonic()
        if isinstance(event, st.ButtonPressed | st.ButtonReleased):
            if self._button_test is not None:
                # The technician's button test: presses are reported, never rated.
                if isinstance(event, st.ButtonPressed):
                    self._button_test.put(event.button)
                return
            self.last_activity = now
            # A press on a sleeping panel only wakes it: nobody could see what they rated.
            if isinstance(event, st.ButtonPressed) and self.screen.asleep:
                self._waking.add(event.button)
                return
            if event.button in self._waking:
                self._waking.discard(event.button)
                return
        self.state, effects = st.step(self.state, event, now, self.rules)
        for effect in effects:
            self._execute(effect)

    def register(self, kind: type, handler: Callable[[Any], None]) -> None:
        """access (issue 19): ``handler`` takes every effect of type ``kind`` (it must only queue it)."""
        self.handlers[kind] = handler

    def _execute(self, effect: Any) -> None:
        """Carry out one effect; an outcome the machine must hear goes on the outcome queue."""
        if isinstance(effect, st.Say | st.Beep):  # access: outputs, played off the press path
            handler = self.handlers.get(type(effect))
            if handler is not None:
                handler(effect)
            return
        if isinstance(effect, st.PressIgnored):
            logger.info("press of button %d ignored: %s", effect.button, effect.why)
            return
        if isinstance(effect, st.CommitRating):
            fields = self.records.rating(self.origin, effect.level, effect.session, effect.suspect)
        elif isinstance(effect, st.CommitUnrated):
            fields = self.records.unrated(self.origin, effect.session)
        elif isinstance(effect, st.CommitDetail):
            fields = self.records.detail(self.origin, effect.rating_id, effect.reason_codes,
                                         self.reasons_version, effect.session)
        else:
            logger.warning("unknown effect %r", effect)
            return
        try:
            event = self.outbox.append(fields)
        except StorageError as e:
            logger.error("%s not kept: %s", fields["type"], e)
            if isinstance(effect, st.CommitRating):
                self._outcomes.append(st.CommitFailed(str(e)))
            return
        logger.info("%s kept as seq %d%s", fields["type"], event["seq"],
                    " (suspect)" if fields.get("suspect") else "")
        if isinstance(effect, st.CommitRating):
            # Thanks only now that it is on disk.
            self._outcomes.append(st.RatingCommitted(effect.level, event["id"]))
        self.uplink.wake()

    # --- the open session's marker ----------------------------------------------------

    def _mark(self, session: st.Session) -> None:
        """Keep the newly opened session beside the outbox (it replaces a replaced session's marker)."""
        self._marked = session.session_id
        self.marker.write(session)

    def _drop_marker(self) -> None:
        """Remove the marker of a session that has ended (its event is on disk), off the press path."""
        if self._marked is None or self.state.session is not None:
            return
        self._marked = None
        self.marker.remove()

    def _recover_open_session(self) -> None:
        """A marker left by a power cut: its session ends as one ``unrated`` event, unless it has an event."""
        session = self.marker.read()
        if session is None:
            return
        if not self.outbox.has_session(session.session_id):
            try:
                event = self.outbox.append(self.records.unrated(self.origin, session))
            except StorageError as e:
                logger.error("session %s cut by a power loss not recorded (tried at the next start): %s",
                             session.session_id, e)
                return
            logger.info("session %s cut by a power loss: unrated kept as seq %d", session.session_id, event["seq"])
            self.uplink.wake()
        self.marker.remove()

    # --- the console's commands -----------------------------------------------------

    def _command(self, command: Command) -> None:
        try:
            result = self._run_command(command)
        except Exception as e:
            command.reply.set_exception(e)
        else:
            command.reply.set_result(result)

    def _run_command(self, command: Command) -> Any:
        if isinstance(command, Reconfigure):
            return self.reconfigure(command.config, command.key)
        if isinstance(command, ShowTestPattern):
            now = self.clocks.monotonic()
            self.screen.hold(test_pattern(self.screen.size), now + TEST_PATTERN_S)
            return {"pattern": "checkerboard", "seconds": TEST_PATTERN_S}
        if isinstance(command, SetButtonTest):
            self._button_test = command.sink
            return None
        if isinstance(command, UploadNow):
            # A technician's Upload is also the command that sends dead letters again.
            self.uplink.retry_rejected()
            self.uplink.wake(force=True)
            return None
        raise TypeError(f"unknown command {type(command).__name__}")

    def reconfigure(self, config: Config, key: Secret | None = None) -> list[str]:
        """Take a committed configuration into use; returns the keys needing a restart.

        Raises:
            ConfigError: the screen cannot show what the configuration asks.
        """
        check_screens(config, self.screen.size)
        restart = needs_restart(self.committed_config, config)
        old = self.committed_config
        self.committed_config = config
        self._use(config)
        from device.queue.hall import load_assignment

        kept = load_assignment(self.assignment_path) if self.assignment_path else None
        if kept is not None:
            self._apply_assignment(kept, save=False)
        if key is not None or old.upload != config.upload or old.device.id != config.device.id:
            self.uplink.reconfigure(config, key)
        logger.info("configuration applied%s", f"; restart needed for {', '.join(restart)}" if restart else "")
        return restart

    def _apply_assignment(self, assignment: Assignment, save: bool = True) -> bool:
        """Show the hall's window, staff, QR and reasons, if the screen can show them."""
        config = assignment.apply_to(self.committed_config)
        # Values from outside never stop the device: what the screen cannot show gets a fallback
        # (device.checks.fit_to_screen) and is reported; the records keep the hall's values as sent.
        shown, problems = fit_to_screen(config, self.screen.size, fallback=self.committed_config)
        self._assignment_fault = ("assignment shown with fallbacks: " + "; ".join(
            f"{key}: {message}" for key, message in problems)) if problems else ""
        if problems:
            logger.warning("%s", self._assignment_fault)
        self._use(shown)
        self.origin = Origin.from_config(config)
        if save and self.assignment_path:
            try:
                save_assignment(self.assignment_path, assignment)
            except OSError as e:
                logger.warning("assignment applied but not kept across reboots: %s", e)
        logger.info("assignment: window %s, staff %s (%s)", assignment.window_no, assignment.staff_no,
                    assignment.staff_name)
        return True

    # --- the screen -------------------------------------------------------------------

    def refresh(self) -> None:
        """Redraw when what the screen should show has changed; publish the status."""
        storage, reason = self.outbox.storage_state()
        full = storage == "full"
        if full != bool(self.state.storage_full):
            self.handle(st.StorageChanged(full, reason if full else ""))
        # Indicators show on the idle screen only: not worked out on the way to thanks.
        idle = self.state.screen == st.IDLE and self.state.session is None
        synced = self.clocks.is_synced()
        indicators = Indicators(
            offline=self.uplink.offline(),
            backlog=self.outbox.waiting(),
            clock_unset=not synced,
            storage_low=storage != "ok") if idle else Indicators()
        info = View(self.identity, indicators, reasons=self.reasons,
                    service_lines=self.service_lines() if self.state.screen == st.SERVICE else (),
                    large_text=self.config.display.large_text)  # access: large text
        now = self.clocks.monotonic()
        if self.state.screen != st.IDLE:
            self.last_activity = now
        state = care.care(self.clocks.wall(), self.last_activity, now, self.care_config)
        if not synced:
            # Opening hours mean nothing on a clock that is not set yet: stay awake.
            state = care.CareState(state.shift, state.contrast, False)
        self.screen.apply_care(state)
        self.screen.show(view(self.state, info, now), now)
        self._publish(synced)

    def _publish(self, synced: bool) -> None:
        c = self.config
        status = LoopStatus(
            screen=self.state.screen, source=self.rules.source, device_id=c.device.id,
            window_no=c.device.window_no, staff_no=c.staff.no, ignored_presses=self.state.ignored,
            clock_synced=synced, display_fault=self.screen.fault, assignment_fault=self._assignment_fault)
        if status != self.status:
            self.status = status

    def service_lines(self) -> tuple[str, ...]:
        """The technician's screen: identity, addresses, version, backlog; never secrets."""
        last = self.uplink.last_upload_at()
        return (f"ID {self.config.device.id}", *self.service_info(),
                f"待传 {self.outbox.waiting()}", f"上传 {last[11:19] or '无'}")
