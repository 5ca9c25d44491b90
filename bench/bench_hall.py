"""Hall budget: 50 devices posting batches together while 300 long polls are held (not a test).

    python bench/bench_hall.py [--posters 50] [--polls 300] [--batches 20] [--batch 10] [--in-process]

The hall back end runs as ``python -m hall`` in its own process on
loopback (``--in-process``: a thread of this one), with one Ed25519 public
key registered per device. First ``--polls`` devices each open a session
long poll (``wait=30``) and keep it held; then ``--posters`` other devices
post ``--batches`` batches of ``--batch`` sealed events each, all starting
together, one kept-alive connection per device, each request signed as a
device signs it (RFC 9421 ``ed25519``; signed before the clock starts, so
what is timed is the hall). Printed: p50, p99 and the slowest evaluations
request, requests per second, every error (refused, reset, timeout, a
status other than 200, an event not accepted), and whether the long polls
were all still held. Budget (DESIGN.md): p99 under 200 ms, no connection
refused or reset. Bounded in time: the whole run gives up after ``--limit``
seconds. Exit status 1 when over budget with ``--strict``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from cryptography.hazmat.primitives.asymmetric import ed25519

from hall import keys
from hall.auth import sign_request
from hall.contract import EVALUATIONS_PATH, GENESIS_HASH, event_hash
from hall.server import HallServer

P99_BUDGET_MS = 200.0


def sealed_chain(device_id: str, count: int, start: int, prev: str) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        event: dict[str, Any] = {
            "id": str(uuid.uuid4()), "type": "rating", "device_id": device_id, "window_no": "01",
            "staff_no": "1001", "staff_name": "张三", "level": "satisfied", "satisfaction": 4, "channel": "5",
            "assess_number": 1, "suspect": False, "occurred_at": "2026-11-20T09:00:00+08:00",
            "clock_synced": True, "boot_id": "bench", "mono_ms": start + i, "seq": start + i, "prev_hash": prev}
        event["hash"] = event_hash(event)
        prev = event["hash"]
        events.append(event)
    return events


class Device:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.public_key = keys.public_key_text(self.key.public_key())


def start_hall(db: str, in_process: bool) -> tuple[str, Any]:
    if in_process:
        hall = HallServer(db).start()
        return hall.url, hall
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(__file__), os.pardir),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "hall", "--db", db, "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"listening on (\S+)", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            return match.group(1), proc
    raise RuntimeError("the hall did not start")


def stop_hall(hall: Any) -> None:
    if isinstance(hall, HallServer):
        hall.close()
    else:
        hall.terminate()
        hall.wait(10)


def hold_poll(url: str, device: Device, held: list[int], answered: list[tuple[float, int]],
              errors: list[str], stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    path = f"/api/v1/devices/{device.device_id}/session?wait=30"
    headers = sign_request(device.key, device.device_id, "GET", url + path, b"")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Length: 0",
             *(f"{n}: {v}" for n, v in headers.items())]
    try:
        with socket.create_connection((host, int(port)), timeout=40) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            held.append(1)
            data = sock.recv(4096)
            if not stop.is_set():
                answered.append((time.monotonic(), int(data.split()[1]) if data else 0))
    except OSError as e:
        errors.append(f"poll: {type(e).__name__}: {e}")


def post_batches(url: str, device: Device, requests_: list[tuple[bytes, dict[str, str]]], start: threading.Barrier,
                 latencies: list[float], errors: list[str], rounds: bool, count: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    start.wait()
    for body, headers in requests_:
        if rounds:
            try:
                start.wait(30)  # every device posts its next batch at the same moment
            except threading.BrokenBarrierError:
                errors.append("post: a round never started")
                return
        began = time.perf_counter()
        try:
            conn.request("POST", EVALUATIONS_PATH, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            latencies.append(time.perf_counter() - began)
            if answer.status != 200:
                errors.append(f"post: status {answer.status}: {data[:100]!r}")
            elif len(json.loads(data)["accepted"]) != count:
                errors.append(f"post: not every event accepted: {data[:200]!r}")
        except (OSError, http.client.HTTPException) as e:
            latencies.append(time.perf_counter() - began)
            errors.append(f"post: {type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posters", type=int, default=50)
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--limit", type=float, default=120.0, help="give up after this many seconds")
    parser.add_argument("--in-process", action="store_true", help="run the hall in this process")
    parser.add_argument("--back-to-back", action="store_true",
                        help="each device posts its next batch as soon as it has the answer (saturation), "
                             "instead of all devices posting each batch together")
    parser.add_argument("--strict", action="store_true", help="exit 1 when over budget")
    args = parser.parse_args(argv)
    threading.stack_size(512 * 1024)
    deadline = time.monotonic() + args.limit

    with tempfile.TemporaryDirectory(prefix="bench-hall-") as tmp:
        db = os.path.join(tmp, "hall.db")
        pollers = [Device(f"POLL-{i:04d}") for i in range(args.polls)]
        posters = [Device(f"POST-{i:04d}") for i in range(args.posters)]
        registry = keys.PublicKeys(db)
        for device in pollers + posters:
            registry.add(device.device_id, device.public_key, "bench")
        registry.close()
        url, hall = start_hall(db, args.in_process)
        stop = threading.Event()
        try:
            held: list[int] = []
            answered: list[tuple[float, int]] = []
            errors: list[str] = []
            poll_threads = [threading.Thread(target=hold_poll, args=(url, d, held, answered, errors, stop),
                                             daemon=True) for d in pollers]
            for t in poll_threads:
                t.start()
            while len(held) < args.polls and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the hall reads and verifies them
            # Signed before the clock starts: what is timed is the hall.
            work = []
            for device in posters:
                prev, seq, signed = GENESIS_HASH, 1, []
                for _ in range(args.batches):
                    events = sealed_chain(device.device_id, args.batch, seq, prev)
                    prev, seq = events[-1]["hash"], seq + args.batch
                    body = json.dumps({"device_id": device.device_id, "sent_at": "2026-11-20T10:00:00+08:00",
                                       "events": events}).encode()
                    headers = {"Content-Type": "application/json",
                               **sign_request(device.key, device.device_id, "POST", url + EVALUATIONS_PATH, body)}
                    signed.append((body, headers))
                work.append(signed)
            latencies: list[float] = []
            barrier = threading.Barrier(args.posters + 1)
            rounds = not args.back_to_back
            post_threads = [threading.Thread(target=post_batches,
                                             args=(url, d, w, barrier, latencies, errors, rounds, args.batch),
                                             daemon=True) for d, w in zip(posters, work, strict=True)]
            for t in post_threads:
                t.start()
            barrier.wait()
            began = time.monotonic()
            if rounds:
                for _ in range(args.batches):
                    try:
                        barrier.wait(max(0.1, deadline - time.monotonic()))
                    except threading.BrokenBarrierError:
                        break
            for t in post_threads:
                t.join(max(0.0, deadline - time.monotonic()))
            elapsed = time.monotonic() - began
            early = [status for when, status in answered if when < began + elapsed]
            stop.set()
        finally:
            stop_hall(hall)

    timed_out = sum(t.is_alive() for t in post_threads)
    expected = args.posters * args.batches
    how = "one after another as fast as answered" if args.back_to_back else "each batch all together"
    print(f"hall bench: {args.posters} devices posting {args.batches} batches of {args.batch} events ({how}) "
          f"while {args.polls} long polls held ({'in process' if args.in_process else 'hall in its own process'})")
    if latencies:
        ms = [x * 1000 for x in latencies]
        print(f"  evaluations requests: {len(ms)} of {expected} in {elapsed:.2f} s ({len(ms) / elapsed:.0f}/s)")
        print(f"  p50 {statistics.median(ms):.1f} ms   p99 {percentile(ms, 99):.1f} ms   max {max(ms):.1f} ms")
    print(f"  long polls held: {len(held)} of {args.polls}; answered before the posts ended: {len(early)}")
    refused_or_reset = [e for e in errors if "Refused" in e or "Reset" in e or "Broken" in e]
    print(f"  errors: {len(errors)} (refused or reset: {len(refused_or_reset)}), threads still posting: {timed_out}")
    for error in errors[:10]:
        print(f"    {error}")
    ok = (bool(latencies) and len(latencies) == expected and percentile([x * 1000 for x in latencies], 99)
          < P99_BUDGET_MS and not errors and not timed_out and len(held) == args.polls and not early)
    print(f"  budget (p99 < {P99_BUDGET_MS:.0f} ms, no error, every poll held): {'met' if ok else 'NOT MET'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
