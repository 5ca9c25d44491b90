"""Small helpers the test modules share (fixtures are in conftest.py)."""

import datetime
from dataclasses import dataclass

import uuid6

from device.state import ButtonPressed, ButtonReleased, CommitRating, RatingCommitted, State, step

#: The default BCM pins of the five rating buttons, 非常满意 first.
PINS = (5, 6, 13, 19, 26)
#: A Wednesday morning in the hall's time zone.
WEDNESDAY = datetime.datetime(2026, 11, 25, 10, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))


def rating(i, device_id="d1", **extra):
    """The fields of a valid rating event before the outbox seals it."""
    return dict({"id": str(uuid6.uuid7()), "type": "rating", "device_id": device_id, "window_no": "01",
                 "staff_no": "7", "staff_name": "张三", "level": "satisfied", "satisfaction": 4,
                 "channel": "5", "assess_number": 1, "suspect": False,
                 "occurred_at": "2026-11-25T10:00:00.000+08:00", "clock_synced": True,
                 "boot_id": "b", "mono_ms": 1000 + i}, **extra)


class Clock:
    """Monotonic and wall time that only move when the test says so."""

    def __init__(self):
        self.mono = 1000.0
        self.wall = WEDNESDAY

    def monotonic(self):
        return self.mono

    def advance(self, seconds):
        self.mono += seconds
        self.wall += datetime.timedelta(seconds=seconds)


def tap(app, factory, n):
    """A finger on rating button ``n`` of the simulated hardware, then the loop catches up."""
    pin = factory.pin(PINS[n - 1])
    pin.drive_low()
    pin.drive_high()
    app.pump()


@dataclass(frozen=True)
class Tap:
    """A finger on one button: pressed and released at the same instant (for the pure state machine)."""

    button: int


def run(rules, script, state=None):
    """Feed ``(time, input)`` pairs to the state machine; every rating is committed at once.

    Returns:
        ``(state, effects)``: the last state and every effect, in order.
    """
    state = state or State()
    seen = []
    for now, event in script:
        inputs = [ButtonPressed(event.button), ButtonReleased(event.button)] if isinstance(event, Tap) else [event]
        for item in inputs:
            state, effects = step(state, item, now, rules)
            seen.extend(effects)
            for effect in effects:
                if isinstance(effect, CommitRating):
                    state, more = step(state, RatingCommitted(effect.level, f"r{len(seen)}"), now, rules)
                    seen.extend(more)
    return state, seen
