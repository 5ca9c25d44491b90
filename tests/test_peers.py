"""The peer matrix: the device against every kind of peer that is not a well-behaved hall.

Each row puts the real uploader (and, for sessions, the hall link) against
the stand-in hall server acting out one misbehaviour (hall/faults.py):
an impostor's unsigned answers, answers signed with another key or echoing
another request's nonce, a proxy answering an unsigned 400 to everything, a
server dribbling one byte a second, an answer of 100 MB, a session on every
poll; and the hall's own defences against replayed and stale requests.
Every row asserts what a hall would care about:

- no false acknowledgement: every event the device marks delivered is stored
  by the hall, and nothing is stored twice;
- no dead letter from an answer that did not verify;
- no request held longer than ``upload.timeout_s``;
- the fault shown in the uploader's status and the heartbeat;
- the device recovering by itself (its own worker thread) once the peer
  behaves again.

Resident memory under a 100 MB answer is measured in a child process.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest
from test_uploader import wait_for

from device.config import Secret
from device.queue import wire
from device.queue.hall import HallLink
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from hall import HallServer, auth
from helpers import rating

KEY = "peer-key"
#: ``upload.timeout_s`` in these runs.
TIMEOUT = 2.0
#: A request may end this much after its deadline (the last read returning, the socket closing).
SLACK = 0.5
N = 6

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Timed:
    """The real transport, with the time each request took noted."""

    def __init__(self, inner):
        self.inner, self.base_url, self.durations = inner, inner.base_url, []
        self.faults = inner.faults

    def use_clocks(self, clocks):
        self.inner.use_clocks(clocks)

    def request(self, *args, **kw):
        started = time.monotonic()
        try:
            return self.inner.request(*args, **kw)
        finally:
            self.durations.append(time.monotonic() - started)

    def close(self):
        self.inner.close()


def make_uploader(outbox, url):
    transport = Timed(HttpTransport(url, "d1", Secret(KEY), timeout=TIMEOUT))
    return Uploader(outbox, transport, "d1", batch_size=4, backoff_min_s=0.05, backoff_max_s=0.3,
                    heartbeat_s=0, retain_days=0, synced=lambda: True), transport


def no_false_acks(hall, outbox):
    stored = [e["id"] for e in hall.events("d1")]
    delivered = {e["id"] for e in outbox.events("delivered")}
    assert delivered <= set(stored), "marked delivered but not stored by the hall"
    assert len(stored) == len(set(stored)), "stored twice"
    assert outbox.count("rejected") == 0, "a dead letter from an answer that did not verify"


#: name -> (inject, the fault the device shows, attempts while the peer misbehaves)
PEERS = {
    "unsigned answers": (lambda hall: hall.inject("rogue", count=3, sign="none"), "unauthenticated_answer", 3),
    "answers signed with a wrong key": (lambda hall: hall.inject("rogue", count=3, sign="wrong_key"),
                                        "unauthenticated_answer", 3),
    "another request's nonce echoed": (lambda hall: hall.inject("rogue", count=3, sign="other_nonce"),
                                       "unauthenticated_answer", 3),
    "a proxy's unsigned 400": (lambda hall: hall.inject("status", count=3, status=400, sign="none",
                                                        body=b"<html>400 Bad Request</html>"),
                               "unauthenticated_answer", 3),
    "dribbling one byte a second": (lambda hall: hall.inject("dribble", count=2, seconds=1.0), "offline", 2),
    "a 100 MB answer": (lambda hall: (hall.inject("huge", count=1), hall.inject("huge", count=1, declared=False)),
                        "offline", 2),
}


@pytest.mark.parametrize("peer", PEERS)
def test_the_peer_matrix(peer, tmp_path, outbox):
    inject, fault, attempts = PEERS[peer]
    events = [outbox.append(rating(i)) for i in range(N)]
    with HallServer(tmp_path / "hall.db", default_key=KEY) as hall:
        inject(hall)
        up, transport = make_uploader(outbox, hall.url)
        for _ in range(attempts):
            assert up.send_batch() > 0                     # backs off: never an acknowledgement
        no_false_acks(hall, outbox)
        assert outbox.count("delivered") == 0
        assert up.status.online is False
        shown = up.refresh_status().faults
        assert any(f.startswith(fault) for f in shown), shown
        # The heartbeat (not faulted here) carries the fault to the hall.
        assert up.upkeep.heartbeat()
        assert any(f.startswith(fault) for f in hall.heartbeats["d1"]["faults"])

        up.start()                                         # the peer behaves again: recovery by itself
        try:
            wait_for(lambda: outbox.waiting() == 0, seconds=30)
        finally:
            up.stop(timeout=5)
        no_false_acks(hall, outbox)
        assert sorted(e["id"] for e in hall.events("d1")) == sorted(e["id"] for e in events)
        assert up.status.fault == "" and up.status.online is True
        assert hall.integrity("d1") == {"d1": []}
    assert max(transport.durations) <= TIMEOUT + SLACK, transport.durations


def test_a_proxy_answering_an_unsigned_400_to_everything_makes_no_dead_letter(tmp_path, outbox):
    events = [outbox.append(rating(i)) for i in range(30)]
    with HallServer(tmp_path / "hall.db", default_key=KEY) as hall:
        hall.inject("status", count=10_000, path="*", status=400, sign="none", body=b"<html>Bad Request</html>")
        up, _ = make_uploader(outbox, hall.url)
        up.start()
        try:
            time.sleep(3)                                  # v1 turned 30 of 30 into dead letters in 6 s
            assert outbox.count("rejected") == 0 and outbox.waiting() == 30
            assert "unauthenticated_answer" in up.status.faults
            assert up.check_uplink(timeout=10)["error"] == "unauthenticated_answer"
            hall.clear_faults()
            up.wake(force=True)
            wait_for(lambda: outbox.waiting() == 0, seconds=30)
        finally:
            up.stop(timeout=5)
        assert sorted(e["id"] for e in hall.events("d1")) == sorted(e["id"] for e in events)
        assert outbox.count("rejected") == 0


def test_a_session_on_every_poll_is_refused_and_reported(tmp_path):
    with HallServer(tmp_path / "hall.db", default_key=KEY) as hall:
        hall.inject("session", count=10_000, path=wire.session_path("d1", 1).split("?")[0])
        events: queue.Queue = queue.Queue()
        link = HallLink(HttpTransport(hall.url, "d1", Secret(KEY), timeout=TIMEOUT), "d1", events,
                        hall_mode=True, poll_wait_s=1, assignment_every_s=3600)
        link.start()
        try:
            time.sleep(2)
        finally:
            link.stop(timeout=5)
        polls = sum(1 for _, p, _ in hall.requests_log if p.endswith("/session"))
        # v1 opened 25 sessions a second; a person-paced burst gets through, the rest is refused.
        assert events.qsize() <= 3 and link.status.sessions_refused >= 1
        assert polls <= 6, polls                           # a storm is not polled flat out
        assert any(f.startswith("session_storm") for f in link.status.faults)


def raw_request(url, captured):
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(captured.method, captured.target, body=captured.body or None,
                     headers={k: v for k, v in captured.headers if k.lower() != "content-length"})
        answer = conn.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        conn.close()


def verdict(captured, status, headers, body):
    nonce = auth.claim(captured.headers).nonce
    return wire.verify_answer(Secret(KEY), wire.SignedRequest({}, nonce, 0), status, headers, body)


def test_replayed_and_stale_requests_are_refused_with_a_signed_401(tmp_path, outbox):
    offset = [0.0]
    with HallServer(tmp_path / "hall.db", default_key=KEY, capture=True,
                    clock=lambda: time.time() + offset[0]) as hall:
        events = [outbox.append(rating(i)) for i in range(3)]
        up, _ = make_uploader(outbox, hall.url)
        assert up.drain() and up.upkeep.heartbeat()
        link = HallLink(HttpTransport(hall.url, "d1", Secret(KEY), timeout=TIMEOUT), "d1", queue.Queue(),
                        hall_mode=True, poll_wait_s=0.2)
        assert link.poll_session() is None
        observed = hall.captured
        assert {c.target.split("?")[0].rsplit("/", 1)[-1] for c in observed} == {"evaluations", "heartbeat",
                                                                                  "session"}
        # An eavesdropper replays what it saw, at once: a session opened for the device stays the device's.
        opened = hall.open_session("d1", ticket="A001")
        for captured in observed:
            status, headers, body = raw_request(hall.url, captured)
            assert status == 401 and json.loads(body)["error"] == "replayed_request"
            assert verdict(captured, status, headers, body).ok          # signed: not a portal's 401
        polled = link.poll_session()
        assert polled is not None and polled.session_id == opened["session_id"]
        # ... or five minutes later.
        offset[0] = 301.0
        for captured in observed:
            status, headers, body = raw_request(hall.url, captured)
            assert status == 401 and json.loads(body)["error"] == "stale_request"
            assert verdict(captured, status, headers, body).ok
        assert [e["id"] for e in hall.events("d1")] == [e["id"] for e in events]


CHILD = r"""
import json, queue, sys, uuid
from device.config import Secret
from device.queue.hall import HallLink
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader

url, path, key = sys.argv[1:4]
box = Outbox(path)
for i in range(20):
    box.append({"id": str(uuid.uuid4()), "type": "rating", "device_id": "d1", "window_no": "01",
                "staff_no": "7", "staff_name": "x", "level": "satisfied", "satisfaction": 4, "channel": "5",
                "assess_number": 1, "suspect": False, "occurred_at": "2026-11-25T10:00:00.000+08:00",
                "clock_synced": True, "boot_id": "b", "mono_ms": i})
up = Uploader(box, HttpTransport(url, "d1", Secret(key), timeout=10), "d1", heartbeat_s=0, retain_days=0,
              synced=lambda: True)
link = HallLink(HttpTransport(url, "d1", Secret(key), timeout=10), "d1", queue.Queue(), hall_mode=True,
                poll_wait_s=1)
for _ in range(4):
    up.send_batch()
    link.cycle()
# VmHWM: the peak of this process's own memory (ru_maxrss would keep the forking parent's peak across exec).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_kb": peak,
                  "delivered": box.count("delivered"), "rejected": box.count("rejected"),
                  "waiting": box.waiting()}))
"""


def test_a_100_mb_answer_keeps_resident_memory_under_80_mb(tmp_path):
    with HallServer(tmp_path / "hall.db", default_key=KEY) as hall:
        hall.inject("huge", count=8, path="*", declared=False)     # no length: read until the cap
        hall.inject("huge", count=8, path="*")                      # a length: refused at once
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-c", CHILD, hall.url, str(tmp_path / "child.db"), KEY],
                               capture_output=True, text=True, env=env, timeout=90, cwd=ROOT)
        elapsed = time.monotonic() - started
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["delivered"] == 0 and result["rejected"] == 0 and result["waiting"] == 20
    assert result["peak_rss_kb"] < 80 * 1024, result
    assert elapsed < 60


def test_nothing_of_the_matrix_is_left_running():
    # Hall servers and workers of the matrix have stopped: no thread of theirs lingers.
    lingering = [t.name for t in threading.enumerate() if t.name in ("uploader", "hall-link", "hall-server")]
    assert lingering == []
