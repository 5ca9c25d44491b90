"""The five rating buttons and the staff key, as events on a queue.

gpiozero runs ``when_pressed`` on its own threads on a Pi but synchronously
under ``MockFactory``; the callbacks here only put an event on the queue, so
one loop consumes them in the same order in both worlds.

Debouncing is done here, not left to gpiozero: ``MockFactory`` stores
``bounce_time`` but does not apply it, and contact chatter must count as one
press in the simulator and tests exactly as on the Pi. A press counts only
when the button has been released for at least ``bounce_s`` before it.
"""

import logging
import time

from gpiozero import Button

from device.state import ButtonPressed, ButtonReleased

logger = logging.getLogger(__name__)


class DebouncedButton:
    """One gpiozero Button whose edges become debounced press/release events.

    Args:
        pin: BCM number.
        on_press, on_release: called with no arguments, already debounced.
        pin_factory: gpiozero pin factory (``MockFactory`` in tests).
        bounce_s: how long the contact must be released before a new press counts.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, pin, on_press, on_release=None, *, pin_factory=None, bounce_s=0.03,
                 clock=time.monotonic):
        self._on_press = on_press
        self._on_release = on_release
        self._bounce_s = bounce_s
        self._clock = clock
        self._down = False
        self._released_at = None
        self.button = Button(pin, pull_up=True, pin_factory=pin_factory)
        self.button.when_pressed = self._pressed
        self.button.when_released = self._released

    def _pressed(self):
        now = self._clock()
        if self._down:
            return
        if self._released_at is not None and now - self._released_at < self._bounce_s:
            # The contact bounced open and shut again: the same press.
            self._down = True
            return
        self._down = True
        self._on_press()

    def _released(self):
        self._released_at = self._clock()
        if self._down:
            self._down = False
            if self._on_release is not None:
                self._on_release()

    @property
    def is_pressed(self):
        return self.button.is_pressed

    def close(self):
        self.button.close()


class Buttons:
    """The rating buttons (1..5) and the optional staff key, feeding ``events``.

    Args:
        pins: five BCM numbers, 非常满意 first.
        events: a ``queue.Queue`` of state-machine inputs.
        staff_pin: BCM number of the 请评价 key, or None.
        make_staff_event: called on a staff press, returns the input to queue.
    """

    def __init__(self, pins, events, *, staff_pin=None, make_staff_event=None, pin_factory=None,
                 bounce_s=0.03, clock=time.monotonic):
        self.events = events
        self.rating = []
        for number, pin in enumerate(pins, start=1):
            self.rating.append(DebouncedButton(
                pin,
                on_press=lambda n=number: events.put(ButtonPressed(n)),
                on_release=lambda n=number: events.put(ButtonReleased(n)),
                pin_factory=pin_factory, bounce_s=bounce_s, clock=clock))
        self.staff = None
        if staff_pin is not None and make_staff_event is not None:
            self.staff = DebouncedButton(
                staff_pin, on_press=lambda: events.put(make_staff_event()),
                pin_factory=pin_factory, bounce_s=bounce_s, clock=clock)

    def held(self):
        """Numbers (1..5) of the rating buttons held down now."""
        return [n for n, b in enumerate(self.rating, start=1) if b.is_pressed]

    def close(self):
        for b in self.rating:
            b.close()
        if self.staff is not None:
            self.staff.close()
