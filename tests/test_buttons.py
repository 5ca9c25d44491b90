"""Buttons on gpiozero's MockFactory: callbacks only enqueue; chatter is one press."""

import queue

from device.drivers.buttons import Buttons, DebouncedButton
from device.state import ButtonPressed, ButtonReleased, StaffRequested

PINS = (5, 6, 13, 19, 26)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def presses(q):
    out = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return out
        if not isinstance(item, ButtonReleased):
            out.append(item)


def test_each_button_reports_its_number(mock_factory, events):
    buttons = Buttons(PINS, events, pin_factory=mock_factory)
    for pin in PINS:
        mock_factory.pin(pin).drive_low()
        mock_factory.pin(pin).drive_high()
    assert presses(events) == [ButtonPressed(n) for n in range(1, 6)]
    buttons.close()


def test_contact_chatter_is_one_press(mock_factory, events):
    clock = FakeClock()
    buttons = Buttons(PINS, events, pin_factory=mock_factory, bounce_s=0.03, clock=clock)
    pin = mock_factory.pin(PINS[0])
    # The contact closes, bounces open and shut four times within 8 ms, then stays closed.
    for _ in range(5):
        pin.drive_low()
        clock.now += 0.001
        pin.drive_high()
        clock.now += 0.001
    pin.drive_low()
    clock.now += 0.2
    pin.drive_high()
    assert presses(events) == [ButtonPressed(1)]
    # A real second press after the contact rested counts.
    clock.now += 0.5
    pin.drive_low()
    pin.drive_high()
    assert presses(events) == [ButtonPressed(1)]
    buttons.close()


def test_chatter_on_release_does_not_make_a_new_press(mock_factory):
    clock = FakeClock()
    got = []
    button = DebouncedButton(5, on_press=lambda: got.append("press"), pin_factory=mock_factory,
                             bounce_s=0.03, clock=clock)
    pin = mock_factory.pin(5)
    pin.drive_low()
    clock.now += 0.15
    pin.drive_high()
    clock.now += 0.002
    pin.drive_low()      # bounce as the finger lifts
    clock.now += 0.002
    pin.drive_high()
    assert got == ["press"]
    button.close()


def test_staff_key_makes_a_session_request(mock_factory, events):
    buttons = Buttons(PINS, events, staff_pin=21, make_staff_event=lambda: StaffRequested("s"),
                      pin_factory=mock_factory)
    mock_factory.pin(21).drive_low()
    mock_factory.pin(21).drive_high()
    assert presses(events) == [StaffRequested("s")]
    buttons.close()
