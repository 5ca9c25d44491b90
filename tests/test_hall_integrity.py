"""The hall's own checks, tried as someone with a motive would (issue 16, hall side).

Over real HTTP on loopback, with requests written byte by byte
(:mod:`hall_rig`): signature headers copied onto bogus requests get unsigned
answers; a verified stale request a signed 401; no seq is ever held twice;
the same id with other content is a flagged conflict; a request made for
another hall is refused; a replay across a restart is refused; one device's
flood leaves another answered; device ids outside the rule are refused
clearly; the worker pool and read deadlines are bounded.
"""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from hall_rig import EVALUATIONS, Signer, batch, chain, exchange, hall_signed, raw_request, send

from device.records import seal
from hall import HallServer, keys
from hall.auth import Refused
from hall.desk import HallDesk
from hall.handler import Capacity
from hall.limits import DurableNonces

pytestmark = pytest.mark.timeout(60)

ED = "WE-0001"
HM = "WE-0002"
SHARED = "shared-key-for-tests"


@pytest.fixture
def device():
    return Signer.ed25519(ED)


@pytest.fixture
def hall(tmp_path, device):
    with HallServer(tmp_path / "hall.db", {HM: SHARED}, public_keys={ED: device.public_key}) as srv:
        yield srv


def hall_key(hall):
    return keys.parse_public_key(hall.hall_public_key)


def test_signature_headers_copied_onto_bogus_requests_get_unsigned_answers(hall, device):
    events = chain(ED, 3)
    body = json.dumps(batch(ED, events)).encode()
    signing, nonce = device.sign("POST", hall.url + EVALUATIONS, body)
    headers = {"Content-Type": "application/json", **signing}
    authority = hall.url.removeprefix("http://")
    bogus = {
        "Content-Length -1": raw_request("POST", EVALUATIONS, headers, b"", authority, length="-1"),
        "200 MiB declared": raw_request("POST", EVALUATIONS, headers, b"", authority, length=str(200 << 20)),
        "two lengths": raw_request("POST", EVALUATIONS, {**headers, "Content-Length": "5"}, body, authority),
        "changed body": raw_request("POST", EVALUATIONS, headers, body.replace(b"satisfied", b"dissatisfie"),
                                    authority),
        "another path": raw_request("POST", f"/api/v1/devices/{ED}/heartbeat", headers, body, authority),
        "no such path": raw_request("POST", "/api/v1/other", headers, body, authority),
        "another method": raw_request("GET", EVALUATIONS, headers, body, authority),
        "chunked": raw_request("POST", EVALUATIONS, {**headers, "Transfer-Encoding": "chunked"}, b"0\r\n\r\n",
                               authority),
    }
    statuses = {}
    for name, raw in bogus.items():
        reply = exchange(hall.url, raw)
        statuses[name] = reply.status
        assert reply.status >= 400, name
        assert reply.header("Signature") == "" and reply.header("Request-Nonce") == "", name
        assert not hall_signed(reply, nonce, hall_key(hall)), name
    assert statuses == {"Content-Length -1": 400, "200 MiB declared": 413, "two lengths": 400, "changed body": 401,
                        "another path": 401, "no such path": 404, "another method": 405, "chunked": 411}
    assert hall.events() == []
    # None of them used up the device's nonce: the request itself is still taken, and signed.
    reply = exchange(hall.url, raw_request("POST", EVALUATIONS, headers, body, authority))
    assert reply.status == 200 and hall_signed(reply, nonce, hall_key(hall))
    assert reply.json()["accepted"] == [e["id"] for e in events]


def test_an_injected_refusal_is_signed_only_when_the_request_verified(hall, device):
    hall.inject("status", count=2, status=400, body={"error": "for a while"})
    events = chain(ED, 1)
    verified, nonce = send(hall.url, device, "POST", EVALUATIONS, batch(ED, events))
    assert verified.status == 400 and hall_signed(verified, nonce, hall_key(hall))
    forged, nonce = send(hall.url, Signer.ed25519(ED), "POST", EVALUATIONS, batch(ED, events))
    assert forged.status == 400 and forged.header("Signature") == ""
    assert hall.events() == []


def test_a_verified_stale_request_gets_a_signed_401_with_the_hall_time(hall, device):
    reply, nonce = send(hall.url, device, "POST", EVALUATIONS, batch(ED, chain(ED, 1)), created=time.time() - 3600)
    assert reply.status == 401 and reply.json()["error"] == "stale_request"
    assert hall_signed(reply, nonce, hall_key(hall))
    assert abs(int(reply.header("Signature-Input").split("created=")[1].split(";")[0]) - time.time()) < 5
    replay, _ = send(hall.url, device, "POST", EVALUATIONS, batch(ED, []), nonce=nonce)
    assert replay.status == 200                       # a stale request's nonce was never taken
    again, _ = send(hall.url, device, "POST", EVALUATIONS, batch(ED, []), nonce=nonce)
    assert again.status == 401 and again.json()["error"] == "replayed_request"
    assert hall_signed(again, nonce, hall_key(hall))


def test_no_seq_is_ever_held_twice_and_a_resealed_event_is_taken(hall, device, tmp_path):
    first = chain(ED, 3)
    assert send(hall.url, device, "POST", EVALUATIONS, batch(ED, first))[0].json()["head"]["seq"] == 3
    # A data folder restored from an older copy: new ratings reuse seqs 2 and 3.
    restored = chain(ED, 2, start_seq=2, prev=first[0]["hash"], level="very_dissatisfied")
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, restored))[0].json()
    assert answer["rejected"] == [{"id": e["id"], "error": "seq_taken"} for e in restored]
    assert answer["accepted"] == [] and answer["head"] == {"seq": 3, "hash": first[2]["hash"]}
    assert [e["seq"] for e in hall.events(ED)] == [1, 2, 3]
    # The device seals them again after the hall's head: same ids, new seqs.
    resealed, prev = [], first[2]["hash"]
    for i, event in enumerate(restored):
        fields = {k: v for k, v in event.items() if k not in ("seq", "prev_hash", "hash")}
        resealed.append(seal(fields, 4 + i, prev))
        prev = resealed[-1]["hash"]
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, resealed))[0].json()
    assert answer["accepted"] == [e["id"] for e in restored] and answer["head"]["seq"] == 5
    assert [e["seq"] for e in hall.events(ED)] == [1, 2, 3, 4, 5]
    assert hall.flagged_events(ED) == {}                  # nothing stored is in doubt
    assert {f["problem"] for f in hall.flags(ED)} == {"seq_taken"}   # the refusals are on record
    # ... and no figure leaves the resealed ratings out: the desk and the push read the store's marks only.
    assert HallDesk(tmp_path / "hall.db").records().flags == {}


def test_two_events_of_one_batch_under_one_seq(hall, device):
    a, b = chain(ED, 1), chain(ED, 1, level="dissatisfied")
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, a + b))[0].json()
    assert answer["accepted"] == [a[0]["id"]] and answer["rejected"] == [{"id": b[0]["id"], "error": "seq_taken"}]


def test_the_same_id_with_other_content_is_a_duplicate_flagged_as_a_conflict(hall, device):
    events = chain(ED, 2)
    send(hall.url, device, "POST", EVALUATIONS, batch(ED, events))
    same = send(hall.url, device, "POST", EVALUATIONS, batch(ED, events[:1]))[0].json()
    assert same["duplicate"] == [events[0]["id"]] and "flagged" not in same
    fields = {k: v for k, v in events[0].items() if k not in ("seq", "prev_hash", "hash")}
    other = seal(dict(fields, level="very_dissatisfied", satisfaction=1), 1, events[0]["prev_hash"])
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, [other]))[0].json()
    assert answer["duplicate"] == [other["id"]] and answer["rejected"] == []
    assert [(f["id"], f["problem"]) for f in answer["flagged"]] == [(other["id"], "conflict")]
    assert hall.flagged_events(ED) == {events[0]["id"]: "conflict"}
    assert hall.events(ED)[0]["level"] == "satisfied"    # the first kept, marked


def test_the_same_rating_sealed_again_under_another_seq_is_a_duplicate_not_a_conflict(hall, device):
    events = chain(ED, 2)
    send(hall.url, device, "POST", EVALUATIONS, batch(ED, events))
    fields = {k: v for k, v in events[1].items() if k not in ("seq", "prev_hash", "hash")}
    again = seal(fields, 3, events[1]["hash"])
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, [again]))[0].json()
    assert answer["duplicate"] == [again["id"]] and "flagged" not in answer
    assert hall.flagged_events(ED) == {}
    assert [(f["seq"], f["problem"]) for f in hall.flags(ED)] == [(3, "resealed_duplicate")]


def test_a_gap_event_is_stored_and_flagged_and_a_bad_one_rejected(hall, device):
    events = chain(ED, 1)
    gap = seal({"id": "gap-1", "type": "gap", "device_id": ED, "window_no": "01", "from_seq": None,
                "to_seq": None, "count": 3, "reason": "lost_wal", "occurred_at": "2026-11-20T10:00:00+08:00",
                "clock_synced": True, "boot_id": "boot-2", "mono_ms": 5}, 2, events[0]["hash"])
    bad = seal(dict({k: v for k, v in gap.items() if k not in ("seq", "prev_hash", "hash")}, id="gap-2",
                    reason="because"), 3, gap["hash"])
    answer = send(hall.url, device, "POST", EVALUATIONS, batch(ED, [*events, gap, bad]))[0].json()
    assert answer["accepted"] == [events[0]["id"], "gap-1"] and answer["head"]["seq"] == 2
    assert answer["rejected"][0]["id"] == "gap-2" and "reason" in answer["rejected"][0]["error"]
    assert hall.flagged_events(ED) == {"gap-1": "gap"}
    assert [f["detail"] for f in hall.flags(ED)] == ["3 events the device could not deliver (lost_wal, seqs unknown)"]


def test_a_request_made_for_another_halls_url_is_refused(tmp_path, device):
    a_url, b_url = "https://hall-a.example.org", "https://hall-b.example.org"
    with HallServer(tmp_path / "b.db", public_url=b_url, public_keys={ED: device.public_key}) as hall_b:
        for host in (None, "hall-a.example.org"):     # Host says hall A, or hall B's own address
            reply, _ = send(hall_b.url, device, "POST", EVALUATIONS, batch(ED, chain(ED, 1)), sign_url=a_url,
                            host=host)
            assert reply.status == 401 and reply.json()["error"] == "bad_signature"
            assert reply.header("Signature") == ""
        made_for_b, nonce = send(hall_b.url, device, "POST", EVALUATIONS, batch(ED, chain(ED, 1)), sign_url=b_url,
                                 host="anything.example.org")
        assert made_for_b.status == 200 and hall_signed(made_for_b, nonce, keys.parse_public_key(
            hall_b.hall_public_key))
        assert len(hall_b.events()) == 1


def test_a_replay_across_a_restart_of_the_hall_is_refused(tmp_path, device):
    url = "https://hall.example.org"
    db = tmp_path / "hall.db"
    with HallServer(db, public_url=url, public_keys={ED: device.public_key}) as hall:
        heartbeat = json.dumps({"uptime_s": 100}).encode()
        signing, nonce = device.sign("POST", url + f"/api/v1/devices/{ED}/heartbeat", heartbeat)
        raw = raw_request("POST", f"/api/v1/devices/{ED}/heartbeat", signing, heartbeat)
        assert exchange(hall.url, raw).status == 200
        key = hall.hall_public_key
        assert exchange(hall.url, raw).json()["error"] == "replayed_request"
    with HallServer(db, public_url=url) as again:        # the registry and the nonces kept in its database
        assert again.hall_public_key == key              # and its own key beside it
        reply = exchange(again.url, raw)
        assert reply.status == 401 and reply.json()["error"] == "replayed_request"
        assert hall_signed(reply, nonce, keys.parse_public_key(key))
        assert again.heartbeats[ED] == {"uptime_s": 100}


def test_one_device_flooding_leaves_another_device_answered(tmp_path, device):
    other = Signer(HM, SHARED)
    with HallServer(tmp_path / "hall.db", {HM: SHARED}, public_keys={ED: device.public_key},
                    per_device_nonces=20) as hall:
        statuses = [send(hall.url, device, "POST", f"/api/v1/devices/{ED}/heartbeat", {"n": i})[0].status
                    for i in range(25)]
        assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}
        busy, nonce = send(hall.url, device, "POST", f"/api/v1/devices/{ED}/heartbeat", {})
        assert busy.json()["error"] == "busy" and int(busy.header("Retry-After")) >= 1
        assert hall_signed(busy, nonce, hall_key(hall))  # verified: the device learns why
        # Requests claiming the other device's id but not signed by it count for nobody.
        for _ in range(30):
            forged, _ = send(hall.url, Signer(HM, "not-its-key"), "POST", f"/api/v1/devices/{HM}/heartbeat", {})
            assert forged.status == 401
        for i in range(20):
            reply, nonce = send(hall.url, other, "POST", f"/api/v1/devices/{HM}/heartbeat", {"n": i})
            assert reply.status == 200 and hall_signed(reply, nonce, SHARED)

        # Requests held at once: one device's long polls fill its own share, not the hall.
        def poll(results):
            results.append(send(hall.url, other, "GET", f"/api/v1/devices/{HM}/session?wait=3")[0].status)

    with HallServer(tmp_path / "h2.db", {HM: SHARED}, public_keys={ED: device.public_key}) as hall:
        results: list[int] = []
        threads = [threading.Thread(target=poll, args=(results,)) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.8)
        started = time.monotonic()
        reply, nonce = send(hall.url, device, "POST", EVALUATIONS, batch(ED, chain(ED, 1)))
        assert reply.status == 200 and time.monotonic() - started < 1.0
        for t in threads:
            t.join()
        assert sorted(results) == [200] * 8 + [429] * 4


@pytest.mark.parametrize("device_id", ["WE:01", "窗口1", "x" * 33, ""])
def test_device_ids_outside_the_rule_are_refused_with_a_clear_error(hall, device_id):
    signer = Signer(device_id, SHARED)
    if device_id and device_id.isascii():
        reply, _ = send(hall.url, signer, "POST", EVALUATIONS, batch(device_id, chain(device_id, 1)))
        assert reply.status == 401 and reply.json()["error"] == "bad_device_id"
        assert "A-Z a-z 0-9 . _ -" in reply.json()["message"]
    path = "/api/v1/devices/" + "".join(c if c.isascii() else "%E7%AA%97" for c in device_id) + "/assignment"
    reply = exchange(hall.url, raw_request("GET", path, {}))
    assert reply.status in (400, 404)
    if device_id:
        assert "device id" in reply.json()["error"]


def test_the_worker_pool_is_bounded_and_a_slow_client_is_cut_at_the_read_deadline(tmp_path, device):
    capacity = Capacity(workers=4, backlog=64, read_timeout_s=0.5, idle_timeout_s=0.5)
    with HallServer(tmp_path / "hall.db", public_keys={ED: device.public_key}, capacity=capacity) as hall:
        host, port = hall.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(10)]
        slow = socket.create_connection((host, int(port)))
        slow.sendall(b"POST /api/v1/evaluations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        reply, _ = send(hall.url, device, "POST", EVALUATIONS, batch(ED, chain(ED, 1)))
        assert reply.status == 200 and time.monotonic() - started < 5
        slow.settimeout(5)
        cut = slow.recv(65536)                          # the hall gave up on the body
        assert cut == b"" or cut.startswith(b"HTTP/1.1 400")
        assert hall._httpd is not None and hall._httpd.worker_count <= 4
        for sock in [*idle, slow]:
            sock.close()


def test_the_hall_bench_runs_and_prints_its_figures():
    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench", "bench_hall.py")
    result = subprocess.run([sys.executable, bench, "--posters", "3", "--polls", "5", "--batches", "2",
                             "--limit", "30"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "p99" in result.stdout and "errors: 0 (refused or reset: 0)" in result.stdout
    assert "long polls held: 5 of 5" in result.stdout


def test_the_handler_uses_only_the_halls_public_interface():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "hall")
    with open(os.path.join(here, "handler.py"), encoding="utf-8") as f:
        handler = f.read()
    with open(os.path.join(here, "server.py"), encoding="utf-8") as f:
        server = f.read()
    assert re.search(r"hall\._[a-z]", handler) is None
    assert "import hall.server" not in handler and "from hall.server" not in handler  # no circle
    assert re.search(r"(httpd|handler|Handler)\._[a-z]", server) is None


def test_seen_nonces_are_kept_durably_per_device_and_pruned_past_the_window(tmp_path):
    db = tmp_path / "hall.db"
    nonces = DurableNonces(db, clock=lambda: 1000.0, per_device=3)
    assert [nonces.add("A", f"n{i}", 1000, 1000.0) for i in range(3)] == [True] * 3
    with pytest.raises(Refused) as busy:
        nonces.add("A", "n3", 1000, 1000.0)
    assert busy.value.status == 429 and busy.value.retry_after == 301
    assert nonces.add("B", "n0", 1000, 1000.0)          # another device's share is its own
    assert nonces.add("A", "n0", 1000, 1000.0) is False
    nonces.close()
    again = DurableNonces(db, clock=lambda: 1200.0, per_device=3)
    assert again.add("A", "n1", 1000, 1200.0) is False  # kept across the restart
    assert again.add("C", "late", 1250, 1400.0)         # 400 s on: n0..n2 have left the window
    assert again.count("A") == 0 and again.count() == 1
    assert again.add("A", "n3", 1400, 1400.0)
    again.close()
    with sqlite3.connect(db) as conn:
        assert sorted(conn.execute("SELECT device_id, nonce FROM nonces")) == [("A", "n3"), ("C", "late")]


def test_only_the_simulators_shared_key_hall_takes_another_loopback_port(tmp_path, device):
    relay = "http://127.0.0.1:9"                         # the simulator's network link stands for the network
    with HallServer(tmp_path / "own.db", public_keys={ED: device.public_key}) as own_keys:
        reply, _ = send(own_keys.url, device, "POST", EVALUATIONS, batch(ED, []), sign_url=relay, host="127.0.0.1:9")
        assert reply.status == 401 and reply.json()["error"] == "bad_signature"
        own_keys.add_public_url(relay)                   # a hall configured to serve that URL takes it
        reply, _ = send(own_keys.url, device, "POST", EVALUATIONS, batch(ED, []), sign_url=relay, host="127.0.0.1:9")
        assert reply.status == 200
    with HallServer(tmp_path / "sim.db", default_key=SHARED) as simulator:
        sim_device = Signer("WE-0009", SHARED)
        reply, _ = send(simulator.url, sim_device, "POST", EVALUATIONS, batch("WE-0009", []), sign_url=relay,
                        host="127.0.0.1:9")
        assert reply.status == 200
