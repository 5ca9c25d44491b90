"""Time on a Pi without a battery clock: boots in 1970, maybe never sees NTP.

Events keep the wall time they were made with, ``clock_synced``, ``boot_id``
and ``mono_ms``. The hall's signed answers tell the time where NTP does not;
once the clock is trustworthy the loop appends one ``clock`` event, and the
hall dates every event of that boot from it, exactly, whether it arrived
before or after. Order is by ``seq`` only.
"""

import datetime
import queue
import time

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
from device.records import Origin, RecordFactory, first_break
from hall import dating
from sim.hardware import make_sim_hardware

KEY = "clock-key"
UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC)
SYNCED = datetime.datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC)

pytestmark = pytest.mark.timeout(60)


class Wall:
    """A system clock that starts in 1970 and jumps when NTP sets it; mono_ms runs on."""

    def __init__(self):
        self.now, self.synced, self.ms = EPOCH, False, 30_000

    def wall(self):
        return self.now

    def mono(self):
        return self.ms

    def monotonic(self):
        return self.ms / 1000

    def is_synced(self):
        return self.synced

    def advance(self, seconds):
        self.ms += int(seconds * 1000)
        self.now += datetime.timedelta(seconds=seconds)

    def sync(self, to):
        self.now, self.synced = to, True

    def clocks(self):
        return clock.Clocks(monotonic=self.monotonic, wall=self.wall, synced=self.is_synced, boot_id="boot-1",
                            sync_check_s=0)


# --- the clocks ---------------------------------------------------------------------------

def test_kernel_clock_status_is_a_bool_and_cheap_to_read():
    assert isinstance(clock.kernel_clock_synced(), bool)
    assert clock.boot_id() == clock.boot_id() and clock.boot_id()
    assert clock.mono_ms() <= clock.mono_ms()


def test_the_halls_time_is_the_clock_where_ntp_is_not():
    w = Wall()
    clocks = w.clocks()
    assert not clocks.is_synced() and clocks.source() == "" and clocks.wall() == EPOCH
    clocks.learn_hall_time(int(SYNCED.timestamp()))
    assert clocks.is_synced() and clocks.source() == "hall"
    assert clocks.wall() == SYNCED + datetime.timedelta(seconds=0.5)
    w.advance(60)
    w.now = datetime.datetime(1999, 1, 1, tzinfo=UTC)     # someone sets the system clock: no matter
    assert clocks.wall() == SYNCED + datetime.timedelta(seconds=60.5)
    assert clocks.hall_now() == SYNCED.timestamp() + 60.5
    w.sync(SYNCED + datetime.timedelta(seconds=61))         # NTP arrives: it wins
    assert clocks.source() == "ntp" and clocks.wall() == SYNCED + datetime.timedelta(seconds=61)


def test_a_clock_event_is_owed_once_the_clock_is_trusted_after_an_event_was_stamped_unsynced():
    w = Wall()
    clocks = w.clocks()
    origin = Origin("d1", "01", "7", "张三", "5")
    assert not clocks.is_synced() and clocks.clock_event_due() == ""   # nothing stamped yet: none owed
    clocks.learn_hall_time(int(SYNCED.timestamp()))
    assert clocks.clock_event_due() == ""                               # trusted from the first event on
    fresh = w.clocks()
    RecordFactory(fresh).base("rating", origin, None)                  # stamped before the clock was set
    assert fresh.clock_event_due() == ""                                # owed, once it can be trusted
    fresh.learn_hall_time(int(SYNCED.timestamp()))
    assert fresh.clock_event_due() == "hall"
    fresh.clock_event_kept()
    assert fresh.clock_event_due() == ""


def test_the_clock_event_says_when_this_boots_monotonic_clock_read_what():
    w = Wall()
    clocks = w.clocks()
    clocks.learn_hall_time(int(SYNCED.timestamp()))
    origin = Origin("d1", "01", "7", "张三", "5")
    fields = RecordFactory(clocks, new_id=lambda: "id-1").clock(origin, "hall")
    assert fields["type"] == "clock" and fields["source"] == "hall" and fields["boot_id"] == "boot-1"
    assert fields["mono_ms"] == 30_000 and fields["clock_synced"] is True
    assert fields["synced_at"] == fields["occurred_at"] == "2026-11-25T02:00:00.500+00:00"


# --- a device in 1970 with no NTP, end to end --------------------------------------------------

def make_app(tmp_path, hall, w):
    config = config_mod.load(overrides=[
        f"outbox.path=\"{tmp_path / 'outbox.db'}\"", "buttons.bounce_ms=0", "session.min_interval_s=0",
        "device.id=\"d1\"", "session.source=\"free\"", f"upload.server=\"{hall.url}\"", "upload.heartbeat_s=0"])
    hardware, factory = make_sim_hardware(config, queue.Queue(), staff_request)
    app = App(config, hardware, Secret(KEY), clocks=w.clocks())
    return app, hardware, factory, config


def tap(app, factory, config, n):
    pin = factory.pin(config.buttons.pins[n - 1])
    pin.drive_low()
    pin.drive_high()
    app.pump()


def test_a_device_in_1970_without_ntp_takes_the_halls_time_and_every_event_is_dated_exactly(tmp_path, hall):
    w = Wall()
    app, hardware, factory, config = make_app(tmp_path, hall, w)
    try:
        app.pump()
        tap(app, factory, config, 1)                    # 1970-01-01T00:00:30, not synced
        w.advance(90)
        tap(app, factory, config, 2)                    # 90 s later, still 1970
        first, second = app.outbox.events()
        assert first["occurred_at"].startswith("1970-01-01") and first["clock_synced"] is False
        assert second["mono_ms"] - first["mono_ms"] == 90_000

        # The first request is signed in 1970: the hall refuses it, signed; its time is taken, and the
        # request is signed again with it and sent at once.
        delivered_at = time.time()
        assert app.uploader.drain()
        assert [s for _, _, s in hall.requests_log] == [401, 200]
        assert app.clocks.source() == "hall" and abs(app.clocks.hall_now() - delivered_at) < 3
        assert app.uploader.refresh_status().clock_source == "hall"

        app.pump()                                      # the loop keeps the clock event ...
        app.pump()                                      # ... once
        w.advance(30)
        tap(app, factory, config, 3)                    # stamped by the hall's time now
        assert app.uploader.drain()
        stored = hall.events("d1")
        assert [e["type"] for e in stored] == ["rating", "rating", "clock", "rating"]
        clock_event, third = stored[2], stored[3]
        assert clock_event["source"] == "hall" and clock_event["boot_id"] == "boot-1"
        assert third["clock_synced"] is True and abs(
            datetime.datetime.fromisoformat(third["occurred_at"]).timestamp() - (delivered_at + 30)) < 3
        assert first_break(stored) is None and hall.integrity("d1") == {"d1": []}

        # The hall dates the two 1970 ratings exactly, though they arrived before their clock event.
        times = hall.exact_times("d1")
        assert times[first["id"]] == times[second["id"]] - datetime.timedelta(seconds=90)
        assert abs(times[second["id"]].timestamp() - delivered_at) < 3
        assert times[third["id"]] - times[second["id"]] == datetime.timedelta(seconds=30)
        # ... and the month's report counts them in this month, not in 1970.
        month = dating.month_of(times[first["id"]])
        data = hall.report_data(month)
        assert data["undated"] == []
        assert sum(w_["ratings"] for h in data["halls"] for w_ in h["windows"]) == 3
    finally:
        app.outbox.close()
        hardware.close()


def test_events_made_before_ntp_are_dated_by_the_clock_event_that_follows_them(tmp_path, hall):
    w = Wall()
    app, hardware, factory, config = make_app(tmp_path, hall, w)
    try:
        app.pump()
        tap(app, factory, config, 1)                    # in 1970, offline
        w.advance(71)
        w.sync(SYNCED)                                  # NTP: the system clock jumps 56 years
        app.pump()                                      # clock event (ntp) kept
        tap(app, factory, config, 2)
        assert [e["type"] for e in app.outbox.events()] == ["rating", "clock", "rating"]
        assert app.uploader.drain()
        first, clock_event, second = hall.events("d1")
        assert clock_event["source"] == "ntp" and clock_event["synced_at"] == clock.iso(SYNCED)
        times = hall.exact_times("d1")
        assert times[first["id"]] == SYNCED - datetime.timedelta(seconds=71)
        assert times[second["id"]] == SYNCED
    finally:
        app.outbox.close()
        hardware.close()


def test_events_left_unsynced_by_an_earlier_process_of_this_boot_get_their_clock_event(tmp_path, hall):
    box = Outbox(tmp_path / "outbox.db")
    left = box.append(rating(1, clock_synced=False, boot_id="boot-1", occurred_at="1970-01-01T00:00:01.000+00:00"))
    box.close()
    w = Wall()
    app, hardware, _, _ = make_app(tmp_path, hall, w)          # the process starts again, same boot
    try:
        app.pump()
        assert [e["type"] for e in app.outbox.events()] == ["rating"]
        app.clocks.learn_hall_time(int(SYNCED.timestamp()))
        app.pump()
        assert [e["type"] for e in app.outbox.events()] == ["rating", "clock"]
        assert app.uploader.drain()
        assert hall.exact_times("d1")[left["id"]] == SYNCED + datetime.timedelta(seconds=0.5 - 29)
    finally:
        app.outbox.close()
        hardware.close()


# --- order -------------------------------------------------------------------------------------

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


def test_order_is_by_seq_never_by_wall_time(hall, outbox):
    # A synced event, then a reboot into 1970 (another boot), then one more after sync.
    a = outbox.append(rating(5, clock_synced=True, boot_id="earlier-boot",
                             occurred_at="2026-11-24T18:00:00.000+08:00"))
    b = outbox.append(rating(1, clock_synced=False, occurred_at="1970-01-01T00:00:01.000+00:00"))
    c = outbox.append(rating(2, clock_synced=True, occurred_at="2026-11-25T10:00:00.000+08:00"))
    w = Wall()
    w.sync(SYNCED)
    up = Uploader(outbox, HttpTransport(hall.url, "d1", Secret(KEY), timeout=2), "d1", boot_id="this-boot",
                  monotonic_ms=w.mono, wall=w.wall, synced=w.is_synced, batch_size=1,
                  heartbeat_s=0, retain_days=0)
    assert up.drain()
    stored = hall.events("d1")
    assert [e["id"] for e in stored] == [a["id"], b["id"], c["id"]]
    assert [e["seq"] for e in stored] == [1, 2, 3]
    assert hall.exact_times("d1")[b["id"]] is None      # no clock event of its boot: undated, not 1970
    assert hall.integrity("d1") == {"d1": []}
