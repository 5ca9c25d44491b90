"""Small helpers the test modules share (fixtures are in conftest.py)."""

import datetime

import uuid6

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
