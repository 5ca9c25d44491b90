"""Time on a Pi without a battery clock: boots in 1970, jumps when network time arrives.

Events keep the wall time they were made with, ``clock_synced``, ``boot_id``
and ``mono_ms``; once synced, the uploader sends ``corrected_at`` for the
unsynced events of this boot. Order is by ``seq`` only.
"""

import datetime
import queue

import pytest
import uuid6

from device import clock
from device import config as config_mod
from device.app import App
from device.config import Secret
from device.hardware import staff_request
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from device.records import first_break
from sim.hardware import make_sim_hardware

KEY = "clock-key"
UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC)
SYNCED = datetime.datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC)


class Wall:
    """A wall clock that starts in 1970 and jumps at sync; mono_ms runs on."""

    def __init__(self):
        self.now, self.synced, self.ms = EPOCH, False, 30_000

    def wall(self):
        return self.now

    def mono(self):
        return self.ms

    def is_synced(self):
        return self.synced

    def advance(self, seconds):
        self.ms += int(seconds * 1000)
        self.now += datetime.timedelta(seconds=seconds)

    def sync(self, to):
        self.now, self.synced = to, True


def test_corrected_time_runs_back_from_now_by_the_monotonic_difference():
    event = {"mono_ms": 30_000}
    assert clock.corrected_time(event, SYNCED, 90_500) == "2026-11-25T01:58:59.500+00:00"


def test_kernel_clock_status_is_a_bool_and_cheap_to_read():
    assert isinstance(clock.kernel_clock_synced(), bool)
    assert clock.boot_id() == clock.boot_id() and clock.boot_id()
    assert clock.mono_ms() <= clock.mono_ms()


def test_a_device_that_boots_in_1970_and_syncs_later(tmp_path, hall):
    w = Wall()
    config = config_mod.load(overrides=[f"outbox.path=\"{tmp_path / 'outbox.db'}\"", "buttons.bounce_ms=0",
                                        "session.min_interval_s=0", "device.id=\"d1\""])
    hardware, factory = make_sim_hardware(config, queue.Queue(), staff_request)
    clocks = clock.Clocks(monotonic=lambda: w.ms / 1000, wall=w.wall, synced=w.is_synced, boot_id="boot-1")
    app = App(config, hardware, Secret(""), clocks=clocks)
    try:
        def tap(n):
            pin = factory.pin(config.buttons.pins[n - 1])
            pin.drive_low()
            pin.drive_high()
            app.pump()
            w.advance(11)                     # past the clock-status cache
            app.pump()

        app.pump()
        tap(1)                                # at 1970-01-01T00:00:30, not synced
        w.advance(60)
        w.sync(SYNCED)                        # network time: the wall clock jumps 56 years
        tap(2)
        first, second = app.outbox.events()
        assert first["occurred_at"].startswith("1970-01-01") and first["clock_synced"] is False
        assert second["occurred_at"].startswith("2026-11-25") and second["clock_synced"] is True
        assert first["boot_id"] == second["boot_id"] == "boot-1"
        assert second["mono_ms"] - first["mono_ms"] == 71_000

        up = Uploader(app.outbox, HttpTransport(hall.url, "d1", Secret(KEY), timeout=2), "d1",
                      monotonic_ms=w.mono, wall=w.wall, synced=w.is_synced, heartbeat_s=0, retain_days=0,
                      boot_id="boot-1")
        assert up.drain()
        stored = hall.events("d1")
        assert [e["seq"] for e in stored] == [1, 2]
        # The first press happened 71 s before the second by the monotonic clock.
        when = datetime.datetime.fromisoformat(stored[0]["corrected_at"])
        assert when == datetime.datetime.fromisoformat(second["occurred_at"]) - datetime.timedelta(seconds=71)
        assert "corrected_at" not in stored[1]
        assert first_break(stored) is None and hall.integrity("d1") == {"d1": []}
        # The hall's month report puts the 1970 press in November 2026.
        window = hall.report_data("2026-11")["windows"][config.device.window_no]
        assert window["ratings"] == 2
    finally:
        app.outbox.close()
        hardware.close()


def rating(seq_hint, **extra):
    return dict({"id": str(uuid6.uuid7()), "type": "rating", "device_id": "d1", "window_no": "01",
                 "staff_no": "7", "staff_name": "张三", "level": "satisfied", "satisfaction": 4,
                 "channel": "5", "assess_number": 1, "suspect": False, "boot_id": "this-boot",
                 "mono_ms": 1000 * seq_hint}, **extra)


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def test_unsynced_events_sent_before_the_sync_carry_no_corrected_time(hall, outbox):
    w = Wall()
    outbox.append(rating(1, clock_synced=False, occurred_at="1970-01-01T00:00:31.000+00:00"))
    up = Uploader(outbox, HttpTransport(hall.url, "d1", Secret(KEY), timeout=2), "d1", boot_id="this-boot",
                  monotonic_ms=w.mono, wall=w.wall, synced=w.is_synced, heartbeat_s=0, retain_days=0)
    assert up.drain()
    (stored,) = hall.events("d1")
    assert "corrected_at" not in stored and stored["clock_synced"] is False


def test_order_is_by_seq_never_by_wall_time(hall, outbox):
    # A synced event, then a reboot into 1970 (another boot), then one more after sync.
    a = outbox.append(rating(5, clock_synced=True, boot_id="earlier-boot",
                             occurred_at="2026-11-24T18:00:00.000+08:00"))
    b = outbox.append(rating(1, clock_synced=False, occurred_at="1970-01-01T00:00:01.000+00:00"))
    c = outbox.append(rating(2, clock_synced=True, occurred_at="2026-11-25T10:00:00.000+08:00"))
    w = Wall()
    w.sync(SYNCED)
    w.ms = 4000
    up = Uploader(outbox, HttpTransport(hall.url, "d1", Secret(KEY), timeout=2), "d1", boot_id="this-boot",
                  monotonic_ms=w.mono, wall=w.wall, synced=w.is_synced, batch_size=1,
                  heartbeat_s=0, retain_days=0)
    assert up.drain()
    stored = hall.events("d1")
    assert [e["id"] for e in stored] == [a["id"], b["id"], c["id"]]
    assert [e["seq"] for e in stored] == [1, 2, 3]
    assert stored[1]["corrected_at"] == "2026-11-25T01:59:57.000+00:00"   # 3 s before "now"
    assert "corrected_at" not in stored[0] and "corrected_at" not in stored[2]
    assert hall.integrity("d1") == {"d1": []}
