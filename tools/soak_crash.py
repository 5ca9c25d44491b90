"""Power-cut soak: the simulated device SIGKILLed at random moments of a press storm.

    python tools/soak_crash.py [--cycles 200] [--seed N] [--keep DIR]

Runs a stand-in hall server in this process and, ``--cycles`` times, the
simulator (``python -m sim``) against it with one data folder, fed ``press N``
lines on stdin as fast as it takes them, with no lockout. Each run is killed
with SIGKILL after a random time (sometimes during start-up, during a commit,
or with a batch in flight; some cycles also have the server reset the
connection after committing a batch). After every kill the outbox must pass
SQLite's ``PRAGMA integrity_check`` (opened read-only) and its hash chain
must be whole. A last run is left to deliver everything; then:

- every rating the device logged as kept ("rating kept as seq N") is
  stored by the server, in particular every one that reached a thank-you
  frame ("screen: thanks" follows it on stderr);
- the server holds each event once, every seq from 1 to the device's last,
  with a whole chain (``HallServer.integrity()`` clean);
- nothing is left waiting in the outbox.

Exit status 0 when all of that holds, 1 otherwise. The JSON summary on the
last line of stdout is what ``tests/test_soak.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

# Importable only once ROOT is on the path (the script runs from anywhere).
from device import integrity  # noqa: E402
from hall import HallServer  # noqa: E402

KEY = "soak-test-key"
# The loop's log line for a kept rating (an older form named the level too).
KEPT = re.compile(r"\brating (?:\w+ )?kept as seq (\d+)")
THANKS = "screen: thanks"
SIM_SETTINGS = [
    "session.source=\"free\"",        # a press at any time is a rating (no 请评价 needed) ...
    "session.min_interval_s=0",      # ... with no lockout: every press is a rating
    "session.thanks_s=0.2",
    "display.show_level=true",       # the thank-you frame names the level: a new frame (and log line) per level
    "session.suspect_count=1000000",  # a storm is not what is tested here
    "upload.batch_size=5",           # small batches: more of them in flight at a kill
    "upload.backoff_min_s=0.1",
    "upload.backoff_max_s=0.5",
    "log.level=\"INFO\"",
]


class Run:
    """One simulator process: its stdin fed with presses, its stderr read."""

    def __init__(self, data_dir: str, server_url: str, rng: random.Random, presses: bool = True) -> None:
        cmd = [sys.executable, "-m", "sim", "--data", data_dir, "--server", server_url,
               "--device-key", KEY, "--drain-timeout", "60"]
        for setting in SIM_SETTINGS:
            cmd += ["--set", setting]
        self.kept: list[int] = []
        self.thanked: list[int] = []
        self.lines: list[str] = []
        self._last_kept: int | None = None
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        assert self.proc.stdin is not None and self.proc.stderr is not None   # both are pipes
        self._stdin: IO[str] = self.proc.stdin
        self._stderr: IO[str] = self.proc.stderr
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._feeder: threading.Thread | None = None
        if presses:
            self._feeder = threading.Thread(target=self._feed, args=(rng.random(),), daemon=True)
            self._feeder.start()
        else:
            self._stdin.close()

    def _read(self) -> None:
        for line in self._stderr:
            self.lines.append(line.rstrip("\n"))
            match = KEPT.search(line)
            if match:
                self._last_kept = int(match.group(1))
                self.kept.append(self._last_kept)
            elif THANKS in line and self._last_kept is not None:
                self.thanked.append(self._last_kept)

    def _feed(self, seed: float) -> None:
        rng = random.Random(seed)
        try:
            while self.proc.poll() is None:
                self._stdin.write(f"press {rng.randint(1, 5)}\n")
                self._stdin.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ValueError, OSError):
            pass

    def kill(self) -> int:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.finish()

    def finish(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        if self._feeder is not None:
            self._feeder.join(5)
        try:
            self._stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        return rc


def check_file(path: str) -> str:
    """SQLite's integrity_check on a read-only connection, then the chain."""
    if not os.path.exists(path):
        return "no outbox yet"
    conn = integrity.open_readonly(path)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if result != "ok":
        return f"integrity_check: {result}"
    _, _, reports = integrity.verify(path)
    broken = [r.line() for r in reports if not r.ok]
    return "; ".join(broken) or "ok"


def waiting_in(path: str) -> int:
    conn = integrity.open_readonly(path)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE state IN ('pending', 'sending')").fetchone()[0])
    finally:
        conn.close()


def soak(cycles: int = 200, seed: int | None = None, workdir: str | None = None, kill_min: float = 0.2,
         kill_max: float = 3.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak. Returns a summary dict; ``summary["ok"]`` says whether it held."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="soak-crash-")
        workdir = own_tmp.name
    os.makedirs(workdir, exist_ok=True)
    data_dir = os.path.join(workdir, "device")
    outbox_path = os.path.join(data_dir, "outbox.db")
    hall = HallServer(os.path.join(workdir, "hall.db"), default_key=KEY).start()
    summary: dict[str, Any] = {"seed": seed, "cycles": cycles, "kept": 0, "thanked": 0, "stored": 0,
               "problems": [], "ok": False}
    kept: set[int] = set()
    thanked: set[int] = set()
    started = time.monotonic()
    try:
        for cycle in range(cycles):
            if rng.random() < 0.3:
                hall.inject("reset_after_commit", count=1)
            run = Run(data_dir, hall.url, rng)
            time.sleep(rng.uniform(kill_min, kill_max))
            run.kill()
            hall.clear_faults()
            kept.update(run.kept)
            thanked.update(run.thanked)
            check = check_file(outbox_path)
            if check not in ("ok", "no outbox yet"):
                summary["problems"].append(f"cycle {cycle}: {check}")
                log(f"cycle {cycle}: {check}")
            if cycle % 20 == 19 or cycle == cycles - 1:
                log(f"cycle {cycle + 1}/{cycles}: {len(kept)} ratings kept, {len(thanked)} thanked, "
                    f"{len(hall.events())} stored so far")
        # The last run: no presses, no kill; it exits once everything is delivered.
        final = Run(data_dir, hall.url, rng, presses=False)
        try:
            rc = final.finish(timeout=120)
        except subprocess.TimeoutExpired:
            rc = final.kill()
            summary["problems"].append("the final run did not deliver everything within 120 s")
        if rc != 0:
            summary["problems"].append(f"the final run exited {rc}: " + " | ".join(final.lines[-5:]))
        stored = hall.events()
        by_seq: dict[int, list[dict[str, Any]]] = {}
        for event in stored:
            by_seq.setdefault(event["seq"], []).append(event)
        ids = [e["id"] for e in stored]
        if len(ids) != len(set(ids)):
            summary["problems"].append("an event id is stored twice")
        twice = sorted(seq for seq, events in by_seq.items() if len(events) > 1)
        if twice:
            summary["problems"].append(f"seqs stored more than once: {twice[:10]}")
        for what, seqs in (("kept", kept), ("thanked", thanked)):
            missing = sorted(seq for seq in seqs if seq not in by_seq)
            if missing:
                summary["problems"].append(f"{len(missing)} {what} ratings not stored: {missing[:10]}")
            wrong = sorted(seq for seq in seqs if seq in by_seq and by_seq[seq][0]["type"] != "rating")
            if wrong:
                summary["problems"].append(f"{what} seqs stored as another type: {wrong[:10]}")
        problems = {device: p for device, p in hall.integrity().items() if p}
        if problems:
            summary["problems"].append(f"server integrity: {json.dumps(problems)[:500]}")
        if stored and sorted(by_seq) != list(range(1, max(by_seq) + 1)):
            summary["problems"].append("the server's seqs are not 1..N")
        if os.path.exists(outbox_path):
            left = waiting_in(outbox_path)
            if left:
                summary["problems"].append(f"{left} events still waiting in the outbox")
            check = check_file(outbox_path)
            if check != "ok":
                summary["problems"].append(f"outbox at the end: {check}")
        summary.update(kept=len(kept), thanked=len(thanked), stored=len(stored),
                       seconds=round(time.monotonic() - started, 1))
        summary["ok"] = not summary["problems"] and len(thanked) > 0
        if not thanked:
            summary["problems"].append("no rating reached a thank-you frame: nothing was tested")
    finally:
        hall.close()
        if own_tmp is not None:
            own_tmp.cleanup()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, help="repeat a run (printed at the end)")
    parser.add_argument("--keep", metavar="DIR", help="keep the databases in DIR")
    parser.add_argument("--kill-min", type=float, default=0.2, help="earliest kill after start, seconds")
    # The simulator takes about a second to start: kills up to 3 s fall before, during and well after it.
    parser.add_argument("--kill-max", type=float, default=3.0, help="latest kill after start, seconds")
    args = parser.parse_args(argv)
    summary = soak(args.cycles, args.seed, args.keep, args.kill_min, args.kill_max,
                   log=lambda text: print(text, flush=True))
    for problem in summary["problems"]:
        print("PROBLEM:", problem, flush=True)
    print(f"{'OK' if summary['ok'] else 'FAILED'}: {summary['cycles']} kills, {summary['kept']} ratings kept, "
          f"{summary['thanked']} reached the thank-you screen, {summary['stored']} events stored once each "
          f"(seed {summary['seed']}, {summary.get('seconds', 0)} s)", flush=True)
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
