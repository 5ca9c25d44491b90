"""The five rating buttons and the staff key, as events on a queue.

gpiozero runs ``when_pressed`` on its own threads on a Pi but synchronously
under ``MockFactory``; the callbacks here only put an event on the queue, so
one loop consumes them in the same order in both worlds. Nothing else happens
on gpiozero's thread: no storage, no screen, no state shared with the loop,
nothing that waits.

A press is a press only when a person made it (DESIGN.md, Behaviour):

- **min_press**: the contact must stay closed at least ``min_press_s``
  before the press counts. A shorter closing (a sub-millisecond spike on a
  long cable, a knock on the box) is a *noise pulse*: counted in
  :attr:`Buttons.noise_pulses`, never rated. The check runs on a timer
  thread, armed from the edge callback, so gpiozero's thread never waits.
- **chatter**: bounces within ``bounce_s`` belong to the same closing, at
  the start of a press as at its end; a press counts only when the button
  has been released at least ``bounce_s`` before it.

Debouncing is done here, not left to gpiozero: ``MockFactory`` stores
``bounce_time`` but does not apply it, and contact chatter must count as one
press in the simulator and tests exactly as on the Pi.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gpiozero import Button
from gpiozero.pins import Factory

from device.state import ButtonPressed, ButtonReleased

logger = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


#: ``timer(delay_s, fn)``: call ``fn`` once after ``delay_s`` on another thread; returns something to cancel.
Timer = Callable[[float, Callable[[], None]], Cancellable]


def thread_timer(delay_s: float, fn: Callable[[], None]) -> Cancellable:
    """The default :data:`Timer`: a daemon :class:`threading.Timer`."""
    timer = threading.Timer(delay_s, fn)
    timer.daemon = True
    timer.start()
    return timer


#: An opening edge this late after the line read open was lost.
_LOST_EDGE_S = 1.0

# A closing's life: at rest; closed but not yet long enough; a press reported; released, chatter may follow.
_IDLE, _PENDING, _PRESSED, _SETTLING = "idle", "pending", "pressed", "settling"


class DebouncedButton:
    """One gpiozero Button whose edges become press/release events a person made.

    Args:
        pin: BCM number.
        on_press, on_release: called with no arguments once a press counts and
            when it ends, on gpiozero's or the timer's thread: they must only enqueue.
        pin_factory: gpiozero pin factory (``MockFactory`` in tests).
        bounce_s: chatter within this long is the same closing; a press counts
            only after the contact was released this long.
        min_press_s: the contact must stay closed this long before the press
            counts (0: at the first edge). Shorter closings are noise pulses.
        clock: monotonic seconds (injected for tests).
        timer: how to call back later (:func:`thread_timer`; tests pass a fake).
        name: how log lines name the button.
    """

    def __init__(self, pin: int, on_press: Callable[[], None], on_release: Callable[[], None] | None = None,
                 *, pin_factory: Factory | None = None, bounce_s: float = 0.03, min_press_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, timer: Timer = thread_timer,
                 name: str = "") -> None:
        self._on_press = on_press
        self._on_release = on_release
        self._bounce_s = bounce_s
        self._min_press_s = min_press_s
        self._clock = clock
        self._timer = timer
        self.name = name or f"GPIO{pin}"
        #: Closings shorter than ``min_press_s``: counted, never reported as presses.
        self.noise_pulses = 0
        # Written by the edge callbacks and the timer, never by the loop; the lock
        # is held only to change these fields (and arm a timer), never while calling back.
        self._lock = threading.Lock()
        self._phase = _IDLE
        self._closed = False
        self._closed_at = 0.0      # the last closing edge
        self._opened_at = 0.0      # the last opening edge
        self._episode_at = 0.0     # the first closing edge of this closing, chatter included
        self._pending: Cancellable | None = None
        self.button = Button(pin, pull_up=True, pin_factory=pin_factory)
        self.button.when_pressed = self._pressed
        self.button.when_released = self._released

    # --- edges (gpiozero's thread) ---------------------------------------------------

    def _edge_time(self, lag: float | None) -> float:
        """When the edge happened, on our clock: now, less how late gpiozero called us.

        gpiozero keeps the edge's own time (lgpio: the kernel's timestamp) and
        tells how long ago it was; a busy interpreter may call back late, and a
        200 us spike must not look like a long closing because its second edge
        was delivered late. A lag that makes no sense is not trusted.
        """
        now = self._clock()
        return now - lag if lag is not None and 0 <= lag < 1.0 else now

    def _pressed(self) -> None:
        at = self._edge_time(self.button.active_time)
        report = False
        with self._lock:
            if self._closed:
                return
            self._closed, self._closed_at = True, at
            if self._phase == _SETTLING and at - self._opened_at < self._bounce_s:
                return  # the contact bounced shut again as it opened: the same press, already reported
            if self._phase in (_IDLE, _SETTLING):
                self._episode_at = at
                if self._min_press_s <= 0:
                    self._phase, report = _PRESSED, True
                else:
                    self._phase = _PENDING
                    self._arm(self._min_press_s)
            # _PENDING: chatter inside a closing; the armed timer measures from this edge.
        if report:
            self._on_press()

    def _released(self) -> None:
        at = self._edge_time(self.button.inactive_time)
        report_press = report_release = noise = False
        with self._lock:
            if not self._closed:
                return
            self._closed, self._opened_at = False, at
            if self._phase == _PENDING and at - self._closed_at >= self._min_press_s:
                # Closed long enough, by the edges' own times: a press whose timer ran late.
                self._end_pending()
                self._phase, report_press = _PRESSED, True
            if self._phase == _PRESSED:
                self._phase, report_release = _SETTLING, self._on_release is not None
            elif self._phase == _PENDING and self._bounce_s <= 0:
                # No chatter rule: the closing ended here, too short to be a press.
                self._end_pending()
                noise = True
            # _PENDING with a chatter rule: the armed timer decides once the contact rested.
        if report_press:
            self._on_press()
        if report_release and self._on_release is not None:
            self._on_release()
        if noise:
            self._noise()

    # --- the timer (its own thread) -------------------------------------------------

    def _arm(self, delay_s: float) -> None:
        """Under the lock: one timer at a time, so a noise storm costs one thread per ``min_press_s``."""
        if self._pending is None:
            self._pending = self._timer(max(delay_s, 0.0), self._check)

    def _end_pending(self) -> None:
        self._phase = _IDLE
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _check(self) -> None:
        """The closing is long enough (a press), has ended (noise), or needs more time."""
        now = self._clock()
        # The line as it is now: an opening edge not yet delivered must not make a spike a press.
        line_closed = self.is_pressed
        report = noise = False
        with self._lock:
            self._pending = None
            if self._phase != _PENDING:
                return
            if self._closed:
                left = self._min_press_s - (now - self._closed_at)
                if left <= 0 and line_closed:
                    self._phase, report = _PRESSED, True
                elif left <= -_LOST_EDGE_S:
                    # Open for a long time and no edge came: it was lost (a full pipe); the closing is over.
                    self._closed, self._opened_at, self._phase, noise = False, now, _IDLE, True
                else:
                    # Not long enough yet, or the line opened and its edge is on its way: look again.
                    self._arm(left if left > 0 else 0.005)
            else:
                left = self._bounce_s - (now - self._opened_at)
                if left <= 0:
                    self._phase, noise = _IDLE, True
                else:
                    self._arm(left)
        if report:
            self._on_press()
        if noise:
            self._noise()

    def _noise(self) -> None:
        with self._lock:
            self.noise_pulses += 1
            count = self.noise_pulses
            span_ms = (self._opened_at - self._episode_at) * 1000
        # Every noise pulse at DEBUG; the first, the tenth, the hundredth ... at INFO, so a storm cannot flood the log.
        level = logging.INFO if _power_of_ten(count) else logging.DEBUG
        logger.log(level, "button %s: noise, not a press: closed %.1f ms, shorter than %.0f ms; "
                   "%d noise pulses on it so far", self.name, span_ms, self._min_press_s * 1000, count)

    # --- reads -----------------------------------------------------------------------

    @property
    def is_pressed(self) -> bool:
        """Whether the contact is closed now (raw, not debounced)."""
        return bool(self.button.is_pressed)

    def close(self) -> None:
        """Release the pin; a pending check is dropped."""
        with self._lock:
            self._end_pending()
        self.button.close()


def _power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class Buttons:
    """The rating buttons (1..5) and the optional staff key, feeding ``events``.

    Args:
        pins: five BCM numbers, 非常满意 first.
        events: a ``queue.Queue`` of state-machine inputs.
        staff_pin: BCM number of the 请评价 key, or None.
        make_staff_event: called on a staff press, on gpiozero's or the timer's
            thread, returns the input to queue; it must only build the event (no I/O, no locks).
        pin_factory: gpiozero pin factory (``MockFactory`` in tests).
        bounce_s: chatter within this long is one closing; a press counts only
            after the contact was released this long.
        min_press_s: the contact must stay closed this long for a press (``buttons.min_press_ms``).
        clock: monotonic seconds (injected for tests).
        timer: how to call back later (:func:`thread_timer`; tests pass a fake).
    """

    def __init__(self, pins: Iterable[int], events: queue.Queue[Any], *, staff_pin: int | None = None,
                 make_staff_event: Callable[[], object] | None = None, pin_factory: Factory | None = None,
                 bounce_s: float = 0.03, min_press_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 timer: Timer = thread_timer) -> None:
        self.events = events
        self.rating: list[DebouncedButton] = []
        common: dict[str, Any] = dict(pin_factory=pin_factory, bounce_s=bounce_s, min_press_s=min_press_s,
                                      clock=clock, timer=timer)
        for number, pin in enumerate(pins, start=1):
            self.rating.append(DebouncedButton(
                pin,
                # Events are frozen: one object per edge, made here, only queued there.
                on_press=functools.partial(events.put, ButtonPressed(number)),
                on_release=functools.partial(events.put, ButtonReleased(number)),
                name=f"{number} (GPIO{pin})", **common))
        self.staff: DebouncedButton | None = None
        if staff_pin is not None and make_staff_event is not None:
            make = make_staff_event
            self.staff = DebouncedButton(
                staff_pin, on_press=lambda: events.put(make()), name=f"staff (GPIO{staff_pin})", **common)

    @property
    def noise_pulses(self) -> int:
        """Closings too short to be a press, on every button since start (for ``Status`` and the heartbeat)."""
        return sum(b.noise_pulses for b in self._all())

    def held(self) -> list[int]:
        """Numbers (1..5) of the rating buttons held down now."""
        return [n for n, b in enumerate(self.rating, start=1) if b.is_pressed]

    def _all(self) -> list[DebouncedButton]:
        return self.rating + ([self.staff] if self.staff is not None else [])

    def close(self) -> None:
        """Release every pin."""
        for b in self._all():
            b.close()
