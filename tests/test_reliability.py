"""Reliability: network faults, disk full, outbox full, heartbeat and pruning.

The fault matrix drives the real uploader against the stand-in hall server on
loopback, one fault at a time, calling ``send_batch()`` directly: each returns
the delay it asks for, which is checked against the configured bounds, and
each is exactly one request (no hidden retries, so no busy loop). At the end
the server must hold every event once, seq 1..N with a whole chain.
"""

import datetime
import random
import socket
import time
from types import SimpleNamespace

import pytest
import uuid6

from device import integrity
from device.config import Secret
from device.errors import OutboxFull, StorageError
from device.queue import wire
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from device.records import first_break
from device.ui.models import PausedScreen, ThanksScreen
from hall import HallServer, make_self_signed_cert
from helpers import rating, tap

KEY = "reliability-key"
MIN_S, MAX_S = 0.5, 8.0
N = 5

pytestmark = pytest.mark.timeout(60)





def uploader(outbox, url, key=KEY, verify=True, timeout=2.0, **kw):
    transport = HttpTransport(url, "d1", Secret(key), timeout=timeout, verify=verify)
    kw.setdefault("backoff_min_s", MIN_S)
    kw.setdefault("backoff_max_s", MAX_S)
    kw.setdefault("heartbeat_s", 0)
    kw.setdefault("retain_days", 0)
    kw.setdefault("rand", random.Random(7).random)
    return Uploader(outbox, transport, "d1", synced=lambda: True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def posts(hall):
    return [s for m, p, s in hall.requests_log if p == wire.evaluations_path()]


def assert_stored_once(hall, outbox, events):
    stored = hall.events("d1")
    assert sorted(e["id"] for e in stored) == sorted(e["id"] for e in events)
    assert [e["seq"] for e in stored] == list(range(1, len(events) + 1))
    assert hall.integrity("d1") == {"d1": []} and first_break(stored) is None
    assert outbox.waiting() == 0 and outbox.counts()["delivered"] == len(events)


def cycles_until_delivered(up, outbox, heal, fail_cycles, max_cycles=12):
    """Run ``fail_cycles`` cycles under the fault, ``heal()``, then cycle until drained."""
    delays = []
    for i in range(max_cycles):
        if i == fail_cycles:
            heal()
        delays.append(up.send_batch())
        if outbox.waiting() == 0:
            return delays
    raise AssertionError(f"not delivered after {max_cycles} cycles: {delays}")


def backoff_ok(delay):
    # Jitter keeps the delay in [base/2, base]; base is within [MIN_S, MAX_S].
    return MIN_S / 2 <= delay <= MAX_S


# --- the fault matrix ----------------------------------------------------------

def _status(**params):
    return lambda hall: hall.inject("status", count=2, **params)


FAULTS = {
    "500": (_status(status=500), backoff_ok),
    "502 html": (_status(status=502, body="<html>bad gateway</html>"), backoff_ok),
    "503 retry-after": (_status(status=503, retry_after=3), lambda d: d == 3),
    "503 retry-after too long": (_status(status=503, retry_after=10_000), lambda d: d == MAX_S),
    "429 retry-after": (_status(status=429, retry_after=2), lambda d: d == 2),
    "429 without retry-after": (_status(status=429), backoff_ok),
    "reset before handling": (lambda hall: hall.inject("reset", count=2), backoff_ok),
    "reset after commit": (lambda hall: hall.inject("reset_after_commit", count=2), backoff_ok),
    "malformed page": (lambda hall: hall.inject("malformed", count=2), backoff_ok),
    "malformed shape": (lambda hall: hall.inject("malformed", count=2, body={"accepted": 5}), backoff_ok),
    "acknowledges nothing": (lambda hall: hall.inject(
        "malformed", count=2, body={"accepted": ["not-ours"], "duplicate": [], "rejected": []}), backoff_ok),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_matrix_nothing_lost_nothing_twice_backoff_bounded(fault, hall, outbox):
    inject, delay_ok = FAULTS[fault]
    events = [outbox.append(rating(i)) for i in range(N)]
    inject(hall)
    up = uploader(outbox, hall.url)
    delays = cycles_until_delivered(up, outbox, heal=lambda: None, fail_cycles=2)
    assert len(delays) == 3 and delays[-1] == 0, delays
    assert all(delay_ok(d) for d in delays[:2]), delays
    assert len(posts(hall)) == len(delays)        # one request per cycle: no hidden retry loop
    assert_stored_once(hall, outbox, events)


def test_refused_connection(hall, outbox):
    events = [outbox.append(rating(i)) for i in range(N)]
    up = uploader(outbox, f"http://127.0.0.1:{free_port()}")

    def heal():                                       # the technician sets the right server
        up.reconfigure(transport=HttpTransport(hall.url, "d1", Secret(KEY), timeout=2))
        up.run_requests()                             # what the uploader's thread does next

    delays = cycles_until_delivered(up, outbox, heal=heal, fail_cycles=3)
    assert all(backoff_ok(d) for d in delays[:3]) and delays[1] > delays[0] / 2, delays
    assert up.status.online is True
    assert_stored_once(hall, outbox, events)


def test_timeout_then_the_late_commit_is_a_duplicate(hall, outbox):
    events = [outbox.append(rating(i)) for i in range(N)]
    hall.inject("latency", count=1, seconds=1.0)   # the server stores them after we gave up
    up = uploader(outbox, hall.url, timeout=0.3)
    delay = up.send_batch()
    assert backoff_ok(delay) and outbox.waiting() == N
    deadline = time.monotonic() + 5
    while len(hall.events("d1")) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    assert up.send_batch() == 0                            # sent again: all duplicates, acknowledged
    assert_stored_once(hall, outbox, events)


def test_wrong_key_is_a_visible_fault_retried_with_backoff(hall, outbox):
    events = [outbox.append(rating(i)) for i in range(N)]
    up = uploader(outbox, hall.url, key="not-the-key")
    delays = [up.send_batch(), up.send_batch()]
    # The hall's signed 401 does not verify under the wrong key: no answer at all, as from a rogue.
    assert up.status.fault == "unauthenticated_answer" and up.status.online is False
    assert all(MIN_S / 2 <= d <= MAX_S for d in delays) and delays[1] > delays[0], delays
    assert outbox.count("rejected") == 0
    assert hall.events("d1") == [] and outbox.waiting() == N
    up.reconfigure(transport=HttpTransport(hall.url, "d1", Secret(KEY), timeout=2))   # the right key
    up.run_requests()
    assert up.status.fault == ""                      # cleared with the new key, before any answer
    assert up.send_batch() == 0 and up.status.fault == ""
    assert_stored_once(hall, outbox, events)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    right, wrong = tmp_path_factory.mktemp("right"), tmp_path_factory.mktemp("wrong")
    try:
        return make_self_signed_cert(str(right)), make_self_signed_cert(str(wrong))
    except RuntimeError as e:
        pytest.skip(str(e))


def test_wrong_tls_certificate_is_refused_and_the_ca_bundle_is_used(tmp_path, outbox, certs):
    (cert, key), (other_cert, _) = certs
    with HallServer(tmp_path / "tls.db", default_key=KEY, tls=(cert, key)) as hall:
        events = [outbox.append(rating(i)) for i in range(N)]
        for verify in (True, other_cert):             # system CAs, then another private CA
            up = uploader(outbox, hall.url, verify=verify)
            delay = up.send_batch()
            assert backoff_ok(delay) and "TLS" in up.status.last_error, up.status.last_error
        assert hall.events("d1") == [] and outbox.waiting() == N
        up = uploader(outbox, hall.url, verify=cert)  # upload.ca_bundle = the hall's CA
        assert up.drain()
        assert_stored_once(hall, outbox, events)


def test_a_missing_ca_bundle_is_a_transport_error_naming_it(tmp_path, outbox, certs):
    (cert, key), _ = certs
    with HallServer(tmp_path / "tls.db", default_key=KEY, tls=(cert, key)) as hall:
        outbox.append(rating(0))
        up = uploader(outbox, hall.url, verify=str(tmp_path / "missing-ca.pem"))
        assert backoff_ok(up.send_batch())
        assert "missing-ca.pem" in up.status.last_error and outbox.waiting() == 1


def test_no_busy_loop_while_the_server_fails_even_when_woken(hall, outbox):
    outbox.append(rating(0))
    hall.inject("status", count=10_000, status=500)
    up = uploader(outbox, hall.url, backoff_min_s=0.05, backoff_max_s=0.2)
    up.start()
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:                 # a press storm wakes it constantly
            up.wake()
            time.sleep(0.01)
    finally:
        up.stop(timeout=5)
    # Delays 0.05, 0.1, 0.2, 0.2 ... (halved at most by jitter): about 10 in 1.5 s.
    assert 3 <= len(posts(hall)) <= 25, len(posts(hall))
    assert outbox.waiting() == 1


def test_an_upload_command_cuts_a_long_backoff_short(hall, outbox):
    events = [outbox.append(rating(i)) for i in range(2)]
    hall.inject("status", count=1, status=500)
    up = uploader(outbox, hall.url, backoff_min_s=60, backoff_max_s=120)
    up.start()
    try:
        deadline = time.monotonic() + 5
        while not posts(hall) and time.monotonic() < deadline:
            time.sleep(0.02)
        up.wake()                                     # an append: the backoff stands
        time.sleep(0.3)
        assert len(posts(hall)) == 1
        up.wake(force=True)                           # the technician's Upload
        while outbox.waiting() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        up.stop(timeout=5)
    assert_stored_once(hall, outbox, events)


def test_a_dead_letter_is_kept_visible_and_retried_only_on_command(hall, outbox):
    good = outbox.append(rating(0))
    bad = outbox.append(rating(1, level="excellent"))
    up = uploader(outbox, hall.url, heartbeat_s=300)
    assert up.drain()
    assert [e["id"] for e in outbox.events("rejected")] == [bad["id"]]
    assert up.status.rejected == 1 and up.send_batch() > 0 and len(posts(hall)) == 1
    body = up.upkeep.heartbeat_body()
    assert body["rejected"] == 1 and "dead_letters: 1" in body["faults"]
    assert up.status.faults == ("dead_letters: 1",)
    retried = up.retry_rejected()                     # the technician's Upload
    assert outbox.waiting() == 0                      # handed over, not done by the caller
    up.run_requests()
    assert retried.result(0) == 1 and outbox.waiting() == 1 and up.status.rejected == 0
    assert [e["id"] for e in hall.events("d1")] == [good["id"]]


# --- heartbeat --------------------------------------------------------------------

class FakeTime:
    """Monotonic ms, wall clock and sync flag under the test's control."""

    def __init__(self, wall, synced=True):
        self.ms = 10_000_000
        self.now = wall
        self.is_synced = synced

    def mono(self):
        return self.ms

    def wall(self):
        return self.now

    def synced(self):
        return self.is_synced

    def advance(self, seconds):
        self.ms += int(seconds * 1000)
        self.now += datetime.timedelta(seconds=seconds)


NOV25 = datetime.datetime(2026, 11, 25, 10, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))


def timed_uploader(outbox, url, t, **kw):
    transport = HttpTransport(url, "d1", Secret(KEY), timeout=2)
    return Uploader(outbox, transport, "d1", monotonic_ms=t.mono, wall=t.wall, synced=t.synced,
                    boot_id="this-boot", rand=lambda: 1.0, **kw)


def test_heartbeat_is_posted_at_start_then_every_heartbeat_s(hall, outbox):
    t = FakeTime(NOV25)
    outbox.append(rating(0, boot_id="this-boot", mono_ms=t.ms - 42_000))
    up = timed_uploader(outbox, hall.url, t, heartbeat_s=300, retain_days=0,
                        extra_faults=lambda: ["display"])
    assert 0 < up.upkeep.run() <= 300
    body = hall.heartbeats["d1"]
    assert set(body) == {"firmware", "uptime_s", "backlog", "oldest_pending_age_s", "rejected",
                         "last_upload_at", "head_seq", "clock_synced", "clock_source", "disk_free_bytes", "faults"}
    assert body["backlog"] == 1 and body["oldest_pending_age_s"] == 42 and body["rejected"] == 0
    assert body["head_seq"] == 1 and body["clock_source"] == "ntp"
    assert body["clock_synced"] is True and body["disk_free_bytes"] > 0 and body["faults"] == ["display"]
    assert up.status.last_heartbeat_at
    beats = lambda: sum(1 for _, p, _ in hall.requests_log if p.endswith("/heartbeat"))  # noqa: E731
    t.advance(299)
    up.upkeep.run()
    assert beats() == 1
    t.advance(2)
    assert up.drain()
    up.upkeep.run()
    assert beats() == 2
    body = hall.heartbeats["d1"]
    assert body["backlog"] == 0 and body["oldest_pending_age_s"] == 0 and body["uptime_s"] == 301
    assert body["last_upload_at"].startswith("2026-11-25T10:05:01")


def test_heartbeat_reports_low_storage_and_an_unsynced_clock(hall, tmp_path):
    box = Outbox(tmp_path / "o.db", max_events=10)
    try:
        for i in range(8):
            box.append(rating(i))
        t = FakeTime(NOV25, synced=False)
        up = timed_uploader(box, hall.url, t, heartbeat_s=300, retain_days=0)
        assert up.upkeep.heartbeat()
        faults = hall.heartbeats["d1"]["faults"]
        assert "clock_not_synced" in faults
        assert any(f.startswith("storage_low: outbox nearly full: 8 of 10") for f in faults), faults
        assert up.status.storage == "low"
    finally:
        box.close()


def test_a_failed_heartbeat_does_not_touch_the_upload_backoff(outbox):
    t = FakeTime(NOV25)
    up = timed_uploader(outbox, f"http://127.0.0.1:{free_port()}", t, heartbeat_s=300, retain_days=0)
    assert up.upkeep.heartbeat() is False
    assert up.backoff.failures == 0 and up.status.last_heartbeat_at == ""


# --- pruning ------------------------------------------------------------------------

def test_pruning_waits_for_a_synced_clock_goes_in_small_batches_and_keeps_the_chain(hall, outbox):
    t = FakeTime(NOV25, synced=True)
    events = [outbox.append(rating(i)) for i in range(7)]
    up = timed_uploader(outbox, hall.url, t, heartbeat_s=0, retain_days=1, prune_batch=3,
                        prune_every_s=3600)
    assert up.drain() and outbox.counts()["delivered"] == 7
    undelivered = outbox.append(rating(99))          # waiting: never pruned
    t.advance(2 * 86400)
    t.is_synced = False
    up.upkeep.run()
    assert len(outbox.events()) == 8                 # clock not trusted: nothing pruned
    t.is_synced = True
    t.advance(3600)
    assert up.upkeep.run() == 1.0                  # a full batch: the next follows in a second
    assert len(outbox.events()) == 5
    for _ in range(3):
        t.advance(1)
        up.upkeep.run()
    assert [e["id"] for e in outbox.events()] == [undelivered["id"]]
    assert outbox.pruned_runs() == [(1, 7, events[-1]["hash"])]
    nxt = outbox.append(rating(100))
    assert nxt["seq"] == 9 and nxt["prev_hash"] == undelivered["hash"]
    _, check, (report,) = integrity.verify(outbox.path)
    assert check == "ok" and report.ok and report.pruned == 7, report.line()


def test_events_delivered_before_sync_are_kept_retain_days_from_the_sync(hall, outbox):
    t = FakeTime(datetime.datetime(1970, 1, 1, 0, 1, tzinfo=datetime.UTC), synced=False)
    outbox.append(rating(0, clock_synced=False, occurred_at="1970-01-01T00:01:00.000+00:00"))
    up = timed_uploader(outbox, hall.url, t, heartbeat_s=0, retain_days=1, prune_every_s=60)
    assert up.drain()
    assert outbox._conn.execute("SELECT delivered_at FROM events").fetchone()[0] is None
    t.now, t.is_synced = NOV25, True               # network time arrives
    t.advance(60)
    up.upkeep.run()
    assert len(outbox.events()) == 1                 # stamped with the sync time, not pruned
    t.advance(86400 + 60)
    up.upkeep.run()
    assert outbox.events() == []


# --- disk full and outbox full --------------------------------------------------------

def limit_pages(box, extra):
    pages = box._conn.execute("PRAGMA page_count").fetchone()[0]
    box._conn.execute(f"PRAGMA max_page_count = {pages + extra}")


def test_a_full_disk_refuses_the_append_and_loses_nothing(outbox):
    kept = [outbox.append(rating(i)) for i in range(3)]
    limit_pages(outbox, 0)                           # SQLite's real SQLITE_FULL path
    big = "x" * 20_000
    with pytest.raises(StorageError, match="full"):
        outbox.append(rating(10, staff_name=big))
    assert not outbox._conn.in_transaction
    assert outbox.waiting() == 3 and outbox.head()[0] == 3
    assert [e["id"] for e in outbox.events()] == [e["id"] for e in kept]
    outbox._conn.execute("PRAGMA max_page_count = 1073741823")   # space again
    nxt = outbox.append(rating(11, staff_name=big))
    assert nxt["seq"] == 4 and nxt["prev_hash"] == kept[-1]["hash"]
    assert first_break(outbox.events()) is None and outbox.integrity_check() == "ok"


def test_bookkeeping_failing_on_a_full_disk_does_not_stop_the_uplink(hall, outbox):
    events = [outbox.append(rating(i)) for i in range(3)]
    real = outbox.mark_delivered
    calls = []

    def full_once(ids, now):
        calls.append(list(ids))
        if len(calls) == 1:
            raise StorageError("cannot write to outbox: database or disk is full")
        return real(ids, now)

    outbox.mark_delivered = full_once
    up = uploader(outbox, hall.url, backoff_min_s=0.05, backoff_max_s=0.1)
    up.start()
    try:
        deadline = time.monotonic() + 10
        while outbox.waiting() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        up.stop(timeout=5)
    assert len(calls) == 2 and len(posts(hall)) == 2  # sent again: duplicates, acknowledged
    assert_stored_once(hall, outbox, events)


class FakeStatvfs:
    def __init__(self, free):
        self.free = free

    def __call__(self, path):
        return SimpleNamespace(f_bavail=self.free // 4096, f_frsize=4096)


def test_storage_state_by_count_and_by_free_disk(tmp_path):
    disk = FakeStatvfs(1 << 30)
    box = Outbox(tmp_path / "o.db", max_events=10, min_free_bytes=10 << 20, statvfs=disk)
    try:
        assert box.storage_state() == ("ok", "")
        for i in range(8):
            box.append(rating(i))
        state, reason = box.storage_state()
        assert state == "low" and "8 of 10" in reason
        box.append(rating(8))
        box.append(rating(9))
        state, reason = box.storage_state()
        assert state == "full" and "outbox full" in reason
        with pytest.raises(OutboxFull):
            box.append(rating(10))
        box.claim(10)
        box.mark_delivered([e["id"] for e in box.events()], 1.0)
        assert box.storage_state() == ("ok", "")
        disk.free = 30 << 20                         # under 4x the reserve: warn
        state, reason = box.storage_state()
        assert state == "low" and "disk nearly full" in reason
        disk.free = 5 << 20                          # under the reserve: refuse
        state, reason = box.storage_state()
        assert state == "full" and "disk full" in reason
        with pytest.raises(OutboxFull, match="disk"):
            box.append(rating(11))
        assert box.head()[0] == 10 and box.waiting() == 0
        assert box.disk_free() == 5 << 20
    finally:
        box.close()

def fill_disk(box):
    """Make the outbox's database file full: SQLITE_FULL for any further event."""
    limit_pages(box, 0)
    with pytest.raises(StorageError):
        for _ in range(10_000):
            box.append({"id": str(uuid6.uuid7()), "type": "unrated", "device_id": "x"})



def test_app_on_a_full_disk_shows_paused_never_thanks(make_app, caplog):
    app, factory, clock = make_app()
    tap(app, factory, 1)
    assert isinstance(app.model, ThanksScreen)
    clock.mono += 10
    app.pump()
    fill_disk(app.outbox)
    before = len(app.outbox.events())
    shown = []
    real_show = app.screen.show

    def show(model, now=0.0):
        shown.append(model)
        return real_show(model, now)

    app.screen.show = show
    tap(app, factory, 2)
    assert isinstance(app.model, PausedScreen) and "存储已满" in app.model.reason
    assert not any(isinstance(m, ThanksScreen) for m in shown)
    assert len(app.outbox.events()) == before and "rating not kept" in caplog.text
    assert first_break(app.outbox.events()) is None


def test_app_pauses_rating_when_the_outbox_is_full(make_app):
    app, factory, clock = make_app("outbox.max_events=2")
    for n in (1, 2):
        tap(app, factory, n)
        clock.mono += 10
        app.pump()
    assert isinstance(app.model, PausedScreen) and "存储已满" in app.model.reason
    tap(app, factory, 3)
    assert len(app.outbox.events()) == 2              # the press is not a rating
    app.outbox.claim(2)
    app.outbox.mark_delivered([e["id"] for e in app.outbox.events()], 1.0)
    app.pump()
    tap(app, factory, 3)
    assert isinstance(app.model, ThanksScreen) and len(app.outbox.events()) == 3
