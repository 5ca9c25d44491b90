"""Uplink budget: 10,000 waiting events delivered to a loopback hall server (not a test).

    python bench/bench_uplink.py [--events N] [--batch B] [--baseline-events M]

The device's uploader drains an outbox of N waiting events to the stand-in
hall server on loopback in batches of B (default: the shipped ``upload.batch_size``). The baseline
is the same uploader with one request per event (batch size 1), timed on M
events (all N with ``--baseline-events N``; fewer keeps the run short) and
compared per event. Budget: N = 10,000 in under 5 s and at least 20x faster
per event than the baseline. Both sides sign and verify every message as
the contract says (RFC 9421 request and answer signatures, Content-Digest),
and every batch is checked against the hall's chain on receipt.

Run twice: with the device's own Ed25519 key pair (``upload.signature =
"ed25519"``, the hall's answers signed with its own Ed25519 key) and with
the shared key (``hmac-sha256``). The Ed25519 run needs a hall back end that
holds device public keys; where it holds none, it is reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from device import config as config_mod
from device import keys
from device.config import Secret
from device.queue import wire
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from hall import HallServer

KEY = "bench-key"


def fill(path: str, n: int, device_id: str) -> Outbox:
    box = Outbox(path)
    # Filling is not what is measured: one transaction instead of n fsyncs.
    box._conn.execute("PRAGMA synchronous=OFF")
    for i in range(n):
        box.append({
            "id": str(uuid.uuid4()), "type": "rating", "device_id": device_id, "window_no": "01",
            "staff_no": "0001", "staff_name": "张三", "level": "satisfied", "satisfaction": 4,
            "channel": "5", "assess_number": 1, "suspect": False,
            "occurred_at": "2026-11-25T10:00:00.000+08:00", "clock_synced": True,
            "boot_id": "bench", "mono_ms": 1_000_000 + i})
    box.close()
    return Outbox(path)  # reopened: synchronous=FULL again, as on the device


def deliver(directory: str, hall: HallServer, n: int, batch: int, device_id: str,
            signing: Secret | keys.Ed25519Signing) -> float:
    box = fill(os.path.join(directory, f"{device_id}.db"), n, device_id)
    transport = HttpTransport(hall.url, device_id, signing, timeout=10)
    uploader = Uploader(box, transport, device_id, batch_size=batch, synced=lambda: True,
                        heartbeat_s=0, retain_days=0)
    t0 = time.perf_counter()
    done = uploader.drain(max_cycles=n + 10)
    elapsed = time.perf_counter() - t0
    delivered = box.count("delivered")
    box.close()
    transport.close()
    if not done or delivered != n or len(hall.events(device_id)) != n:
        raise SystemExit(f"{device_id}: only {delivered} of {n} delivered")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    default_batch = config_mod.Config().upload.batch_size
    parser.add_argument("--batch", type=int, default=default_batch,
                        help=f"events per request (default: upload.batch_size's default, {default_batch})")
    parser.add_argument("--baseline-events", type=int, default=2000,
                        help="events for the one-request-per-event baseline")
    args = parser.parse_args(argv)
    ok = True
    for signature, micros in sign_costs().items():
        print(f"device side, one request signed ({signature}): {micros:.0f} us")
    for signature in (keys.ED25519, keys.HMAC_SHA256):
        result = run(args, signature)
        if result is None:
            print(f"uplink, {signature}: the stand-in hall in this tree holds no device public keys: skipped")
            continue
        batched, single = result
        per_batched = batched / args.events
        per_single = single / args.baseline_events
        ratio = per_single / per_batched
        print(f"uplink to a loopback hall server, batches of {args.batch}, RFC 9421 {signature} both ways")
        print(f"  {args.events} events delivered in {batched:.2f} s ({per_batched * 1e6:.0f} us/event; "
              "budget < 5 s)")
        print(f"  one request per event: {args.baseline_events} events in {single:.2f} s "
              f"({per_single * 1e6:.0f} us/event)")
        print(f"  ratio {ratio:.1f}x faster per event (budget >= 20x)")
        within = batched < 5.0 and ratio >= 20
        ok = ok and within
        print("  within budget" if within else "  OVER BUDGET")
    return 0


def sign_costs(rounds: int = 300) -> dict[str, float]:
    """Microseconds the device spends signing one request (digest included), per signature."""
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        own = keys.DeviceKeys(os.path.join(tmp, "device.pem"))
        costs = {}
        body = b"x" * 600
        for name, sign_key in ((keys.ED25519, own.current), (keys.HMAC_SHA256, Secret(KEY))):
            t0 = time.perf_counter()
            for _ in range(rounds):
                wire.sign_request(sign_key, "WE-1", "POST", "http://h/api/v1/evaluations", body, time.time())
            costs[name] = (time.perf_counter() - t0) / rounds * 1e6
        return costs


def run(args: argparse.Namespace, signature: str) -> tuple[float, float] | None:
    """``(batched seconds, one-per-request seconds)`` with ``signature``; None when the hall cannot."""
    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp:
        if signature == keys.HMAC_SHA256:
            hall = HallServer(os.path.join(tmp, "hall.db"), {"WE-BATCH": KEY, "WE-SINGLE": KEY})
            signing: Secret | keys.Ed25519Signing = Secret(KEY)
        else:
            own = keys.DeviceKeys(os.path.join(tmp, "device-ed25519.pem"))
            public = own.info().public_key
            registry: dict[str, Any] = {"public_keys": {"WE-BATCH": public, "WE-SINGLE": public}}
            hall = HallServer(os.path.join(tmp, "hall.db"), **registry)
            signing = keys.Ed25519Signing(own, keys.parse_public_key(hall.hall_public_key))
        with hall:
            batched = deliver(tmp, hall, args.events, args.batch, "WE-BATCH", signing)
            single = deliver(tmp, hall, args.baseline_events, 1, "WE-SINGLE", signing)
    return batched, single


if __name__ == "__main__":
    sys.exit(main())
