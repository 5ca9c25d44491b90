"""The five rating buttons and the staff key, as events on a queue.

gpiozero runs ``when_pressed`` on its own threads on a Pi but synchronously
under ``MockFactory``; the callbacks here only put an event on the queue, so
one loop consumes them in the same order in both worlds. Nothing else happens
on gpiozero's thread: no storage, no screen, no state shared with the loop.

Debouncing is done here, not left to gpiozero: ``MockFactory`` stores
``bounce_time`` but does not apply it, and contact chatter must count as one
press in the simulator and tests exactly as on the Pi. A press counts only
when the button has been released for at least ``bounce_s`` before it.
"""

from __future__ import annotations

import functools
import logging
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

from gpiozero import Button
from gpiozero.pins import Factory

from device.state import ButtonPressed, ButtonReleased

logger = logging.getLogger(__name__)


class DebouncedButton:
    """One gpiozero Button whose edges become debounced press/release events.

    Args:
        pin: BCM number.
        on_press, on_release: called with no arguments, already debounced, on
            gpiozero's thread: they must only enqueue.
        pin_factory: gpiozero pin factory (``MockFactory`` in tests).
        bounce_s: how long the contact must be released before a new press counts.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, pin: int, on_press: Callable[[], None], on_release: Callable[[], None] | None = None,
                 *, pin_factory: Factory | None = None, bounce_s: float = 0.03,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._on_press = on_press
        self._on_release = on_release
        self._bounce_s = bounce_s
        self._clock = clock
        # Touched only by this pin's edge callbacks, never by the loop.
        self._down = False
        self._released_at: float | None = None
        self.button = Button(pin, pull_up=True, pin_factory=pin_factory)
        self.button.when_pressed = self._pressed
        self.button.when_released = self._released

    def _pressed(self) -> None:
        now = self._clock()
        if self._down:
            return
        if self._released_at is not None and now - self._released_at < self._bounce_s:
            # The contact bounced open and shut again: the same press.
            self._down = True
            return
        self._down = True
        self._on_press()

    def _released(self) -> None:
        self._released_at = self._clock()
        if self._down:
            self._down = False
            if self._on_release is not None:
                self._on_release()

    @property
    def is_pressed(self) -> bool:
        """Whether the contact is closed now (raw, not debounced)."""
        return bool(self.button.is_pressed)

    def close(self) -> None:
        """Release the pin."""
        self.button.close()


class Buttons:
    """The rating buttons (1..5) and the optional staff key, feeding ``events``.

    Args:
        pins: five BCM numbers, 非常满意 first.
        events: a ``queue.Queue`` of state-machine inputs.
        staff_pin: BCM number of the 请评价 key, or None.
        make_staff_event: called on a staff press, on gpiozero's thread, returns
            the input to queue; it must only build the event (no I/O, no locks).
        pin_factory: gpiozero pin factory (``MockFactory`` in tests).
        bounce_s: how long a contact must be released before a new press counts.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, pins: Iterable[int], events: queue.Queue[Any], *, staff_pin: int | None = None,
                 make_staff_event: Callable[[], object] | None = None, pin_factory: Factory | None = None,
                 bounce_s: float = 0.03, clock: Callable[[], float] = time.monotonic) -> None:
        self.events = events
        self.rating: list[DebouncedButton] = []
        for number, pin in enumerate(pins, start=1):
            self.rating.append(DebouncedButton(
                pin,
                # Events are frozen: one object per edge, made here, only queued there.
                on_press=functools.partial(events.put, ButtonPressed(number)),
                on_release=functools.partial(events.put, ButtonReleased(number)),
                pin_factory=pin_factory, bounce_s=bounce_s, clock=clock))
        self.staff: DebouncedButton | None = None
        if staff_pin is not None and make_staff_event is not None:
            make = make_staff_event
            self.staff = DebouncedButton(
                staff_pin, on_press=lambda: events.put(make()),
                pin_factory=pin_factory, bounce_s=bounce_s, clock=clock)

    def held(self) -> list[int]:
        """Numbers (1..5) of the rating buttons held down now."""
        return [n for n, b in enumerate(self.rating, start=1) if b.is_pressed]

    def close(self) -> None:
        """Release every pin."""
        for b in self.rating:
            b.close()
        if self.staff is not None:
            self.staff.close()
