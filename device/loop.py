"""The loop: the one thread that changes the device, and nothing but a dispatcher.

Inputs arrive on one queue: button events from the drivers, sessions and
assignments from the hall link, and the console's requests. An input the
state machine takes (:func:`device.state.inputs`) is stepped through
:func:`device.state.step`; every effect it returns goes to the handler
registered for the effect's type. Any other input goes straight to its own
handler (huey's consumer, Tasmota's function tables): the composition root
(:mod:`device.app`) fills the table, so a new output, a new console request
or a new kind of input is one :meth:`Loop.register` call, never an edit here.

An outcome a handler reports (a rating kept, or not) goes on the loop's own
queue of outcomes (:meth:`Loop.post`), which is emptied before the next
input is taken: nothing re-enters a handler, and a thank-you can only follow
a rating that is on disk.

Other threads read what the handlers publish (:attr:`Loop.status`, an
immutable snapshot) and never write their objects.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device import state as st
from device.config import restart_keys

if TYPE_CHECKING:
    from device.clock import Clocks
    from device.config import Config

logger = logging.getLogger(__name__)

#: Longest the loop sleeps with nothing to do (indicators refresh this often).
IDLE_WAKE_S = 1.0

#: A handler: takes one input or effect; a request's handler returns the answer.
Handler = Callable[[Any], Any]


@dataclass(eq=False)
class Command:
    """A request from another thread (the console) the loop carries out; the answer comes back through ``reply``.

    A new request is a subclass and one ``loop.register(MyRequest, handler)``
    in the composition root; the console asks with
    :meth:`~device.control.DeviceControl.ask`.
    """

    reply: Future[Any] = field(default_factory=Future, init=False)

    def wait(self, timeout: float = 10.0) -> Any:
        """The loop's answer (or its exception), for the asking thread."""
        try:
            return self.reply.result(timeout)
        except TimeoutError:
            raise TimeoutError("the device loop did not answer in time") from None


@dataclass(frozen=True)
class Wake:
    """Ends the loop's wait (used when it is asked to stop)."""


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


def needs_restart(old: Config, new: Config) -> list[str]:
    """Keys whose change only a restart applies (each config field's ``restart`` metadata)."""
    return restart_keys(old, new)


class Loop:
    """Steps the state machine with every input and hands each effect to its handler.

    Args:
        events: the input queue (buttons, hall link, console).
        clocks: :class:`~device.clock.Clocks` (monotonic time for the state machine).
        rules: the state machine's :class:`~device.state.Rules` (a handler replaces them on a new configuration).
    """

    def __init__(self, events: queue.Queue[Any], clocks: Clocks, rules: st.Rules | None = None) -> None:
        self.events = events
        self.clocks = clocks
        self.state = st.State()
        self.rules = rules or st.Rules()
        self.status = LoopStatus()
        self.started = clocks.monotonic()
        self._steps = frozenset(st.inputs())
        self._handlers: dict[type, list[Handler]] = {Wake: [_nothing]}
        self._prepare: dict[type, Callable[[Any], Any]] = {}
        self._settled: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self._idle: list[Callable[[], None]] = []
        self._start: list[Callable[[], None]] = []
        self._stop: list[Callable[[], None]] = []
        self._outcomes: collections.deque[Any] = collections.deque()

    # --- the table ------------------------------------------------------------------

    def register(self, kind: type, handler: Handler) -> None:
        """``handler`` takes every input or effect of type ``kind``.

        Several handlers of one type are called in the order registered (the
        outbox keeps a rating, a speaker says thanks); a request's answer is the
        last one's.
        """
        self._handlers.setdefault(kind, []).append(handler)

    def prepare(self, kind: type, fill: Callable[[Any], Any]) -> None:
        """Before a state-machine input of type ``kind`` is stepped, ``fill(input)`` adds the facts it needs.

        The state machine decides; a preparer only reads what it cannot (the
        outbox, the panel), e.g. :class:`~device.state.SessionVetted`.
        """
        self._prepare[kind] = fill

    def after_input(self, hook: Callable[[], None]) -> None:
        """Called after each input and all its outcomes (the session marker)."""
        self._settled.append(hook)

    def after_turn(self, hook: Callable[[], None]) -> None:
        """Called after each turn of :meth:`run` and :meth:`pump` (redraw, publish)."""
        self._after.append(hook)

    def when_idle(self, hook: Callable[[], None]) -> None:
        """Called when the loop waited for nothing (work kept off the press path)."""
        self._idle.append(hook)

    def at_start(self, hook: Callable[[], None]) -> None:
        self._start.append(hook)

    def at_stop(self, hook: Callable[[], None]) -> None:
        self._stop.append(hook)

    def post(self, outcome: Any) -> None:
        """An outcome the state machine must hear: handled after the current input, never inside it."""
        self._outcomes.append(outcome)

    # --- running ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Take inputs until ``stop`` is set."""
        for hook in self._start:
            hook()
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
            for hook in self._stop:
                hook()
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

    def refresh(self) -> None:
        """After a turn: redraw and publish."""
        for hook in self._after:
            hook()

    def housekeeping(self) -> None:
        """Work kept off the press path: done when the loop waited for nothing."""
        for hook in self._idle:
            hook()

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
        for hook in self._settled:
            hook()

    def _handle_one(self, event: Any) -> None:
        kind = type(event)
        if kind in self._steps:
            fill = self._prepare.get(kind)
            if fill is not None:
                event = fill(event)
            self.state, effects = st.step(self.state, event, self.clocks.monotonic(), self.rules)
            for effect in effects:
                self.dispatch(effect)
            return
        if isinstance(event, Command):
            self._answer(event)
            return
        self.dispatch(event)

    def dispatch(self, item: Any) -> Any:
        """Hand an input or effect to its handlers; one nobody handles is logged and dropped."""
        handlers = self._handlers.get(type(item))
        if not handlers:
            logger.warning("nothing handles %s", type(item).__name__)
            return None
        result = None
        for handler in handlers:
            result = handler(item)
        return result

    def _answer(self, command: Command) -> None:
        if not self._handlers.get(type(command)):
            command.reply.set_exception(TypeError(f"unknown command {type(command).__name__}"))
            return
        try:
            result = self.dispatch(command)
        except Exception as e:
            command.reply.set_exception(e)
        else:
            command.reply.set_result(result)


def _nothing(event: Any) -> None:
    return None
