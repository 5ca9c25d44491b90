"""Edges as a real pin library delivers them: late, and sometimes after the line already moved.

On a Pi, lgpio stamps each edge in the kernel and gpiozero calls back on its
own thread, possibly late; the line may have opened while its opening edge
is still on its way. These tests make both happen on gpiozero's MockFactory
(a pin whose opening edge is delivered on request, and a factory whose clock
says how late the callback is), and assert what a citizen would see: a
1 ms spike on a long cable is never a rating, however late its edges arrive.
"""

import queue
import time

import pytest
from gpiozero.pins.mock import MockPin
from test_buttons import FakeClock

from device.drivers.buttons import DebouncedButton

pytestmark = pytest.mark.timeout(30)

MIN_PRESS_S = 0.040


class LatePin(MockPin):
    """A mock pin whose opening edge can reach gpiozero later than the line moved."""

    def open_quietly(self) -> None:
        """The contact opens; the edge is not delivered yet (a busy interpreter, a full pipe)."""
        self._change_state(True)

    def deliver(self) -> None:
        """The late edge arrives, stamped with the time the line actually moved."""
        self._call_when_changed()


@pytest.fixture
def late(mock_factory, monkeypatch):
    """A button on a LatePin; ``lag[0]`` is how late gpiozero says the callback runs."""
    lag = [0.0]
    monkeypatch.setattr(mock_factory, "ticks", lambda: time.monotonic() + lag[0])
    clock = FakeClock()
    pressed: queue.Queue[str] = queue.Queue()
    pin = mock_factory.pin(5, pin_class=LatePin)
    button = DebouncedButton(5, lambda: pressed.put("press"), pin_factory=mock_factory, bounce_s=0.0,
                             min_press_s=MIN_PRESS_S, clock=clock, timer=clock.timer)
    yield pin, clock, lag, pressed, button
    button.close()


def test_a_spike_whose_opening_edge_is_late_is_no_press_when_the_timer_looks(late):
    """The timer fires while the line is already open but its edge is not in: the line decides."""
    pin, clock, lag, pressed, button = late
    pin.drive_low()                      # 0 ms: closed
    clock.advance(0.001)
    pin.open_quietly()                   # 1 ms: open again, the edge still on its way
    clock.advance(0.060)                 # the 40 ms timer looks (and looks again) meanwhile
    assert pressed.empty(), "a 1 ms spike became a rating because the timer trusted the edges alone"
    lag[0] = 0.060                       # the edge arrives at 61 ms, stamped at 1 ms
    pin.deliver()
    clock.advance(0.100)
    assert pressed.empty() and button.noise_pulses == 1


def test_a_late_opening_edge_is_dated_when_it_happened_not_when_it_arrived(late):
    """The spike lasted 1 ms; its edge arrived 49 ms late: gpiozero's lag says so and is believed."""
    pin, clock, lag, pressed, button = late
    pin.drive_low()
    clock.advance(0.001)
    pin.open_quietly()
    clock.advance(0.049)                 # the callback runs at 50 ms ...
    lag[0] = 0.049                       # ... 49 ms after the edge
    pin.deliver()
    clock.advance(0.100)
    assert pressed.empty(), "a 1 ms spike counted as 50 ms because the edge's own time was ignored"
    assert button.noise_pulses == 1


def test_a_press_held_past_the_minimum_still_counts_with_late_edges(late):
    """The other side: a real 60 ms press, its release edge 10 ms late, is one press."""
    pin, clock, lag, pressed, button = late
    pin.drive_low()
    clock.advance(0.060)
    assert pressed.get_nowait() == "press"
    pin.open_quietly()
    clock.advance(0.010)
    lag[0] = 0.010
    pin.deliver()
    clock.advance(0.100)
    assert pressed.empty() and button.noise_pulses == 0
