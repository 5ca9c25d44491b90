"""Tests for the stand-in hall server (``sim.hall``), over real HTTP on a loopback port.

Events are built with the device's own ``seal()`` while the server checks
hashes with its independent implementation, so these tests also prove that
the two agree on the canonical form.
"""

import datetime
import hashlib
import hmac
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

from device.records import GENESIS_HASH, seal
from sim.hall import HallServer, add_working_days, make_self_signed_cert
from sim.hall.__main__ import load_keys_file

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


def signature(body, key=KEY):
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def call(server, method, path, payload=None, *, device=DEVICE, key=KEY, raw=None,
         headers=None, **kwargs):
    """Send one signed request; ``raw`` bytes bypass JSON encoding."""
    body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    all_headers = {"X-Device-Id": device, "X-Signature": signature(body, key),
                   "Content-Type": "application/json", **(headers or {})}
    kwargs.setdefault("timeout", 5)
    return requests.request(method, server.url + path, data=body, headers=all_headers, **kwargs)


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
    assert post(server, events, key="wrong").status_code == 401
    assert post(server, events, device="WE-9999").status_code == 401
    answer = requests.post(server.url + EVALUATIONS, data=json.dumps(batch(events)), timeout=5)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert server.events() == []


def test_default_key_serves_any_device(tmp_path):
    with HallServer(str(tmp_path / "h.db"), default_key="shared") as srv:
        events = make_chain(1, device="WE-0042")
        answer = post(srv, events, device="WE-0042", key="shared")
        assert answer.status_code == 200
        assert answer.json()["accepted"] == [events[0]["id"]]


def test_auth_headers_are_read_whatever_their_case(server):
    events = make_chain(1)
    body = json.dumps(batch(events)).encode()
    answer = requests.post(server.url + EVALUATIONS, data=body, timeout=5,
                           headers={"x-device-id": DEVICE, "x-signature": signature(body).upper()})
    assert answer.status_code == 200
    assert answer.json()["accepted"] == [events[0]["id"]]


def test_body_for_another_device_is_403(server):
    events = make_chain(1, device="WE-0002")
    answer = call(server, "POST", EVALUATIONS, batch(events, device="WE-0002"))
    assert answer.status_code == 403


def test_logs_never_show_key_or_signature(server, caplog):
    caplog.set_level("DEBUG", logger="sim.hall")
    events = make_chain(1)
    body = json.dumps(batch(events)).encode()
    post(server, events)
    post(server, events, key="wrong")
    assert KEY not in caplog.text
    assert signature(body) not in caplog.text
    assert f"POST {EVALUATIONS} 200 device={DEVICE}" in caplog.text


# -- evaluations -----------------------------------------------------------

def test_valid_events_accepted_then_duplicate_and_stored_once(server):
    events = make_chain(5)
    ids = [e["id"] for e in events]
    first = post(server, events)
    assert first.status_code == 200
    assert first.json() == {"accepted": ids, "duplicate": [], "rejected": []}
    again = post(server, events)
    assert again.json() == {"accepted": [], "duplicate": ids, "rejected": []}
    assert server.events() == events
    assert server.integrity() == {DEVICE: []}


def test_corrected_at_is_stored_and_outside_the_hash(server):
    events = make_chain(2)
    events[1] = dict(events[1], corrected_at="2024-05-03T09:30:00+08:00")
    assert post(server, events).json()["accepted"] == [e["id"] for e in events]
    assert server.events()[1]["corrected_at"] == "2024-05-03T09:30:00+08:00"
    assert server.integrity() == {DEVICE: []}


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

    monkeypatch.setattr(server, "_receive_heartbeat", broken)
    answer = call(server, "POST", f"/api/v1/devices/{DEVICE}/heartbeat", {"uptime_s": 1})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error"}
    assert post(server, make_chain(1)).status_code == 200


def test_unknown_path_404_and_wrong_method_405(server):
    assert call(server, "GET", "/api/v1/nothing").status_code == 404
    assert call(server, "GET", EVALUATIONS).status_code == 405


# -- integrity ---------------------------------------------------------------

def test_integrity_reports_gap_duplicate_seq_and_broken_chain(server):
    chain = make_chain(6)
    edited = dict(chain[2], level="very_satisfied", satisfaction=5)  # hash left stale
    reused = make_chain(1, start_seq=2, prev=chain[0]["hash"])[0]
    post(server, [chain[0], chain[1], edited, chain[3], chain[5], reused])
    problems = server.integrity()[DEVICE]
    kinds = {(p["seq"], p["problem"]) for p in problems}
    assert (3, "hash") in kinds
    assert (6, "gap") in kinds
    assert (2, "duplicate_seq") in kinds
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


def test_session_long_poll_returns_opened_session_once(server):
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
    started = time.monotonic()
    again = call(server, "GET", f"/api/v1/devices/{DEVICE}/session?wait=0.3")
    assert again.json() == {"session": None}
    assert 0.25 <= time.monotonic() - started < 3


def test_stop_wakes_a_long_poll(tmp_path):
    srv = HallServer(str(tmp_path / "h.db"), {DEVICE: KEY}).start()
    results = []

    def poll():
        # Either answer is fine: null if the handler wins the race with the
        # connection cut, a connection error otherwise; hanging is not.
        try:
            results.append(call(srv, "GET", f"/api/v1/devices/{DEVICE}/session?wait=30"))
        except requests.ConnectionError as exc:
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
    server.inject("status", count=2, status=503, retry_after=7)
    events = make_chain(1)
    for _ in range(2):
        answer = post(server, events)
        assert answer.status_code == 503
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


# -- report ----------------------------------------------------------------------

def test_working_days_skip_weekends():
    friday = datetime.date(2024, 5, 3)
    assert add_working_days(friday, 10) == datetime.date(2024, 5, 17)
    assert add_working_days(datetime.date(2024, 5, 4), 1) == datetime.date(2024, 5, 6)


def test_report_counts_levels_rate_and_open_bad_ratings(server):
    levels = ("very_satisfied", "satisfied", "satisfied", "basically_satisfied", "dissatisfied")
    may = make_chain(5, day="2024-05-03", levels=levels)
    late = make_chain(1, start_seq=6, prev=may[-1]["hash"], day="2024-05-31",
                      levels=("very_dissatisfied",))
    june = make_chain(1, start_seq=7, prev=late[0]["hash"], day="2024-06-03",
                      levels=("dissatisfied",))
    detail = seal({"id": str(uuid.uuid4()), "type": "detail", "device_id": DEVICE,
                   "window_no": "A01", "rating_id": may[4]["id"], "reason_codes": ["401"],
                   "reasons_version": "v1", "occurred_at": "2024-05-03T09:10:00+08:00"},
                  8, june[0]["hash"])
    post(server, may + late + june + [detail])

    data = server.report_data("2024-05", today=datetime.date(2024, 5, 20))
    window = data["windows"]["A01"]
    assert window["counts"] == {"very_satisfied": 1, "satisfied": 2, "basically_satisfied": 1,
                                "dissatisfied": 1, "very_dissatisfied": 1}
    assert window["good_rate"] == pytest.approx(3 / 6)
    open_bad = window["open_bad"]
    assert [(b["deadline"], b["overdue"]) for b in open_bad] == [
        (datetime.date(2024, 5, 17), True), (datetime.date(2024, 6, 14), False)]
    assert open_bad[0]["reason_codes"] == ["401"]

    text = server.report("2024-05", today=datetime.date(2024, 5, 20))
    assert "窗口 A01" in text
    assert "好评率 50.0% (3/6)" in text
    assert "整改期限 2024-05-17" in text and "整改期限 2024-06-14" in text
    assert "2024-06-03" not in text

    server.resolve(may[4]["id"], note="已整改")
    assert "2024-05-17" not in server.report("2024-05")
    with pytest.raises(ValueError):
        server.report("May")


# -- command line ----------------------------------------------------------------

def _repo_env():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_cli_serves_and_stops_on_sigterm(tmp_path):
    db = str(tmp_path / "cli.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.hall", "--port", "0", "--db", db, "--device-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_repo_env(),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("hall server listening on http://127.0.0.1:")
        url = line.split()[-1]
        events = make_chain(2)
        body = json.dumps(batch(events)).encode()
        answer = requests.post(url + EVALUATIONS, data=body, timeout=5,
                               headers={"X-Device-Id": DEVICE, "X-Signature": signature(body)})
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
        [sys.executable, "-m", "sim.hall", "--db", db, "--report", "2024-05"],
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
    answer = subprocess.run([sys.executable, "-m", "sim.hall", "--help"], capture_output=True, text=True,
                            env=_repo_env(), timeout=20)
    assert answer.returncode == 0
    assert "python -m sim.hall" in answer.stdout and "--report" in answer.stdout


def test_the_package_imports_nothing_from_device():
    # The hall is the device's independent judge: shared code would make the
    # contract checks agree with the device by construction.
    code = ("import sys, sim.hall, sim.hall.__main__; "
            "print(sorted(m for m in sys.modules if m == 'device' or m.startswith('device.')))")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_repo_env(), timeout=20)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[]"
