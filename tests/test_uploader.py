"""The uploader against the real stand-in hall server on loopback, faults injected.

Batches are sent directly (``send_batch``): each returns the delay it asks
for, which is checked against the configured bounds instead of being slept.
"""

import dataclasses
import threading
import time

import pytest
from test_wire import TinyServer

from device.config import Secret
from device.queue import wire
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader, UploadStatus
from device.records import first_break
from helpers import rating

KEY = "k3y-for-tests"


def make_uploader(outbox, url, key=KEY, **kw):
    transport = HttpTransport(url, "d1", Secret(key), timeout=2)
    kw.setdefault("backoff_min_s", 1.0)
    kw.setdefault("backoff_max_s", 60.0)
    kw.setdefault("rand", lambda: 1.0)
    return Uploader(outbox, transport, "d1", synced=lambda: True, **kw)


def fill(outbox, n):
    return [outbox.append(rating(i)) for i in range(n)]


def test_batches_are_delivered_once_in_order_with_a_whole_chain(hall, outbox):
    fill(outbox, 7)
    up = make_uploader(outbox, hall.url, batch_size=3)
    assert up.drain()
    stored = hall.events("d1")
    assert [e["seq"] for e in stored] == list(range(1, 8))
    assert first_break(stored) is None and hall.integrity("d1") in ({}, {"d1": []})
    assert outbox.counts()["delivered"] == 7 and up.status.online


def test_server_error_then_recovery_stores_each_event_once(hall, outbox):
    fill(outbox, 4)
    hall.inject("status", count=2, status=500)
    up = make_uploader(outbox, hall.url)
    delays = [up.send_batch(), up.send_batch()]
    assert delays == [1.0, 2.0]           # exponential, within bounds
    assert outbox.counts()["pending"] == 4 and up.status.online is False
    assert up.send_batch() == 0
    assert len(hall.events("d1")) == 4 and outbox.waiting() == 0


def test_reset_after_commit_is_sent_again_and_stored_once(hall, outbox):
    fill(outbox, 3)
    hall.inject("reset_after_commit", count=1)
    up = make_uploader(outbox, hall.url)
    assert up.send_batch() > 0                 # the answer was lost: retry later
    assert len(hall.events("d1")) == 3    # ... though the server has them
    assert up.send_batch() == 0                # re-sent: duplicates, acknowledged
    assert len(hall.events("d1")) == 3 and outbox.waiting() == 0


def test_malformed_answer_keeps_events_pending(hall, outbox):
    fill(outbox, 2)
    hall.inject("malformed", count=1)
    up = make_uploader(outbox, hall.url)
    assert up.send_batch() > 0 and outbox.counts()["pending"] == 2
    assert up.send_batch() == 0 and len(hall.events("d1")) == 2


def test_retry_after_is_honoured_and_capped(hall, outbox):
    fill(outbox, 1)
    hall.inject("status", count=1, status=429, retry_after=7)
    hall.inject("status", count=1, status=503, retry_after=100000)
    up = make_uploader(outbox, hall.url, backoff_max_s=60)
    assert up.send_batch() == 7
    assert up.send_batch() == 60
    assert up.send_batch() == 0


def test_backoff_is_capped_and_never_zero(tmp_path, outbox):
    fill(outbox, 1)
    up = make_uploader(outbox, "http://127.0.0.1:9", backoff_min_s=0.5, backoff_max_s=4, rand=lambda: 0.0)
    delays = [up.send_batch() for _ in range(8)]
    assert all(0.25 <= d <= 4 for d in delays), delays
    assert max(delays) <= 4 and outbox.waiting() == 1


def test_a_wrong_key_is_no_answer_and_never_a_dead_letter(hall, outbox):
    fill(outbox, 1)
    up = make_uploader(outbox, hall.url, key="wrong")
    delay = up.send_batch()
    # The hall's signed 401 cannot be told from a rogue's answer without the right key.
    assert up.status.fault == "unauthenticated_answer" and "unauthenticated_answer" in up.refresh_status().faults
    assert delay > 0 and up.status.unauthenticated == 1 and up.status.online is False
    assert outbox.waiting() == 1 and outbox.count("rejected") == 0 and hall.events("d1") == []


def test_a_verified_refusal_is_an_auth_fault_retried_slowly(hall, outbox):
    fill(outbox, 1)
    hall.inject("status", status=401, body={"error": "bad_signature"})
    up = make_uploader(outbox, hall.url)
    delay = up.send_batch()
    assert up.status.fault == "auth" and delay >= 60 / 4 and "bad_signature" in up.status.last_error
    assert outbox.waiting() == 1 and outbox.count("rejected") == 0
    assert up.send_batch() == 0 and up.status.fault == "" and len(hall.events("d1")) == 1


def test_an_event_the_server_rejects_becomes_a_dead_letter(hall, outbox):
    good = fill(outbox, 2)
    bad = outbox.append(rating(9, level="excellent"))
    up = make_uploader(outbox, hall.url)
    assert up.drain()
    assert {e["id"] for e in outbox.events("rejected")} == {bad["id"]}
    assert {e["id"] for e in hall.events("d1")} == {e["id"] for e in good}


def test_bad_request_is_never_a_dead_letter_the_bad_event_is_held_back_and_the_rest_delivered(hall, outbox):
    good = fill(outbox, 5)
    # NaN is not JSON: any batch holding this event is answered 400 as a whole.
    bad = outbox.append(rating(9, mono_ms=float("nan")))
    more = fill(outbox, 2)
    up = make_uploader(outbox, hall.url)
    for _ in range(12):
        up.send_batch()
    counts = outbox.counts()
    # A whole-request refusal never costs an event: the lone refused one is kept, held back a while.
    assert counts["rejected"] == 0 and counts["delivered"] == 7 and outbox.waiting() == 1
    assert {e["id"] for e in hall.events("d1")} == {e["id"] for e in good + more}
    assert up.refresh_status().held == 1
    assert any(f.startswith("hall_refused") for f in up.status.faults)
    assert sum(1 for _, _, status in hall.requests_log if status == 400) >= 2
    assert bad["id"] in {e["id"] for e in outbox.events("sending")}


def test_batch_too_large_is_halved(hall, outbox):
    fill(outbox, 8)
    hall.inject("status", count=1, status=413)
    up = make_uploader(outbox, hall.url, batch_size=8)
    assert up.send_batch() == 0 and up.batch_limit == 4
    assert up.drain() and len(hall.events("d1")) == 8


def test_a_hall_that_answers_413_down_to_one_event_costs_nothing_and_backs_off(hall, outbox):
    fill(outbox, 4)
    hall.inject("status", count=4, status=413)
    up = make_uploader(outbox, hall.url, batch_size=4)
    delays = [up.send_batch() for _ in range(4)]
    assert delays[:2] == [0, 0] and up.batch_limit == 1
    assert all(d > 0 for d in delays[2:])          # refused alone: wait, never give up
    assert outbox.count("rejected") == 0 and up.status.fault == "hall_refused"
    up.release_held(everything=True)
    assert up.drain() and len(hall.events("d1")) == 4 and outbox.count("rejected") == 0


def test_events_go_as_sealed_even_when_stamped_before_the_clock_was_set(hall, outbox):
    sealed = outbox.append(rating(0, clock_synced=False, boot_id="this-boot", mono_ms=5_000,
                                  occurred_at="1970-01-01T00:00:05.000+00:00"))
    up = make_uploader(outbox, hall.url, boot_id="this-boot")
    assert up.drain()
    (stored,) = hall.events("d1")
    assert stored == sealed                    # nothing added after sealing: a clock event dates it
    assert first_break(hall.events("d1")) is None


def test_the_halls_head_is_kept_and_handed_to_the_outbox(hall, outbox):
    events = fill(outbox, 5)
    noted, checkpoints = [], []
    outbox.note_acknowledged_head = lambda seq, digest: noted.append((seq, digest))
    real_checkpoint = outbox.checkpoint

    def checkpoint(passive=False):
        checkpoints.append(passive)
        return real_checkpoint()

    outbox.checkpoint = checkpoint
    up = make_uploader(outbox, hall.url, batch_size=2)
    assert up.drain()
    assert noted == [(2, events[1]["hash"]), (4, events[3]["hash"]), (5, events[4]["hash"])]
    assert up.status.hall_head == (5, events[4]["hash"]) and checkpoints == [True, True, True]


def test_secret_never_shows_itself():
    s = Secret("topsecret")
    assert "topsecret" not in repr(s) and "topsecret" not in str(s) and "topsecret" not in f"{s}"


# --- a lowercase Retry-After from a real HTTP server ----------------------------------

def test_a_lowercase_retry_after_from_a_real_server_is_honoured(outbox):
    tiny = TinyServer(KEY)   # the stand-in hall server spells it "Retry-After" unless told otherwise
    try:
        tiny.reply(503, {"content-type": "application/json", "retry-after": "7"}, b'{"error":"busy"}')
        fill(outbox, 1)
        up = make_uploader(outbox, tiny.url, backoff_min_s=1, backoff_max_s=60)
        assert up.send_batch() == 7                           # not a jittered backoff
        assert up.status.last_error == "503: server asks to wait 7 s"
        tiny.reply(429, {"retry-after": "100000"})
        assert up.send_batch() == 60                          # capped at backoff_max_s
        assert outbox.waiting() == 1 and outbox.counts()["delivered"] == 0
    finally:
        tiny.close()


# --- the worker owns its state ------------------------------------------------------------

class Recording:
    """A transport that notes which thread used it and whether it was closed."""

    def __init__(self, inner):
        self.inner, self.threads, self.closed = inner, set(), False
        self.base_url = inner.base_url

    def request(self, *args, **kw):
        self.threads.add(threading.current_thread().name)
        return self.inner.request(*args, **kw)

    def close(self):
        self.closed = True
        self.inner.close()


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_status_is_an_immutable_snapshot(hall, outbox):
    up = make_uploader(outbox, hall.url)
    before = up.status
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.fault = ""
    fill(outbox, 2)
    assert up.send_batch() == 0
    assert before == UploadStatus() and before.online is None      # a reader's copy never changes
    assert up.status.online is True and up.status.delivered == 2


def test_reconfigure_takes_effect_on_the_uploaders_own_thread(hall, outbox):
    events = fill(outbox, 3)
    dead = Recording(HttpTransport("http://127.0.0.1:9", "d1", Secret(KEY), timeout=1))
    up = Uploader(outbox, dead, "old-id", backoff_min_s=30, backoff_max_s=60, heartbeat_s=0,
                  retain_days=0, synced=lambda: True)
    up.start()
    try:
        wait_for(lambda: up.status.online is False)                 # refused, in a 15-30 s backoff
        good = Recording(HttpTransport(hall.url, "d1", Secret(KEY), timeout=2))
        up.reconfigure(transport=good, device_id="d1")
        wait_for(lambda: outbox.waiting() == 0)                    # the backoff was cut short
    finally:
        up.stop(timeout=5)
    assert dead.closed and dead.threads == {"uploader"} and good.threads == {"uploader"}
    assert [e["id"] for e in hall.events("d1")] == [e["id"] for e in events]
    assert up.status.online is True and up.status.last_error == "" and up.status.backlog == 0


def test_dead_letters_are_retried_by_the_uploader_not_by_the_caller(hall, outbox):
    fill(outbox, 1)
    bad = outbox.append(rating(9, level="excellent"))
    up = make_uploader(outbox, hall.url, heartbeat_s=0, retain_days=0)
    assert up.drain() and outbox.count("rejected") == 1
    calls = []
    real = outbox.retry_rejected

    def retry_rejected():
        calls.append(threading.current_thread().name)
        return real()

    outbox.retry_rejected = retry_rejected
    up.start()
    try:
        retried = up.retry_rejected()
        assert retried.result(timeout=10) == 1
        wait_for(lambda: outbox.count("rejected") == 1 and outbox.waiting() == 0)   # refused again
    finally:
        up.stop(timeout=5)
    assert calls == ["uploader"]
    assert [e["id"] for e in outbox.events("rejected")] == [bad["id"]]


def test_the_uplink_check_runs_on_the_uploaders_thread(hall, outbox):
    up = make_uploader(outbox, hall.url, heartbeat_s=0, retain_days=0)
    assert up.check_uplink(timeout=5)["error"] == "uplink_off"   # not started: no key
    up.start()
    try:
        result = up.check_uplink(timeout=10)
    finally:
        up.stop(timeout=5)
    assert result["ok"] is True and result["verified"] is True and result["status"] == 200
    assert result["server"] == hall.url and result["hall_time"]
    assert hall.heartbeats["d1"]["backlog"] == 0
    assert KEY not in str(result)


def test_the_uplink_check_says_when_the_answer_does_not_verify(hall, outbox):
    hall.inject("rogue", path=wire.heartbeat_path("d1"))
    up = make_uploader(outbox, hall.url, heartbeat_s=0, retain_days=0)
    up.start()
    try:
        result = up.check_uplink(timeout=10)
    finally:
        up.stop(timeout=5)
    assert result["ok"] is False and result["verified"] is False and result["error"] == "unauthenticated_answer"
    assert "captive portal" in result["message"] and "d1" not in hall.heartbeats


def test_the_heartbeat_path_is_the_contracts(hall, outbox):
    up = make_uploader(outbox, hall.url, heartbeat_s=300, retain_days=0)
    assert up.upkeep.heartbeat()
    assert [p for _, p, _ in hall.requests_log] == [wire.heartbeat_path("d1")]
