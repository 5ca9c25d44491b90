"""The hall's own SQLite: received events, their heads and flags, last heartbeats, rectified 差评.

**Never two events under one seq.** An event whose seq the hall holds for
the device under another id is not stored: it is rejected with
``seq_taken`` (the device seals it again after the hall's head), and noted
in ``flags``. An event id sent again is a ``duplicate``; sent again with
other content (apart from ``seq``, ``prev_hash`` and ``hash``, which sealing
it again changes) it is also flagged as a ``conflict``. A stored event that the
hall flagged (``prev_hash``, ``hash``, ``conflict``, ``gap``) carries the
problems in its ``flag`` column (NULL when clean), so the report lists it
apart and keeps it out of every figure (common interface 7).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hall import ledger
from hall.contract import GENESIS_HASH, SEQ_TAKEN, Event, canonical_json, event_hash

logger = logging.getLogger(__name__)

#: The problems that mark a stored event (its ``flag``).
CONFLICT = "conflict"
GAP = "gap"
#: Noted (not marking the event): an event held under one seq sent again, unchanged, under another.
RESEALED = "resealed_duplicate"
#: An event's chain fields: what sealing it again changes without changing the event.
_CHAIN_FIELDS = ("seq", "prev_hash", "hash")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, received_at TEXT NOT NULL, json TEXT NOT NULL,
    hash TEXT NOT NULL DEFAULT '', prev_hash TEXT NOT NULL DEFAULT '', flag TEXT);
CREATE INDEX IF NOT EXISTS events_device_seq ON events (device_id, seq);
CREATE TABLE IF NOT EXISTS heads (
    device_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flags (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, problem TEXT NOT NULL,
    detail TEXT NOT NULL, flagged_at TEXT NOT NULL, UNIQUE (id, problem));
CREATE TABLE IF NOT EXISTS heartbeats (
    device_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resolved (
    rating_id TEXT PRIMARY KEY, resolved_at TEXT NOT NULL, note TEXT NOT NULL);
"""


@dataclass
class Receipt:
    """What storing one batch did."""

    accepted: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    #: ``{"id", "error"}``: events not stored (``seq_taken``).
    rejected: list[dict[str, str]] = field(default_factory=list)
    #: ``{"id", "seq", "problem", "detail"}`` for each chain break found in this batch.
    flagged: list[dict[str, Any]] = field(default_factory=list)
    #: ``(seq, hash)``: the highest gapless seq held for the device after the batch.
    head: tuple[int, str] = (0, GENESIS_HASH)


class Storage:
    """One connection, one lock, WAL.

    ``id`` is UNIQUE, so a re-sent event can never be stored twice, whatever
    the threads do; ``(device_id, seq)`` is unique too (an index, on a
    database made since): an event whose seq is taken is rejected, never
    stored beside the first. An event that does not link to the event
    before it is stored all the same (never dropped) and flagged (never
    silently kept), see :meth:`store`.

    Args:
        path: the SQLite file (``":memory:"`` works).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        ledger.create_tables(self._db)  # the hall's own records beside the events: hall/ledger.py
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "hash" not in columns:  # a hall.db from before the chain was checked on receipt
            self._db.executescript("""
                ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
                ALTER TABLE events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
                UPDATE events SET hash = json_extract(json, '$.hash'),
                                  prev_hash = json_extract(json, '$.prev_hash');
            """)
        if "flag" not in columns:  # a hall.db from before events were marked
            self._db.executescript("""
                ALTER TABLE events ADD COLUMN flag TEXT;
                UPDATE events SET flag = (SELECT group_concat(problem, ',') FROM flags
                                          WHERE flags.id = events.id);
            """)
        try:
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_device_seq_once ON events (device_id, seq)")
        except sqlite3.IntegrityError:
            # A database from before seq_taken holds two events under one seq: kept as they are (flagged).
            logger.warning("the hall's database holds seqs used twice from before; new ones are refused")

    def store(self, device_id: str, events: Iterable[Event], received_at: str) -> Receipt:
        """Store a batch in one transaction, check its links, and move the device's head.

        Each newly stored event is checked against what the hall holds: its
        own ``hash``, a ``seq`` another event already uses, and its links to
        the events at ``seq - 1`` and ``seq + 1`` (whichever arrived first).
        A gap is not flagged here (the events may be on their way); the
        head stops at it, and :meth:`HallServer.integrity()
        <hall.HallServer.integrity>` names it.
        """
        receipt = Receipt()
        new: list[Event] = []
        flagged: list[dict[str, Any]] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                events = list(events)
                held = self._held_ids([e["id"] for e in events])
                taken = self._taken_seqs(device_id, [e["seq"] for e in events])
                rows = []
                for event in events:
                    if event["id"] in held:
                        receipt.duplicate.append(event["id"])
                        first = held[event["id"]]
                        if _content(first) != _content(event):
                            flagged.append({"id": event["id"], "seq": event["seq"], "problem": CONFLICT,
                                            "detail": "sent again with other content; the first kept"})
                        elif first.get("seq") != event["seq"]:
                            # Sealed again (after a seq_taken) though the hall had it: the same rating, noted.
                            self._note(device_id, {"id": event["id"], "seq": event["seq"], "problem": RESEALED,
                                                   "detail": f"held as seq {first.get('seq')}; sent again as seq "
                                                             f"{event['seq']}"}, received_at)
                        continue
                    if event["seq"] in taken:
                        receipt.rejected.append({"id": event["id"], "error": SEQ_TAKEN})
                        self._note(device_id, {"id": event["id"], "seq": event["seq"], "problem": SEQ_TAKEN,
                                               "detail": f"seq {event['seq']} is held under {taken[event['seq']]}"},
                                   received_at)
                        continue
                    text = json.dumps(event, ensure_ascii=False)
                    rows.append((device_id, event["seq"], event["id"], event["type"], received_at, text,
                                 event["hash"], event["prev_hash"]))
                    held[event["id"]] = event
                    taken[event["seq"]] = event["id"]
                    receipt.accepted.append(event["id"])
                    new.append(event)
                    if event["type"] == GAP:
                        flagged.append({"id": event["id"], "seq": event["seq"], "problem": GAP,
                                        "detail": _gap_detail(event)})
                self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)", rows)
                if new:
                    flagged += self._check_links(device_id, new)
                for flag in flagged:
                    self._note(device_id, flag, received_at)
                    self._mark(flag["id"], flag["problem"])
                receipt.flagged = flagged
                receipt.head = self._advance_head(device_id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return receipt

    def _held_ids(self, ids: list[str]) -> dict[str, Event]:
        """Id -> the held event, for each of ``ids`` already held."""
        held: dict[str, Event] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for id_, text in self._db.execute(f"SELECT id, json FROM events WHERE id IN ({marks})", part):
                held[id_] = json.loads(text)
        return held

    def _taken_seqs(self, device_id: str, seqs: list[int]) -> dict[int, str]:
        """Seq -> the id held under it, for each of ``seqs`` the device already used."""
        taken: dict[int, str] = {}
        for start in range(0, len(seqs), 500):
            part = seqs[start:start + 500]
            marks = ",".join("?" * len(part))
            for seq, id_ in self._db.execute(
                    f"SELECT seq, id FROM events WHERE device_id = ? AND seq IN ({marks})", [device_id, *part]):
                taken.setdefault(seq, id_)
        return taken

    def _note(self, device_id: str, flag: dict[str, Any], received_at: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO flags VALUES (?, ?, ?, ?, ?, ?)",
                         (device_id, flag["seq"], flag["id"], flag["problem"], flag["detail"], received_at))

    def _mark(self, event_id: str, problem: str) -> None:
        """Add ``problem`` to the stored event's ``flag``."""
        row = self._db.execute("SELECT flag FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            return
        problems = [p for p in (row[0] or "").split(",") if p]
        if problem not in problems:
            self._db.execute("UPDATE events SET flag = ? WHERE id = ?", (",".join([*problems, problem]), event_id))

    def _check_links(self, device_id: str, new: list[Event]) -> list[dict[str, Any]]:
        low = min(e["seq"] for e in new) - 1
        high = max(e["seq"] for e in new) + 1
        held: dict[int, list[tuple[str, str, str]]] = {}
        for seq, id_, digest, prev in self._db.execute(
                "SELECT seq, id, hash, prev_hash FROM events WHERE device_id = ? AND seq BETWEEN ? AND ? "
                "ORDER BY seq, rowid", (device_id, low, high)):
            held.setdefault(seq, []).append((id_, digest, prev))
        new_ids = {e["id"] for e in new}
        flags: list[dict[str, Any]] = []

        def flag(id_: str, seq: int, problem: str, detail: str) -> None:
            flags.append({"id": id_, "seq": seq, "problem": problem, "detail": detail})

        for event in new:
            seq, id_ = event["seq"], event["id"]
            if event["hash"] != event_hash(event):
                flag(id_, seq, "hash", "hash does not match the event's contents")
            first = held[seq][0]
            if first[0] != id_:
                flag(id_, seq, "duplicate_seq", f"seq {seq} is already used by {first[0]}")
                continue
            if seq == 1:
                if event["prev_hash"] != GENESIS_HASH:
                    flag(id_, seq, "prev_hash", "seq 1 must have prev_hash of 64 zeros")
            elif seq - 1 in held and held[seq - 1][0][1] != event["prev_hash"]:
                flag(id_, seq, "prev_hash", f"prev_hash does not match the hash of seq {seq - 1}")
            following = held.get(seq + 1)
            if following and following[0][0] not in new_ids and following[0][2] != event["hash"]:
                flag(following[0][0], seq + 1, "prev_hash", f"prev_hash does not match the hash of seq {seq}")
        return flags

    def _advance_head(self, device_id: str) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM heads WHERE device_id = ?", (device_id,)).fetchone()
        seq, digest = (row[0], row[1]) if row else (0, GENESIS_HASH)
        start = seq
        while True:
            rows = self._db.execute(
                "SELECT seq, hash FROM events WHERE device_id = ? AND seq > ? AND seq <= ? ORDER BY seq, rowid",
                (device_id, seq, seq + 1000)).fetchall()
            moved = False
            for found, found_hash in rows:
                if found == seq + 1:
                    seq, digest, moved = found, found_hash, True
                elif found > seq + 1:
                    break
            if not moved or seq < rows[-1][0]:
                break
        if seq != start:
            self._db.execute("INSERT OR REPLACE INTO heads VALUES (?, ?, ?)", (device_id, seq, digest))
        return seq, digest

    def head(self, device_id: str) -> tuple[int, str]:
        """``(seq, hash)`` of the highest gapless seq held for the device (``(0, zeros)``: none)."""
        with self._lock:
            row = self._db.execute("SELECT seq, hash FROM heads WHERE device_id = ?", (device_id,)).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    def flags(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Chain breaks flagged on receipt: ``{"device_id", "seq", "id", "problem", "detail", "flagged_at"}``."""
        sql = "SELECT device_id, seq, id, problem, detail, flagged_at FROM flags"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY device_id, seq, rowid", args).fetchall()
        keys = ("device_id", "seq", "id", "problem", "detail", "flagged_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def flagged_events(self, device_id: str | None = None) -> dict[str, str]:
        """Event id -> its ``flag`` (the problems, comma-separated), for every flagged event held."""
        sql = "SELECT id, flag FROM events WHERE flag IS NOT NULL"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " AND device_id = ?", (device_id,)
        with self._lock:
            return dict(self._db.execute(sql, args).fetchall())

    def events(self, device_id: str | None = None) -> list[Event]:
        """Stored events, ordered by device, then seq, then arrival."""
        sql = "SELECT json FROM events"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY device_id, seq, rowid", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def put_heartbeat(self, device_id: str, body: dict[str, Any], received_at: str) -> None:
        """Keep ``body`` as the device's last heartbeat."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                (device_id, received_at, json.dumps(body, ensure_ascii=False)),
            )

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Device id -> its last heartbeat body."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, json FROM heartbeats").fetchall()
        return {device_id: json.loads(body) for device_id, body in rows}

    def resolve(self, rating_id: str, note: str, resolved_at: str) -> None:
        """Record a 差评 as rectified."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO resolved VALUES (?, ?, ?)", (rating_id, resolved_at, note)
            )

    def resolved_ids(self) -> set[str]:
        """The ids of every rectified 差评."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT rating_id FROM resolved")}


    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._db.close()


def _gap_detail(event: Event) -> str:
    span = (f"seq {event.get('from_seq')}..{event.get('to_seq')}"
            if event.get("from_seq") is not None or event.get("to_seq") is not None else "seqs unknown")
    return f"{event.get('count')} events the device could not deliver ({event.get('reason')}, {span})"


def _content(event: Event) -> str:
    """An event's content apart from its place in the chain, canonical: what a conflict is judged on."""
    return canonical_json({k: v for k, v in event.items() if k not in _CHAIN_FIELDS})
