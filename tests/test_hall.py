"""Tests for the stand-in hall server (``hall``), over real HTTP on a loopback port.

Events are built with the device's own ``seal()`` while the server checks
hashes with its independent implementation, so these tests also prove that
the two agree on the canonical form.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from device.queue import wire
from device.records import GENESIS_HASH, seal
from hall import HallServer, make_self_signed_cert
from hall.auth import load_keys_file, sign_request

pytestmark = pytest.mark.timeout(30)

DEVICE = "WE-0001"
KEY = "k3y-for-tests-only"
EVALUATIONS = "/api/v1/evaluations"
SATISFACTION = {"very_satisfied": 5, "satisfied": 4, "basically_satisfied": 3,
                "dissatisfied": 2, "very_dissatisfied": 1}
ASSIGNMENT = {
    "window": {"no": "A01", "name": "综合受理窗口"},
    "staff": {"no": "1001", "name": "张三", "dept": "政务服务中心"},
    "qr_url": "https://example.org/rate/A01",
    "reasons": [{"level": "dissatisfied", "code": "401", "text": "等候时间长"}],
    "reasons_version": "v1",
}


def call(server, method, path, payload=None, *, device=DEVICE, key=KEY, raw=None,
         headers=None, created=None, nonce=None, signed=True, **kwargs):
    """Send one request signed as a device signs (RFC 9421); ``raw`` bytes bypass JSON encoding.

    The answer carries ``.request``'s signing as ``.signed`` for :func:`verified`.
    """
    body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    nonce = nonce or os.urandom(16).hex()
    signing = sign_request(key, device, method, server.url + path, body, created, nonce) if signed else {}
    all_headers = {"Content-Type": "application/json", **signing, **(headers or {})}
    kwargs.setdefault("timeout", 5)
    answer = requests.request(method, server.url + path, data=body, headers=all_headers, **kwargs)
    answer.signed = wire.SignedRequest(signing, nonce, 0)  # type: ignore[attr-defined]
    return answer


def verified(answer, key=KEY):
    """Whether the answer is signed as the hall's answer to the request that got it."""
    return wire.verify_answer(key, answer.signed, answer.status_code, list(answer.raw.headers.items()),
                              answer.content).ok


def make_chain(count, device=DEVICE, start_seq=1, prev=GENESIS_HASH, day="2024-05-03",
               levels=("satisfied",), window_no="A01"):
    """``count`` sealed rating events, cycling through ``levels``."""
    events = []
    for i in range(count):
        level = levels[i % len(levels)]
        fields = {
            "id": str(uuid.uuid4()), "type": "rating", "device_id": device,
            "window_no": window_no, "staff_no": "1001", "staff_name": "张三",
            "level": level, "satisfaction": SATISFACTION[level], "channel": "5",
            "assess_number": 1, "suspect": False,
            "occurred_at": f"{day}T09:{i % 60:02d}:00+08:00", "clock_synced": True,
            "boot_id": "boot-1", "mono_ms": 1000 * i,
        }
        event = seal(fields, start_seq + i, prev)
        prev = event["hash"]
        events.append(event)
    return events


def batch(events, device=DEVICE):
    return {"device_id": device, "sent_at": "2024-05-03T10:00:00+08:00", "events": events}


def post(server, events, device=DEVICE, **kwargs):
    return call(server, "POST", EVALUATIONS, batch(events, device), device=device, **kwargs)


@pytest.fixture
def server(tmp_path):
    with HallServer(str(tmp_path / "hall.db"), {DEVICE: KEY}, assignment=ASSIGNMENT) as srv:
        yield srv


# -- authentication --------------------------------------------------------

def test_bad_signature_unknown_device_and_missing_headers_get_401(server):
    events = make_chain(1)
    wrong = post(server, events, key="wrong")
    assert wrong.status_code == 401 and wrong.json()["error"] == "bad_signature"
    assert not verified(wrong) and not verified(wrong, key="wrong")  # not verified: never signed
    stranger = post(server, events, device="WE-9999")
    assert stranger.status_code == 401 and stranger.json()["error"] == "unknown_device"
    assert not verified(stranger)                                 # no key to sign with
    answer = requests.post(server.url + EVALUATIONS, data=json.dumps(batch(events)), timeout=5)
    assert answer.status_code == 401 and answer.json()["error"] == "unsigned_request"
    assert server.events() == []


def test_stale_and_replayed_requests_get_a_signed_401(tmp_path):
    offset = [0.0]
    with HallServer(str(tmp_path / "h.db"), {DEVICE: KEY}, clock=lambda: time.time() + offset[0],
                    capture=True) as srv:
        events = make_chain(1)
        first = post(srv, events)
        assert first.status_code == 200 and verified(first)
        (captured,) = srv.captured
        replay = requests.post(srv.url + captured.target, data=captured.body, headers=dict(captured.headers),
                               timeout=5)
        assert replay.status_code == 401 and replay.json()["error"] == "replayed_request"
        replay.signed = first.signed  # type: ignore[attr-defined]
        assert verified(replay)                                   # the device can tell it from a portal
        offset[0] = 301.0                                         # the hall's clock moves on
        stale = post(srv, make_chain(1, start_seq=2, prev=events[0]["hash"]), created=time.time())
        assert stale.status_code == 401 and stale.json()["error"] == "stale_request" and verified(stale)
        hall_time = wire.verify_answer(KEY, stale.signed, 401, list(stale.raw.headers.items()),
                                       stale.content).hall_time
        assert hall_time is not None and hall_time >= int(time.time() + 300)
        future = post(srv, make_chain(1, start_seq=2, prev=events[0]["hash"]), created=time.time() + 700)
        assert future.status_code == 401 and future.json()["error"] == "stale_request"
        assert srv.events() == events


def test_every_answer_to_a_verified_request_is_signed_for_it_and_no_other(server):
    server.max_body = 4000
    answers = {
        200: post(server, make_chain(1)),
        304: call(server, "GET", f"/api/v1/devices/{DEVICE}/assignment",
                  headers={"If-None-Match": call(server, "GET", f"/api/v1/devices/{DEVICE}/assignment")
                           .headers["ETag"]}),
        400: call(server, "POST", EVALUATIONS, raw=b"not json"),
        403: call(server, "GET", "/api/v1/devices/WE-0002/assignment"),
    }
    server.inject("status", status=503, retry_after=7)
    answers[503] = post(server, make_chain(1))
    for status, answer in answers.items():
        assert answer.status_code == status, (status, answer.text)
        assert verified(answer), status
        assert answer.headers["Request-Nonce"] == answer.signed.nonce
        assert answer.headers["Content-Digest"].startswith("sha-256=:")
        assert 'keyid="hall"' in answer.headers["Signature-Input"]
    # Answered before anything was verified: unsigned.
    unverified = {
        404: call(server, "GET", "/api/v1/nothing"),
        405: call(server, "GET", EVALUATIONS),
        413: post(server, make_chain(30)),
    }
    for status, answer in unverified.items():
        assert answer.status_code == status, (status, answer.text)
        assert not verified(answer) and "Signature" not in answer.headers, status


def test_default_key_serves_any_device_but_only_for_itself(tmp_path):
    with HallServer(str(tmp_path / "h.db"), default_key="shared") as srv:
        events = make_chain(1, device="WE-0042")
        answer = post(srv, events, device="WE-0042", key="shared")
        assert answer.status_code == 200
        assert answer.json()["accepted"] == [events[0]["id"]]
        # Signed as WE-0043: a body speaking for WE-0042 is refused, and so are WE-0042's events.
        impostor = call(srv, "POST", EVALUATIONS, batch(make_chain(1, device="WE-0042"), device="WE-0042"),
                        device="WE-0043", key="shared")
        assert impostor.status_code == 403
        own_body = call(srv, "POST", EVALUATIONS, batch(make_chain(1, device="WE-0042"), device="WE-0043"),
                        device="WE-0043", key="shared").json()
        assert own_body["accepted"] == [] and "device_id" in own_body["rejected"][0]["error"]
        assert call(srv, "GET", "/api/v1/devices/WE-0042/assignment", device="WE-0043",
                    key="shared").status_code == 403


def test_a_keys_file_holds_one_key_per_device_and_is_read_again_when_it_changes(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[devices]\n"{DEVICE}" = "{KEY}"\n')
    with HallServer(str(tmp_path / "h.db"), keys_file=str(keys)) as srv:
        assert post(srv, make_chain(1)).status_code == 200
        other = make_chain(1, device="WE-0002")
        assert post(srv, other, device="WE-0002", key=KEY).status_code == 401      # not in the file
        keys.write_text(f'[devices]\n"{DEVICE}" = "{KEY}"\n"WE-0002" = "k2-only"\n')
        os.utime(keys, (time.time() + 5, time.time() + 5))
        assert post(srv, other, device="WE-0002", key=KEY).status_code == 401      # another's key
        assert post(srv, other, device="WE-0002", key="k2-only").status_code == 200


def test_auth_headers_are_read_whatever_their_case(server):
    events = make_chain(1)
    body = json.dumps(batch(events)).encode()
    signing = sign_request(KEY, DEVICE, "POST", server.url + EVALUATIONS, body)
    answer = requests.post(server.url + EVALUATIONS, data=body, timeout=5,
                           headers={k.lower(): v for k, v in signing.items()})
    assert answer.status_code == 200
    assert answer.json()["accepted"] == [events[0]["id"]]


def test_body_for_another_device_is_403(server):
    events = make_chain(1, device="WE-0002")
    answer = call(server, "POST", EVALUATIONS, batch(events, device="WE-0002"))
    assert answer.status_code == 403


def test_logs_never_show_key_or_signature(server, caplog):
    caplog.set_level("DEBUG", logger="hall")
    events = make_chain(1)
    good = post(server, events)
    post(server, events, key="wrong")
    assert KEY not in caplog.text
    signature = good.request.headers["Signature"].split("=:", 1)[1].rstrip(":")
    assert signature not in caplog.text
    assert f"POST {EVALUATIONS} 200 device={DEVICE}" in caplog.text


# -- evaluations -----------------------------------------------------------

def test_valid_events_accepted_then_duplicate_and_stored_once(server):
    events = make_chain(5)
    ids = [e["id"] for e in events]
    head = {"seq": 5, "hash": events[-1]["hash"]}
    first = post(server, events)
    assert first.status_code == 200
    assert first.json() == {"accepted": ids, "duplicate": [], "rejected": [], "head": head}
    again = post(server, events)
    assert again.json() == {"accepted": [], "duplicate": ids, "rejected": [], "head": head}
    assert server.events() == events
    assert server.integrity() == {DEVICE: []} and server.flags() == []


def test_the_head_is_the_highest_gapless_seq_held(server):
    chain = make_chain(6)
    assert post(server, chain[:2] + chain[3:5]).json()["head"] == {"seq": 2, "hash": chain[1]["hash"]}
    assert post(server, [chain[2]]).json()["head"] == {"seq": 5, "hash": chain[4]["hash"]}
    assert server.head(DEVICE) == {"seq": 5, "hash": chain[4]["hash"]}
    assert server.head("WE-0002") == {"seq": 0, "hash": GENESIS_HASH}
    assert post(server, [chain[5]]).json()["head"]["seq"] == 6


@pytest.mark.parametrize("seq", [0, -1, 2**63, 2**70, 1.5, True, "1"])
def test_a_seq_out_of_bounds_is_rejected_never_a_500(server, seq):
    event = dict(make_chain(1)[0], seq=seq)
    answer = post(server, [event])
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"][0]["error"].startswith("seq must be an integer from 1 to")
    assert server.events() == []


def test_chain_breaks_are_flagged_as_they_arrive_stored_never_dropped(server):
    chain = make_chain(4)
    broken = seal({k: v for k, v in chain[2].items() if k not in ("hash", "prev_hash", "seq")}, 3, "f" * 64)
    first = post(server, [chain[0], broken]).json()
    assert first["accepted"] == [chain[0]["id"], broken["id"]] and "flagged" not in first   # seq 2 not yet held
    second = post(server, [chain[1]]).json()          # seq 2 arrives: seq 3 does not link to it
    assert second["flagged"] == [{"id": broken["id"], "seq": 3, "problem": "prev_hash",
                                  "detail": "prev_hash does not match the hash of seq 2"}]
    reused = make_chain(1, start_seq=2, prev=chain[0]["hash"])[0]
    edited = dict(chain[3], level="very_satisfied", satisfaction=5)
    third = post(server, [reused, edited]).json()
    assert third["rejected"] == [{"id": reused["id"], "error": "seq_taken"}]       # never two under one seq
    assert {(f["seq"], f["problem"]) for f in third["flagged"]} == {(4, "hash"), (4, "prev_hash")}
    assert len(server.events()) == 4                  # every one stored but the one whose seq was taken
    assert {(f["seq"], f["problem"]) for f in server.flags(DEVICE)} == {
        (3, "prev_hash"), (2, "seq_taken"), (4, "hash"), (4, "prev_hash")}
    assert server.flagged_events(DEVICE) == {broken["id"]: "prev_hash", edited["id"]: "hash,prev_hash"}


def test_clock_events_date_every_event_of_their_boot_whichever_arrives_first(server):
    unsynced = [seal({"id": str(uuid.uuid4()), "type": "rating", "device_id": DEVICE, "window_no": "A01",
                      "level": "satisfied", "satisfaction": 4, "channel": "5", "assess_number": 1,
                      "suspect": False, "occurred_at": "1970-01-01T00:00:10+00:00", "clock_synced": False,
                      "boot_id": "b1", "mono_ms": 10_000 + i}, i + 1, GENESIS_HASH) for i in range(2)]
    unsynced[1] = seal({k: v for k, v in unsynced[1].items() if k not in ("hash", "prev_hash", "seq")}, 2,
                       unsynced[0]["hash"])
    clock = seal({"id": str(uuid.uuid4()), "type": "clock", "device_id": DEVICE, "window_no": "A01",
                  "occurred_at": "2024-05-03T09:00:00.000+08:00", "clock_synced": True, "boot_id": "b1",
                  "mono_ms": 70_000, "source": "hall", "synced_at": "2024-05-03T09:00:00.000+08:00"},
                 3, unsynced[1]["hash"])
    post(server, [unsynced[0]])
    assert server.exact_times()[unsynced[0]["id"]] is None           # undated until its clock event
    post(server, [clock, unsynced[1]])
    times = server.exact_times()
    # 60 s before 09:00 China time by the monotonic clock, whatever the device's clock said.
    assert times[unsynced[0]["id"]] == datetime.datetime(2024, 5, 3, 0, 59, 0, tzinfo=datetime.UTC)
    assert times[unsynced[1]["id"]] == datetime.datetime(2024, 5, 3, 0, 59, 0, 1000, tzinfo=datetime.UTC)
    assert times[clock["id"]] == datetime.datetime(2024, 5, 3, 1, 0, tzinfo=datetime.UTC)
    bad_clock = dict(clock, id=str(uuid.uuid4()), seq=4, source="gps")
    assert "source" in post(server, [bad_clock]).json()["rejected"][0]["error"]


def test_concurrent_resends_store_each_event_once(server):
    events = make_chain(20)
    results = []

    def send():
        results.append(post(server, events).json())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [i for r in results for i in r["accepted"]]
    assert sorted(accepted) == sorted(e["id"] for e in events)
    assert len(server.events()) == 20


def test_invalid_events_rejected_with_reason_others_accepted(server):
    events = make_chain(4)
    bad_level = dict(events[1], satisfaction=5, level="dissatisfied")
    other_device = dict(events[2], device_id="WE-0002")
    bad_time = dict(events[3], occurred_at="yesterday")
    answer = post(server, [events[0], bad_level, other_device, bad_time]).json()
    assert answer["accepted"] == [events[0]["id"]]
    rejected = {r["id"]: r["error"] for r in answer["rejected"]}
    assert "satisfaction" in rejected[events[1]["id"]]
    assert "device_id" in rejected[events[2]["id"]]
    assert "occurred_at" in rejected[events[3]["id"]]
    assert [e["id"] for e in server.events()] == [events[0]["id"]]


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[1, 2]",
    json.dumps({"device_id": DEVICE, "sent_at": "x", "events": "nope"}).encode(),
    json.dumps({"device_id": DEVICE, "sent_at": "x", "events": [{"seq": 1}]}).encode(),
    b"\xff\xfe",
])
def test_malformed_body_is_400(server, raw):
    answer = call(server, "POST", EVALUATIONS, raw=raw)
    assert answer.status_code == 400
    assert "error" in answer.json()


def test_oversized_body_is_413_and_smaller_batch_passes(server):
    server.max_body = 2000
    events = make_chain(10)
    answer = post(server, events)
    assert answer.status_code == 413
    assert "error" in answer.json()
    assert post(server, events[:1]).status_code == 200


def test_handler_exception_is_500_and_server_survives(server, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(server, "receive_heartbeat", broken)
    answer = call(server, "POST", f"/api/v1/devices/{DEVICE}/heartbeat", {"uptime_s": 1})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error"}
    assert post(server, make_chain(1)).status_code == 200


def test_unknown_path_404_and_wrong_method_405(server):
    assert call(server, "GET", "/api/v1/nothing").status_code == 404
    assert call(server, "GET", EVALUATIONS).status_code == 405


# -- integrity ---------------------------------------------------------------

def test_integrity_reports_gap_and_broken_chain(server):
    chain = make_chain(6)
    edited = dict(chain[2], level="very_satisfied", satisfaction=5)  # hash left stale
    reused = make_chain(1, start_seq=2, prev=chain[0]["hash"])[0]
    post(server, [chain[0], chain[1], edited, chain[3], chain[5], reused])
    problems = server.integrity()[DEVICE]
    kinds = {(p["seq"], p["problem"]) for p in problems}
    assert (3, "hash") in kinds
    assert (6, "gap") in kinds
    assert (2, "duplicate_seq") not in kinds          # refused as seq_taken, never stored
    assert all(p["detail"] for p in problems)

    other = make_chain(3, device="WE-0002")
    other[1] = seal({k: v for k, v in other[1].items() if k not in ("hash", "prev_hash", "seq")},
                    2, "f" * 64)
    server.set_key("WE-0002", KEY)
    post(server, other, device="WE-0002")
    report = server.integrity("WE-0002")
    assert {(p["seq"], p["problem"]) for p in report["WE-0002"]} == {(2, "prev_hash"),
                                                                      (3, "prev_hash")}


# -- assignment, session, heartbeat --------------------------------------------

def test_assignment_etag_and_304(server):
    path = f"/api/v1/devices/{DEVICE}/assignment"
    first = call(server, "GET", path)
    assert first.status_code == 200
    assert first.json() == ASSIGNMENT
    etag = first.headers["ETag"]
    assert call(server, "GET", path, headers={"If-None-Match": etag}).status_code == 304
    server.set_assignment(DEVICE, dict(ASSIGNMENT, qr_url="https://example.org/new"))
    changed = call(server, "GET", path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.json()["qr_url"] == "https://example.org/new"
    server.set_assignment(DEVICE, None)
    server.set_assignment(None, None)
    assert call(server, "GET", path).status_code == 404
    assert call(server, "GET", "/api/v1/devices/WE-0002/assignment").status_code in (401, 403)


def test_session_long_poll_gives_the_open_session_then_holds_until_the_hall_closes_it(server):
    path = f"/api/v1/devices/{DEVICE}/session?wait=10"
    opened = {}
    timer = threading.Timer(0.2, lambda: opened.update(server.open_session(
        DEVICE, ticket="A012", project_no="P-1", task_code="T1", task_name="营业执照",
        qr_url="https://example.org/s/1")))
    timer.start()
    started = time.monotonic()
    answer = call(server, "GET", path)
    timer.join()
    assert time.monotonic() - started < 5
    assert answer.json() == {"session": opened}
    assert set(opened) == {"session_id", "ticket", "project_no", "task_code", "task_name",
                           "qr_url"}
    # Still open and already given: no news, so the poll is held, not answered in a busy loop ...
    started = time.monotonic()
    held = call(server, "GET", f"/api/v1/devices/{DEVICE}/session?wait=0.3")
    assert held.json() == {"session": opened} and 0.25 <= time.monotonic() - started < 3
    # ... until the hall closes it: that is news, answered at once.
    closer = threading.Timer(0.2, lambda: server.close_session(DEVICE, opened["session_id"]))
    closer.start()
    started = time.monotonic()
    closed = call(server, "GET", path)
    closer.join()
    assert closed.json() == {"session": None} and time.monotonic() - started < 3
    assert server.close_session(DEVICE) is False
    started = time.monotonic()
    again = call(server, "GET", f"/api/v1/devices/{DEVICE}/session?wait=0.3")
    assert again.json() == {"session": None}
    assert 0.25 <= time.monotonic() - started < 3


def test_a_session_nobody_closes_is_given_up_after_its_max_age(server):
    server.session_max_age_s = 0.2
    server.open_session(DEVICE, ticket="A013")
    assert call(server, "GET", f"/api/v1/devices/{DEVICE}/session?wait=0").json()["session"]["ticket"] == "A013"
    time.sleep(0.3)
    assert call(server, "GET", f"/api/v1/devices/{DEVICE}/session?wait=0.1").json() == {"session": None}


def test_stop_wakes_a_long_poll(tmp_path):
    srv = HallServer(str(tmp_path / "h.db"), {DEVICE: KEY}).start()
    results = []

    def poll():
        # Either answer is fine: null if the handler wins the race with the
        # connection cut, a connection error otherwise; hanging is not.
        try:
            results.append(call(srv, "GET", f"/api/v1/devices/{DEVICE}/session?wait=30"))
        except requests.RequestException as exc:   # refused, reset, or cut mid-answer
            results.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    srv.close()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert not thread.is_alive()
    assert len(results) == 1
    if isinstance(results[0], requests.Response):
        assert results[0].json() == {"session": None}


def test_heartbeat_is_stored(server):
    beat = {"firmware": "0.1", "uptime_s": 5, "backlog": 0, "faults": []}
    answer = call(server, "POST", f"/api/v1/devices/{DEVICE}/heartbeat", beat)
    assert answer.json() == {"ok": True}
    assert server.heartbeats == {DEVICE: beat}


# -- faults --------------------------------------------------------------------

def test_status_fault_answers_without_storing_then_clears(server):
    server.inject("status", count=1, status=503, retry_after=7)
    server.inject("status", count=1, status=503, retry_after=7, retry_after_header="retry-after")
    events = make_chain(1)
    for _ in range(2):
        answer = post(server, events)
        assert answer.status_code == 503 and verified(answer)
        assert answer.headers["Retry-After"] == "7"
    assert server.events() == []
    assert post(server, events).json()["accepted"] == [events[0]["id"]]
    assert [s for _, _, s in server.requests_log] == [503, 503, 200]


def test_latency_fault_delays_and_can_time_out_the_client(server):
    server.inject("latency", seconds=1.0)
    events = make_chain(1)
    with pytest.raises(requests.Timeout):
        post(server, events, timeout=0.2)
    server.inject("latency", seconds=0.3)
    started = time.monotonic()
    assert post(server, events).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_reset_after_commit_stores_then_retry_is_duplicate(server):
    server.inject("reset_after_commit")
    events = make_chain(3)
    with pytest.raises(requests.ConnectionError):
        post(server, events)
    assert server.events() == events
    assert post(server, events).json()["duplicate"] == [e["id"] for e in events]
    assert server.requests_log[0] == ("POST", EVALUATIONS, 0)


def test_reset_fault_stores_nothing(server):
    server.inject("reset")
    with pytest.raises(requests.ConnectionError):
        post(server, make_chain(1))
    assert server.events() == []


def test_malformed_fault_stores_and_answers_garbage(server):
    server.inject("malformed")
    server.inject("malformed", body={"accepted": "everything"})
    events = make_chain(2)
    first = post(server, events[:1])
    assert first.status_code == 200
    with pytest.raises(ValueError):
        first.json()
    assert post(server, events[1:]).json() == {"accepted": "everything"}
    assert server.events() == events


def test_fault_with_path_targets_another_endpoint_and_clear(server):
    path = f"/api/v1/devices/{DEVICE}/heartbeat"
    server.inject("status", status=500, path=path)
    assert post(server, make_chain(1)).status_code == 200
    assert call(server, "POST", path, {"uptime_s": 1}).status_code == 500
    server.inject("status", count=5, status=429)
    server.clear_faults()
    assert post(server, make_chain(1, start_seq=2)).status_code == 200
    with pytest.raises(ValueError):
        server.inject("refuse")


def test_restart_keeps_url_and_events(tmp_path):
    with HallServer(str(tmp_path / "h.db"), {DEVICE: KEY}) as srv:
        events = make_chain(2)
        post(srv, events[:1])
        url = srv.url
        srv.stop()
        with pytest.raises(requests.ConnectionError):
            post(srv, events[1:], timeout=1)
        srv.start()
        assert srv.url == url
        assert post(srv, events).json()["duplicate"] == [events[0]["id"]]
        assert srv.events() == events


# -- TLS -----------------------------------------------------------------------

def test_tls_with_self_signed_certificate(tmp_path):
    try:
        cert, key = make_self_signed_cert(str(tmp_path))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with HallServer(str(tmp_path / "h.db"), {DEVICE: KEY}, tls=(cert, key)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        events = make_chain(1)
        assert post(srv, events, verify=cert).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            post(srv, events, verify=True)
        # The failed handshake did not hurt the server.
        assert post(srv, events, verify=cert).json()["duplicate"] == [events[0]["id"]]


# -- report: tests/test_hall_report.py (the report's own module and tests) -------------

# -- command line ----------------------------------------------------------------

def _repo_env():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_cli_serves_and_stops_on_sigterm(tmp_path):
    db = str(tmp_path / "cli.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hall", "--port", "0", "--db", db, "--device-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_repo_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert line.startswith("hall server listening on http://127.0.0.1:")
        url = line.split()[-1]
        events = make_chain(2)
        body = json.dumps(batch(events)).encode()
        answer = requests.post(url + EVALUATIONS, data=body, timeout=5,
                               headers=sign_request(KEY, DEVICE, "POST", url + EVALUATIONS, body))
        assert answer.json()["accepted"] == [e["id"] for e in events]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert KEY not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    report = subprocess.run(
        [sys.executable, "-m", "hall", "--db", db, "--report", "2024-05"],
        capture_output=True, text=True, env=_repo_env(), timeout=20,
    )
    assert report.returncode == 0
    assert "好评率 100.0% (2/2)" in report.stdout


def test_keys_file(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'default_key = "fallback"\n[devices]\n"{DEVICE}" = "{KEY}"\n')
    assert load_keys_file(str(keys)) == ({DEVICE: KEY}, "fallback")
    keys.write_text('[devices]\n"x" = 1\n')
    with pytest.raises(ValueError):
        load_keys_file(str(keys))


def test_cli_help_names_the_package():
    answer = subprocess.run([sys.executable, "-m", "hall", "--help"], capture_output=True, text=True,
                            env=_repo_env(), timeout=20)
    assert answer.returncode == 0
    assert "python -m hall" in answer.stdout and "--report" in answer.stdout


def test_the_package_imports_nothing_from_device():
    # The hall is the device's independent judge: shared code would make the
    # contract checks agree with the device by construction.
    code = ("import sys, hall, hall.__main__; "
            "print(sorted(m for m in sys.modules if m == 'device' or m.startswith('device.')))")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_repo_env(), timeout=20)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[]"
