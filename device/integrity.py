"""``evaluator-verify`` / ``python -m device.integrity FILE...``: check stored event chains.

Reads, without changing anything, either the device's outbox database or a
hall server's database (the stand-in server's schema: one ``events`` table
with ``device_id``, ``seq``, ``id`` and the event as ``json``), and prints
per device a line ``ok`` with the range of ``seq``, or the first break of the
chain; then a line for each kind of damage with its count:

* ``missing``: seqs neither kept, pruned nor recorded as lost;
* ``altered``: events whose contents do not match their ``hash``;
* ``unlinked``: events whose ``prev_hash`` is not the hash before them;
* ``reused``: a ``seq`` stored twice (a hall's database);
* ``lost``: runs of seqs the device itself found missing and recorded
  (a lost WAL, a damaged page), with how many of them the hall had;
* ``set aside``: rows the device could not read, kept as dead letters;
* ``dead letters``: events the hall refused for good (not ``seq_taken``);
* ``gaps``: ``gap`` events in the chain, each the device's record of sealed
  events it can no longer deliver (``from_seq``, ``to_seq``, ``count``, ``reason``);
* the damage counts the device keeps in its witness beside the file
  (``<outbox>-witness``), and the head it witnessed against the file's;
* ``rewritten``: with ``--hall DB``, events whose hash differs from the
  hall's copy, for every event the hall holds. A history rewritten and
  re-chained on the device passes every check on its own; only the hashes
  the hall holds catch it.

SQLite's own ``PRAGMA integrity_check`` is run first. In an outbox, delivered
events may have been pruned: the runs of pruned ``seq`` numbers are recorded
with the hash of each run's last event, so a pruned run is not a gap.

Exit status: 0 when every chain is whole and nothing was lost, 1 at any
break or damage (or a file SQLite finds damaged), 2 when a file cannot be
read or is neither kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device import __version__
from device.queue import witness
from device.records import GENESIS_HASH, event_hash

#: The damage kinds counted on a chain, in the order they are printed.
COUNTS = ("missing", "altered", "unlinked", "reused", "foreign", "lost", "lost_delivered", "set_aside",
          "dead_letters", "gaps", "rewritten")
#: The start of the ``reason`` of a ``lost`` run the device left when it sealed its undelivered events
#: again after the hall's head (``Outbox.reseal``): the hall holds those seqs, the chain links across.
HELD_BY_HALL = "held by the hall under other events"


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
    #: Damage by kind (:data:`COUNTS`), with the first seqs of each.
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    examples: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    #: Further lines: what the device recorded, the witness, the comparison with the hall.
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the chain is whole and nothing is missing or changed."""
        return not self.problem and not any(self.counts.values())

    def count(self, kind: str, seq: Any, n: int = 1) -> None:
        self.counts[kind] += n
        seen = self.examples.setdefault(kind, [])
        if isinstance(seq, int) and len(seen) < 5:
            seen.append(seq)

    def line(self) -> str:
        """The report's first line: ``ok`` with the range, or the first break."""
        if self.problem:
            return f"{self.device_id}: BREAK at seq {self.break_seq}: {self.problem}"
        if not self.events and not self.pruned:
            return f"{self.device_id}: ok, no events"
        span = f"seq {self.first}..{self.last}" if self.events else "no events kept"
        pruned = f", {self.pruned} delivered events pruned before" if self.pruned else ""
        return f"{self.device_id}: ok, {self.events} events, {span}{pruned}"

    def lines(self) -> list[str]:
        """Every line ``evaluator-verify`` prints for this chain: :meth:`line`, each count, the notes."""
        out = [self.line()]
        found = [f"{n} {kind.replace('_', ' ')}" + _examples(self.examples.get(kind, []))
                 for kind, n in self.counts.items() if n]
        if found:
            out.append(f"{self.device_id}: damage: " + ", ".join(found))
        out += [f"{self.device_id}: {note}" for note in self.notes]
        return out


def _examples(seqs: list[int]) -> str:
    return f" (seq {', '.join(map(str, seqs))}{', ...' if len(seqs) == 5 else ''})" if seqs else ""


class _Chain:
    """Walks one device's events in ``seq`` order; counts every break, remembers the first."""

    def __init__(self, device_id: str) -> None:
        self.report = ChainReport(device_id)
        self.expected: int = 1
        self.prev: str | None = GENESIS_HASH

    def note_break(self, seq: Any, problem: str) -> None:
        """Record a break at ``seq`` unless an earlier one was found."""
        if not self.report.problem:
            self.report.break_seq, self.report.problem = seq, problem

    def run(self, first: int, last: int, last_hash: str, kind: str = "pruned", delivered: int = 0) -> None:
        """A run of seqs not kept: pruned after delivery, or recorded as lost by the device."""
        if first > self.expected:
            self._gap(first)
        elif first < self.expected:
            self.note_break(first, f"{kind} run {first}..{last} overlaps kept events")
            return
        if kind == "pruned":
            self.report.pruned += last - first + 1
        elif kind == "held":
            self.report.notes.append(f"seq {first}..{last} are held by the hall under events of another copy of "
                                     "this folder; the device sealed its own again after them")
        else:
            self.report.count("lost", first, last - first + 1 - delivered)
            self.report.count("lost_delivered", first, delivered)
            self.note_break(first, f"seq {first}..{last} recorded as lost by the device")
        self.expected, self.prev = last + 1, last_hash or None

    def _gap(self, seq: int) -> None:
        self.note_break(seq, _gap_text(self.expected, seq))
        self.report.count("missing", self.expected, seq - self.expected)
        self.prev = None

    def event(self, event: dict[str, Any], stored_seq: int | None = None, stored_id: str | None = None) -> None:
        seq = event.get("seq")
        if stored_seq is not None and seq != stored_seq:
            self.note_break(stored_seq, f"stored under seq {stored_seq} but the event says {seq}")
            self.report.count("altered", stored_seq)
            self.expected, self.prev = stored_seq + 1, event.get("hash")
            return
        if stored_id is not None and event.get("id") != stored_id:
            self.note_break(seq, "stored under another id than the event's")
            self.report.count("altered", seq)
        if not isinstance(seq, int) or seq < self.expected:
            self.note_break(seq, f"seq {seq} used again (expected {self.expected})")
            self.report.count("reused", seq)
            return
        if seq > self.expected:
            self._gap(seq)
        if event.get("hash") != _hash_or_none(event):
            self.note_break(seq, "hash does not match the event's contents")
            self.report.count("altered", seq)
        elif self.prev is not None and event.get("prev_hash") != self.prev:
            which = "64 zeros" if seq == 1 else f"the hash of seq {seq - 1}"
            self.note_break(seq, f"prev_hash is not {which}")
            self.report.count("unlinked", seq)
        else:
            self._accept(seq)
        self.expected, self.prev = seq + 1, event.get("hash")

    def _accept(self, seq: int) -> None:
        r = self.report
        r.events += 1
        r.first = seq if r.first is None else r.first
        r.last = seq


def _hash_or_none(event: dict[str, Any]) -> str | None:
    """The event's hash, or None when its contents cannot even be encoded (a damaged row)."""
    try:
        return event_hash(event)
    except (UnicodeError, TypeError, ValueError):
        return None


def _gap_text(expected: int, found: int) -> str:
    missing = f"{expected}" if found == expected + 1 else f"{expected}..{found - 1}"
    return f"seq gap: missing {missing} (expected {expected}, found {found})"


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection; never creates the file or changes it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    # A row with bytes that are not UTF-8 is damage to report, not a reason to stop reading.
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    return conn


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


def _runs(conn: sqlite3.Connection, tables: set[str]) -> list[tuple[int, int, str, str, int]]:
    """Pruned and lost runs: ``(first, last, last_hash, kind, delivered)`` in order."""
    runs = []
    if "pruned" in tables:
        runs += [(a, b, h, "pruned", 0) for a, b, h in conn.execute("SELECT first, last, last_hash FROM pruned")]
    if "lost" in tables:
        reason = "reason" if "reason" in _columns(conn, "lost") else "''"
        runs += [(a, b, h, "held" if str(r or "").startswith(HELD_BY_HALL) else "lost", d or 0) for a, b, h, d, r in
                 conn.execute(f"SELECT first, last, last_hash, delivered, {reason} FROM lost")]
    return sorted(runs)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def check_outbox(conn: sqlite3.Connection) -> list[ChainReport]:
    """The device's own outbox: one device, kept events, pruned and lost runs, dead letters set aside."""
    tables = _tables(conn)
    runs = iter(_runs(conn, tables))
    run = next(runs, None)
    chain = None
    rows = conn.execute("SELECT seq, id, body, hash FROM events ORDER BY seq") if "events" in tables else []
    for seq, event_id, body, digest in rows:
        event = _parse(body)
        event["hash"] = digest
        if chain is None:
            chain = _Chain(event.get("device_id") or "outbox")
        elif event.get("device_id") not in (None, chain.report.device_id):
            chain.note_break(seq, f"device_id {event.get('device_id')!r} in the outbox of {chain.report.device_id}")
            chain.report.count("foreign", seq)
        while run is not None and run[0] < seq:
            chain.run(run[0], run[1], run[2], run[3], run[4])
            run = next(runs, None)
        chain.event(event, stored_seq=seq, stored_id=event_id)
        if event.get("type") == "gap":
            chain.report.count("gaps", seq)
    if chain is None:
        chain = _Chain("outbox")
    while run is not None:
        chain.run(run[0], run[1], run[2], run[3], run[4])
        run = next(runs, None)
    report = chain.report
    if "events" in tables:
        for (seq,) in conn.execute("SELECT seq FROM events WHERE state = 'rejected' AND error LIKE 'damaged:%' "
                                   "ORDER BY seq"):
            report.count("set_aside", seq)
        for (seq,) in conn.execute("SELECT seq FROM events WHERE state = 'rejected' AND (error IS NULL OR "
                                   "error NOT LIKE 'damaged:%') ORDER BY seq"):
            report.count("dead_letters", seq)
    return [report]


def check_server(conn: sqlite3.Connection) -> list[ChainReport]:
    """A hall server's events: one chain per device, ``seq`` then arrival order."""
    reports: list[ChainReport] = []
    chain = None
    for device_id, seq, event_id, body in conn.execute(
            "SELECT device_id, seq, id, json FROM events ORDER BY device_id, seq, rowid"):
        if chain is None or chain.report.device_id != device_id:
            chain = _Chain(device_id)
            reports.append(chain.report)
        event = _parse(body)
        chain.event(event, stored_seq=seq, stored_id=event_id)
        if event.get("type") == "gap":
            chain.report.count("gaps", seq)
    return reports


def _parse(body: str) -> dict[str, Any]:
    """A stored event's JSON; an unreadable one is an empty event (and so a break)."""
    try:
        event = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return event if isinstance(event, dict) else {}


def witness_notes(conn: sqlite3.Connection, path: str | os.PathLike[str], report: ChainReport, head: int) -> None:
    """What the device's witness beside an outbox says: its head against the file's, the damage it counted."""
    found, state = witness.read(os.fspath(path) + "-witness")
    if found == "missing":
        if head:
            report.notes.append("no witness beside the file: a lost WAL or a truncated file cannot be told")
        return
    if found == "damaged":
        report.notes.append("the witness beside the file is damaged")
        return
    if state.head.seq > head:
        missing = state.head.seq - head
        report.count("missing", head + 1, missing)
        report.notes.append(f"the witness saw seq {state.head.seq} committed; the file ends at seq {head}: "
                            f"{missing} events gone since the device last opened it")
    for what, point in (("committed", state.head), ("acknowledged", state.acked)):
        if point.seq and point.seq <= head:
            row = conn.execute("SELECT hash FROM events WHERE seq = ?", [point.seq]).fetchone() \
                if "events" in _tables(conn) else None
            if row is not None and row[0] != point.hash:
                report.count("rewritten", point.seq)
                report.notes.append(f"the event at seq {point.seq} is not the one the witness saw {what}")
    counts = state.counts
    if counts.any():
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.as_dict().items()
                          if v and k not in ("incidents", "last"))
        report.notes.append(f"damage the device counted: {shown} ({counts.incidents} incidents; last: {counts.last})")


def compare_with_hall(outbox: sqlite3.Connection, hall_path: str | os.PathLike[str],
                      report: ChainReport) -> None:
    """Count events whose hash differs from the hall's copy (``--hall``), for every event the hall holds."""
    hall = open_readonly(hall_path)
    try:
        if kind_of(hall) != "server":
            raise ValueError(f"{hall_path}: not a hall server database")
        theirs = {seq: _parse(body).get("hash") for seq, body in hall.execute(
            "SELECT seq, json FROM events WHERE device_id = ? ORDER BY seq, rowid", [report.device_id])}
    finally:
        hall.close()
    tables = _tables(outbox)
    ours = dict(outbox.execute("SELECT seq, hash FROM events")) if "events" in tables else {}
    ours.update({last: digest for _, last, digest, _, _ in _runs(outbox, tables) if digest})
    compared = 0
    for seq, digest in sorted(theirs.items()):
        mine = ours.get(seq)
        if mine is None:
            continue
        compared += 1
        if mine != digest:
            report.count("rewritten", seq)
    delivered_not_there = [seq for (seq,) in outbox.execute("SELECT seq FROM events WHERE state = 'delivered'")
                           if seq not in theirs] if "events" in tables else []
    line = f"against the hall ({os.path.basename(os.fspath(hall_path))}): {compared} of its {len(theirs)} " \
           f"events compared, {report.counts['rewritten']} differ"
    if delivered_not_there:
        line += f"; {len(delivered_not_there)} marked delivered here are not there"
    report.notes.append(line)


def verify(path: str | os.PathLike[str], hall: str | os.PathLike[str] | None = None
           ) -> tuple[str, str, list[ChainReport]]:
    """Check one file (and, for an outbox, compare it with a hall's database).

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
        if kind is None and os.path.exists(f"{os.fspath(path)}-witness"):
            kind = "outbox"  # its tables gone with a lost WAL: the witness still tells what was there
        if kind is None:
            raise ValueError(f"{path}: neither an outbox nor a hall server database")
        if kind == "outbox":
            reports = check_outbox(conn)
            head = max([reports[0].last or 0] + [r[1] for r in _runs(conn, _tables(conn))])
            witness_notes(conn, path, reports[0], head)
            if hall is not None:
                compare_with_hall(conn, hall, reports[0])
        else:
            reports = check_server(conn)
    finally:
        conn.close()
    return kind, sqlite_check, reports


def main(argv: Sequence[str] | None = None) -> int:
    """The ``evaluator-verify`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="evaluator-verify", description="Check the hash chains and seq numbers in an outbox "
        "or hall server database; prints per device the first break and each kind of damage with its "
        "count; exits 1 at any break or damage.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--hall", metavar="DB", help="the hall's database: every event it holds is compared "
                        "with the outbox's copy (a rewritten, re-chained history)")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            kind, sqlite_check, reports = verify(path, args.hall)
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
            for line in report.lines():
                print(prefix + line)
            if not report.ok:
                status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
