"""``evaluator-verify`` / ``python -m device.integrity FILE...``: check stored event chains.

Reads, without changing anything, either the device's outbox database or a
hall server's database (the stand-in server's schema: one ``events`` table
with ``device_id``, ``seq``, ``id`` and the event as ``json``), and prints one
line per device: ``ok`` with the range of ``seq``, or the first break of the
chain (a ``seq`` gap or reuse, a ``prev_hash`` that does not link, a ``hash``
that does not match the event). SQLite's own ``PRAGMA integrity_check`` is run
first.

In an outbox, delivered events may have been pruned: the runs of pruned
``seq`` numbers are recorded with the hash of each run's last event, so a
pruned run is not a gap, and the chain is checked across it.

Exit status: 0 when every chain is whole, 1 at the first break (or a file
SQLite finds damaged), 2 when a file cannot be read or is neither kind.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device.records import GENESIS_HASH, event_hash


@dataclass
class ChainReport:
    """One device's chain in one file."""

    device_id: str
    events: int = 0
    first: int | None = None
    last: int | None = None
    pruned: int = 0
    break_seq: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """Whether the chain is whole."""
        return not self.problem

    def line(self) -> str:
        """The report as the one line ``evaluator-verify`` prints."""
        if self.problem:
            return f"{self.device_id}: BREAK at seq {self.break_seq}: {self.problem}"
        if not self.events and not self.pruned:
            return f"{self.device_id}: ok, no events"
        span = f"seq {self.first}..{self.last}" if self.events else "no events kept"
        pruned = f", {self.pruned} delivered events pruned before" if self.pruned else ""
        return f"{self.device_id}: ok, {self.events} events, {span}{pruned}"


class _Chain:
    """Walks one device's events in ``seq`` order; remembers the first break."""

    def __init__(self, device_id: str) -> None:
        self.report = ChainReport(device_id)
        self.expected, self.prev = 1, GENESIS_HASH

    def note_break(self, seq: Any, problem: str) -> None:
        """Record a break at ``seq`` unless an earlier one was found."""
        if not self.report.problem:
            self.report.break_seq, self.report.problem = seq, problem

    def pruned(self, first: int, last: int, last_hash: str) -> None:
        if self.report.problem:
            return
        if first != self.expected:
            self.note_break(first, _gap_text(self.expected, first) if first > self.expected
                        else f"pruned run {first}..{last} overlaps kept events")
            return
        self.report.pruned += last - first + 1
        self.expected, self.prev = last + 1, last_hash

    def event(self, event: dict[str, Any], stored_seq: int | None = None, stored_id: str | None = None) -> None:
        if self.report.problem:
            return
        seq = event.get("seq")
        if stored_seq is not None and seq != stored_seq:
            self.note_break(stored_seq, f"stored under seq {stored_seq} but the event says {seq}")
        elif stored_id is not None and event.get("id") != stored_id:
            self.note_break(seq, "stored under another id than the event's")
        elif not isinstance(seq, int) or seq < self.expected:
            self.note_break(seq, f"seq {seq} used again (expected {self.expected})")
        elif seq > self.expected:
            self.note_break(seq, _gap_text(self.expected, seq))
        elif event.get("prev_hash") != self.prev:
            which = "64 zeros" if seq == 1 else f"the hash of seq {seq - 1}"
            self.note_break(seq, f"prev_hash is not {which}")
        elif event.get("hash") != event_hash(event):
            self.note_break(seq, "hash does not match the event's contents")
        else:
            self._accept(seq, event["hash"])

    def _accept(self, seq: int, digest: str) -> None:
        r = self.report
        r.events += 1
        r.first = seq if r.first is None else r.first
        r.last = seq
        self.expected, self.prev = seq + 1, digest


def _gap_text(expected: int, found: int) -> str:
    missing = f"{expected}" if found == expected + 1 else f"{expected}..{found - 1}"
    return f"seq gap: missing {missing} (expected {expected}, found {found})"


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection; never creates the file or changes it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def kind_of(conn: sqlite3.Connection) -> str | None:
    """``"outbox"``, ``"server"`` or None for a database of neither kind."""
    columns = _columns(conn, "events")
    if {"seq", "id", "body", "hash", "state"} <= columns:
        return "outbox"
    if {"device_id", "seq", "id", "json"} <= columns:
        return "server"
    return None


def check_outbox(conn: sqlite3.Connection) -> list[ChainReport]:
    """The device's own outbox: one device, kept events and pruned runs."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    runs = conn.execute("SELECT first, last, last_hash FROM pruned ORDER BY first").fetchall() \
        if "pruned" in tables else []
    rows = conn.execute("SELECT seq, id, body, hash FROM events ORDER BY seq")
    chain = None
    items = iter(runs)
    run = next(items, None)
    for seq, event_id, body, digest in rows:
        event = _parse(body)
        event["hash"] = digest
        if chain is None:
            chain = _Chain(event.get("device_id") or "outbox")
        elif event.get("device_id") != chain.report.device_id:
            chain.note_break(seq, f"device_id {event.get('device_id')!r} in the outbox of {chain.report.device_id}")
        while run is not None and run[0] < seq:
            chain.pruned(*run)
            run = next(items, None)
        chain.event(event, stored_seq=seq, stored_id=event_id)
    if chain is None:
        chain = _Chain("outbox")
    while run is not None:
        chain.pruned(*run)
        run = next(items, None)
    return [chain.report]


def check_server(conn: sqlite3.Connection) -> list[ChainReport]:
    """A hall server's events: one chain per device, ``seq`` then arrival order."""
    reports: list[ChainReport] = []
    chain = None
    for device_id, seq, event_id, body in conn.execute(
            "SELECT device_id, seq, id, json FROM events ORDER BY device_id, seq, rowid"):
        if chain is None or chain.report.device_id != device_id:
            chain = _Chain(device_id)
            reports.append(chain.report)
        chain.event(_parse(body), stored_seq=seq, stored_id=event_id)
    return reports


def _parse(body: str) -> dict[str, Any]:
    """A stored event's JSON; an unreadable one is an empty event (and so a break)."""
    try:
        event = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return event if isinstance(event, dict) else {}


def verify(path: str | os.PathLike[str]) -> tuple[str, str, list[ChainReport]]:
    """Check one file.

    Returns:
        ``(kind, sqlite_check, [ChainReport])``; ``sqlite_check`` is ``"ok"``
        when SQLite finds the file sound.

    Raises:
        OSError, sqlite3.Error: the file cannot be read.
        ValueError: it is neither an outbox nor a hall server database.
    """
    conn = open_readonly(path)
    try:
        sqlite_check = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        kind = kind_of(conn)
        if kind is None:
            raise ValueError(f"{path}: neither an outbox nor a hall server database")
        reports = check_outbox(conn) if kind == "outbox" else check_server(conn)
    finally:
        conn.close()
    return kind, sqlite_check, reports


def main(argv: Sequence[str] | None = None) -> int:
    """The ``evaluator-verify`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="evaluator-verify", description="Check the hash chains and seq numbers in an outbox "
        "or hall server database; prints one line per device, exits 1 at a break.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            kind, sqlite_check, reports = verify(path)
        except (OSError, sqlite3.Error, ValueError) as e:
            print(f"evaluator-verify: {path}: {e}", file=sys.stderr)
            status = max(status, 2)
            continue
        prefix = f"{path}: " if len(args.files) > 1 else ""
        if sqlite_check != "ok":
            print(f"{prefix}sqlite integrity_check: {sqlite_check}")
            status = max(status, 1)
        if not reports:
            print(f"{prefix}no events ({kind} database)")
        for report in reports:
            print(prefix + report.line())
            if not report.ok:
                status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
