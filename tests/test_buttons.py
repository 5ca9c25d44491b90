"""Buttons on gpiozero's MockFactory: callbacks only enqueue; chatter is one press; noise is no press."""

import queue
import threading
import time

import pytest

from device.drivers.buttons import Buttons, DebouncedButton
from device.state import ButtonPressed, ButtonReleased, StaffRequested

PINS = (5, 6, 13, 19, 26)

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    """Monotonic seconds that move only when told, firing the timers that fall due."""

    def __init__(self):
        self.now = 0.0
        self.timers = []

    def __call__(self):
        return self.now

    def timer(self, delay, fn):
        entry = [self.now + delay, fn, False]
        self.timers.append(entry)

        class Handle:
            def cancel(self_inner):
                entry[2] = True

        return Handle()

    def advance(self, seconds):
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t[2] and t[0] <= end), key=lambda t: t[0])
            if not due:
                break
            entry = due[0]
            entry[2] = True
            self.now = max(self.now, entry[0])
            entry[1]()
        self.now = end


def drain(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def presses(q):
    return [e for e in drain(q) if not isinstance(e, ButtonReleased)]


def hold(pin, clock, seconds):
    """The contact closed for ``seconds`` on the fake clock, then open."""
    pin.drive_low()
    clock.advance(seconds)
    pin.drive_high()


def test_each_button_reports_its_number(mock_factory, events):
    buttons = Buttons(PINS, events, pin_factory=mock_factory)
    for pin in PINS:
        mock_factory.pin(pin).drive_low()
        mock_factory.pin(pin).drive_high()
    assert presses(events) == [ButtonPressed(n) for n in range(1, 6)]
    buttons.close()


def test_contact_chatter_is_one_press(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04,
                      clock=clock, timer=clock.timer)
    pin = mock_factory.pin(PINS[0])
    # The contact closes, bounces open and shut four times within 8 ms, then stays closed.
    for _ in range(5):
        pin.drive_low()
        clock.advance(0.001)
        pin.drive_high()
        clock.advance(0.001)
    hold(pin, clock, 0.2)
    assert drain(events) == [ButtonPressed(1), ButtonReleased(1)]
    assert buttons.noise_pulses == 0
    # A real second press after the contact rested counts.
    clock.advance(0.5)
    hold(pin, clock, 0.1)
    assert presses(events) == [ButtonPressed(1)]
    buttons.close()


def test_chatter_on_release_does_not_make_a_new_press(mock_factory):
    clock = FakeClock()
    got = []
    button = DebouncedButton(5, on_press=lambda: got.append("press"), on_release=lambda: got.append("release"),
                             pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04, clock=clock,
                             timer=clock.timer)
    pin = mock_factory.pin(5)
    hold(pin, clock, 0.15)
    clock.advance(0.002)
    hold(pin, clock, 0.002)     # bounce as the finger lifts
    clock.advance(0.1)
    assert got == ["press", "release"]
    assert button.noise_pulses == 0
    button.close()


def test_a_sub_millisecond_spike_is_noise_counted_never_a_press(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04,
                      clock=clock, timer=clock.timer)
    pin = mock_factory.pin(PINS[0])
    hold(pin, clock, 0.0002)             # 200 us: a spike on a long cable
    clock.advance(0.1)
    assert drain(events) == []
    assert buttons.noise_pulses == 1
    buttons.close()


def test_a_chatter_burst_without_a_hold_is_one_noise_pulse(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04,
                      clock=clock, timer=clock.timer)
    pin = mock_factory.pin(PINS[2])
    for _burst in range(2):                  # two 5 ms bursts, well apart
        for _ in range(5):
            hold(pin, clock, 0.0005)
            clock.advance(0.0005)
        clock.advance(0.2)
    assert drain(events) == []
    assert buttons.noise_pulses == 2
    buttons.close()


def test_a_60_ms_press_counts_and_a_39_ms_one_does_not(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04,
                      clock=clock, timer=clock.timer)
    pin = mock_factory.pin(PINS[4])
    hold(pin, clock, 0.039)
    clock.advance(0.1)
    assert drain(events) == [] and buttons.noise_pulses == 1
    pin.drive_low()
    clock.advance(0.045)
    # The press is reported once the contact was closed 40 ms, while the finger is still down.
    assert drain(events) == [ButtonPressed(5)]
    clock.advance(0.015)
    pin.drive_high()
    assert drain(events) == [ButtonReleased(5)]
    assert buttons.noise_pulses == 1
    buttons.close()


def test_noise_on_the_staff_key_opens_no_session(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, staff_pin=21, make_staff_event=lambda: StaffRequested("s"),
                      pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04, clock=clock, timer=clock.timer)
    hold(mock_factory.pin(21), clock, 0.001)
    clock.advance(0.1)
    assert drain(events) == []
    hold(mock_factory.pin(21), clock, 0.06)
    assert drain(events) == [StaffRequested("s")]
    assert buttons.noise_pulses == 1
    buttons.close()


def test_staff_key_makes_a_session_request(mock_factory, events):
    buttons = Buttons(PINS, events, staff_pin=21, make_staff_event=lambda: StaffRequested("s"),
                      pin_factory=mock_factory)
    mock_factory.pin(21).drive_low()
    mock_factory.pin(21).drive_high()
    assert presses(events) == [StaffRequested("s")]
    buttons.close()


def test_real_time_pulses_on_mock_pins(mock_factory, events):
    """The same rules with the real clock and timer threads: 200 us, a 5 ms burst, a 60 ms press."""
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, min_press_s=0.04)
    pin = mock_factory.pin(PINS[0])
    pin.drive_low()
    _spin(0.0002)
    pin.drive_high()
    time.sleep(0.1)
    for _ in range(5):
        pin.drive_low()
        _spin(0.0005)
        pin.drive_high()
        _spin(0.0005)
    time.sleep(0.1)
    pin.drive_low()
    time.sleep(0.06)
    pin.drive_high()
    time.sleep(0.05)
    assert drain(events) == [ButtonPressed(1), ButtonReleased(1)]
    assert buttons.noise_pulses == 2
    buttons.close()


def test_the_edge_callback_never_waits(mock_factory, events):
    """A press confirmed by the timer thread: the edge callback itself returns at once."""
    buttons = Buttons(PINS, events, pin_factory=mock_factory, min_press_s=0.04)
    pin = mock_factory.pin(PINS[1])
    start = time.perf_counter()
    pin.drive_low()
    took = time.perf_counter() - start
    assert took < 0.02
    deadline = time.monotonic() + 2
    while events.empty() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert events.get_nowait() == ButtonPressed(2)
    assert threading.current_thread() is threading.main_thread()
    pin.drive_high()
    buttons.close()


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
