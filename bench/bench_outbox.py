"""Outbox budgets: durable enqueue and drain against persist-queue, and storage written per rating (not a test).

    python bench/bench_outbox.py [--events N] [--batch B] [--ratings R] [--dir DIR]

Both stores get the same durability: WAL and ``synchronous=FULL`` (checked),
one commit per enqueued event. Enqueue: N events, one durable commit each,
in interleaved rounds so that both see the same disk.
Drain: the outbox claims a batch, then marks it delivered (two commits per
batch); ``SQLiteAckQueue`` gets and acks each item (its own commits). The
budget is ratio >= 1.0 for both (persist-queue time / outbox time).

Storage written per delivered rating: ``/proc/self/io`` ``write_bytes``
(what this process sent to the storage layer) from the insert to the
acknowledgement, R ratings one at a time as at a counter, against a raw
WAL + ``synchronous=FULL`` table getting one insert and one update of its
state per rating. The outbox does what the device does per rating: append,
claim, mark delivered, the uploader's passive checkpoint. The witness (the
last committed seq kept beside the database) is measured apart, as its own
line: the same run with its writes left out. Budget: outbox <= 1.5x raw.

Run it on the storage the device uses (``--dir``): on tmpfs fsync is free and
the figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from device.queue.outbox import Outbox
from device.records import new_id

if TYPE_CHECKING:
    from persistqueue import SQLiteAckQueue


def sample_event(i: int) -> dict[str, Any]:
    """A rating as the device makes it, without seq and hashes."""
    return {
        "id": new_id(), "type": "rating", "device_id": "WE-0001", "window_no": "01",
        "staff_no": "0001", "staff_name": "张三", "level": "satisfied", "satisfaction": 4,
        "channel": "5", "assess_number": 1, "suspect": False,
        "occurred_at": "2026-11-25T10:00:00.000+08:00", "clock_synced": True,
        "boot_id": "0c5e1f0e-3c8a-4a53-9d7c-6f1b7d2a9e11", "mono_ms": 1_000_000 + i,
    }


def open_outbox(directory: str) -> Outbox:
    box = Outbox(os.path.join(directory, "outbox.db"))
    mode = box.db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = box.db.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 2, (mode, sync)
    return box


def open_persist_queue(directory: str) -> SQLiteAckQueue:
    from persistqueue import SQLiteAckQueue

    # multithreading=True: a putter and a getter connection, as the device
    # would use it (button loop puts, uploader thread gets).
    q = SQLiteAckQueue(os.path.join(directory, "pq"), multithreading=True, auto_commit=True)
    for conn in {id(c): c for c in (q._conn, q._putter)}.values():
        assert conn is not None, "persist-queue opened no connection"
        conn.execute("PRAGMA synchronous=FULL")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        assert mode == "wal" and sync == 2, (mode, sync)
    return q


def drain_outbox(box: Outbox, batch: int) -> int:
    drained = 0
    while True:
        claimed = box.claim(batch)
        if not claimed:
            return drained
        box.mark_delivered([e["id"] for e in claimed], time.time())
        drained += len(claimed)


def drain_persist_queue(q: SQLiteAckQueue) -> int:
    drained = 0
    while q.qsize():
        item = q.get(block=False)
        q.ack(item)
        drained += 1
    return drained


def timed(fn: Callable[..., int], *args: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def run(directory: str, events: Sequence[dict[str, Any]], batch: int,
        rounds: int) -> tuple[float, float, float, float]:
    """Enqueue in interleaved rounds (the disk's mood changes by the second), then drain each."""
    box = open_outbox(os.path.join(directory, "outbox"))
    q = open_persist_queue(os.path.join(directory, "pq"))
    size = max(1, len(events) // rounds)
    chunks = [events[i:i + size] for i in range(0, len(events), size)]
    enqueue = {"outbox": 0.0, "pq": 0.0}
    for n, chunk in enumerate(chunks):
        order: list[tuple[str, Callable[[dict[str, Any]], object]]] = [("outbox", box.append), ("pq", q.put)]
        for name, put in order if n % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for fields in chunk:
                put(fields)
            enqueue[name] += time.perf_counter() - t0
    ob_drain, ob_n = timed(drain_outbox, box, batch)
    pq_drain, pq_n = timed(drain_persist_queue, q)
    box.close()
    q.close()
    assert ob_n == pq_n == len(events), (ob_n, pq_n)
    return enqueue["outbox"], ob_drain, enqueue["pq"], pq_drain


def write_bytes() -> int:
    """Bytes this process has sent to the storage layer so far (Linux)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def storage_raw(directory: str, n: int, every: int) -> int:
    """A raw WAL + FULL table: one insert per rating, one acknowledgement per delivered batch (as the uploader's)."""
    raw = sqlite3.connect(os.path.join(directory, "raw.db"), isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body TEXT, state TEXT)")
    body = json.dumps(sample_event(0), ensure_ascii=False)
    os.sync()
    before = write_bytes()
    first = 1
    for i in range(n):
        raw.execute("INSERT INTO t (body, state) VALUES (?, 'pending')", (body,))
        if (i + 1) % every == 0 or i + 1 == n:
            raw.execute("UPDATE t SET state = 'delivered' WHERE seq BETWEEN ? AND ?", (first, i + 1))
            first = i + 2
    raw.close()
    return write_bytes() - before


def storage_outbox(directory: str, n: int, every: int, witness: bool) -> int:
    """The outbox as the device uses it: an append per rating; per delivered batch a claim, the
    acknowledgement and the uploader's passive checkpoint."""
    box = Outbox(os.path.join(directory, f"outbox-{witness}.db"))
    if not witness:
        # The same run with the witness's writes left out: its cost is the difference.
        box.book.witness._write = lambda: None  # type: ignore[method-assign]
        box.book.witness.sync = lambda: None  # type: ignore[method-assign]
    os.sync()
    before = write_bytes()
    for i in range(n):
        box.append(sample_event(i))
        if (i + 1) % every == 0 or i + 1 == n:
            box.mark_delivered([e["id"] for e in box.claim(250)], time.time())
            box.checkpoint(passive=True)
    box.close()
    return write_bytes() - before


def bench_storage(directory: str, n: int, every: int) -> tuple[float, float, float]:
    """Bytes written per delivered rating: raw, outbox without its witness, the witness."""
    raw = storage_raw(directory, n, every)
    outbox = storage_outbox(directory, n, every, witness=False)
    total = storage_outbox(directory, n, every, witness=True)
    return raw / n, outbox / n, (total - outbox) / n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="outbox claim size (upload.batch_size)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved enqueue rounds")
    parser.add_argument("--ratings", type=int, default=2000, help="ratings for the storage measurement")
    parser.add_argument("--ack-every", default="1,10", help="ratings per delivered batch in the storage "
                        "measurement, comma-separated (the uploader's batches: one rating at a time at a quiet "
                        "counter, several at a busy one; the outbox and the raw baseline ack the same batches)")
    parser.add_argument("--dir", help="where the databases go (default: a temporary folder)")
    args = parser.parse_args(argv)
    events = [sample_event(i) for i in range(args.events)]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-outbox-") as tmp:
        ob_enqueue, ob_drain, pq_enqueue, pq_drain = run(tmp, events, args.batch, args.rounds)
    n = args.events
    print(f"durable enqueue and drain, {n} events, WAL + synchronous=FULL, one commit per event")
    print(f"  enqueue  outbox {ob_enqueue:7.3f} s ({ob_enqueue / n * 1e6:7.1f} us/event)   "
          f"persist-queue {pq_enqueue:7.3f} s ({pq_enqueue / n * 1e6:7.1f} us/event)   "
          f"ratio {pq_enqueue / ob_enqueue:5.2f} (budget >= 1.0)")
    print(f"  drain    outbox {ob_drain:7.3f} s (batches of {args.batch})          "
          f"persist-queue {pq_drain:7.3f} s (get/ack)              "
          f"ratio {pq_drain / ob_drain:5.2f} (budget >= 1.0)")
    ok = pq_enqueue / ob_enqueue >= 1.0 and pq_drain / ob_drain >= 1.0
    print("  within budget" if ok else "  OVER BUDGET")
    kib = 1024
    print(f"storage written per delivered rating (/proc/self/io write_bytes, insert to acknowledgement, "
          f"{args.ratings} ratings one at a time, the witness included)")
    worst = 0.0
    for every in (int(e) for e in args.ack_every.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-storage-") as tmp:
            raw, outbox, witness = bench_storage(tmp, args.ratings, every)
        total = outbox + witness
        worst = max(worst, total / raw)
        print(f"  acknowledged in batches of {every:<3}  raw WAL+FULL insert + acknowledgement {raw / kib:5.1f} KiB   "
              f"outbox {total / kib:5.1f} KiB (witness {witness / kib:3.1f})   ratio {total / raw:4.2f} "
              "(budget <= 1.5)")
    print("  within budget" if worst <= 1.5 else "  OVER BUDGET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
