"""What the outbox answers without changing anything: counts, events, runs.

Kept apart from :mod:`device.queue.outbox` (which writes) as the base class of
:class:`~device.queue.outbox.Outbox`. ``sending`` and delivered marks not yet
written live in the outbox's memory, so every answer here adds them to what
the file says.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from device.queue import repair, schema
from device.queue.schema import DELIVERED, PENDING, SENDING, STATES

#: An event as stored and sent: the sealed record, ``hash`` included.
Event = dict[str, Any]

_T = TypeVar("_T")


class OutboxReads:
    """The read side of the outbox (the attributes are the outbox's own)."""

    _lock: threading.RLock
    _conn: sqlite3.Connection
    _sending: dict[int, tuple[str, str]]
    _marks: dict[int, float | None]
    _skipped: set[int]
    _waiting: int
    _head: tuple[int, str]

    def waiting(self) -> int:
        """Undelivered, not rejected events (the backlog); kept in memory."""
        return self._waiting

    def _count_waiting(self) -> int:
        with self._lock:
            return int(self._conn.execute(
                "SELECT count(*) FROM events WHERE state IN (?, ?)", [PENDING, SENDING]).fetchone()[0])

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last event appended (``(0, 64 zeros)`` before the first)."""
        return self._head

    def count(self, state: str) -> int:
        """Events in one state.

        Raises:
            ValueError: not one of the four states.
        """
        if state not in STATES:
            raise ValueError(f"no such state: {state!r}")
        if state in (PENDING, SENDING, DELIVERED):
            return self.counts()[state]
        with self._lock:
            # The state as a literal, so the partial index ``events_rejected`` answers.
            return int(self._conn.execute("SELECT count(*) FROM events WHERE state = 'rejected'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """``{state: count}`` for every state."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
            sending, marked = len(self._sending), len(self._marks)
        counts = dict.fromkeys(STATES, 0)
        counts.update(dict(rows))
        counts[PENDING] -= sending + marked + len(self._skipped)
        counts[SENDING] += sending
        counts[DELIVERED] += marked
        return counts

    def oldest_waiting(self) -> Event | None:
        """The oldest undelivered event, or None."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id, body, hash FROM events WHERE state IN (?, ?) ORDER BY seq LIMIT ?",
                [PENDING, SENDING, len(self._marks) + len(self._skipped) + 1]).fetchall()
            for seq, event_id, body, digest in rows:
                if seq not in self._marks and seq not in self._skipped:
                    return load(seq, body, digest, event_id)
        return None

    def has_session(self, session_id: str) -> bool:
        """Whether a kept event belongs to this service session (it was rated or ended unrated).

        A scan, for the rare moments a session opens or a power cut is
        recovered, never on the press path. A row whose body is not JSON
        (set aside as damaged) is skipped, not an error.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM events WHERE CASE WHEN json_valid(body) "
                "THEN json_extract(body, '$.session_id') END = ? LIMIT 1", [session_id]).fetchone()
        return row is not None

    def events(self, state: str | None = None) -> list[Event]:
        """All kept events in ``seq`` order (optionally of one state)."""
        with self._lock:
            if state == SENDING:
                seqs = sorted(self._sending)
                rows = [r for chunk in chunks(seqs, 500) for r in self._conn.execute(
                    f"SELECT seq, id, body, hash FROM events WHERE seq IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY seq", chunk).fetchall()]
            elif state is None:
                rows = self._conn.execute("SELECT seq, id, body, hash FROM events ORDER BY seq").fetchall()
            elif state == DELIVERED:
                marked = sorted(self._marks)
                rows = self._conn.execute("SELECT seq, id, body, hash FROM events WHERE state = ? ORDER BY seq",
                                          [DELIVERED]).fetchall() + [r for chunk in chunks(marked, 500) for r in
                                                                     self._conn.execute(
                    f"SELECT seq, id, body, hash FROM events WHERE seq IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()]
                rows.sort()
            else:
                rows = self._conn.execute(
                    "SELECT seq, id, body, hash FROM events WHERE state = ? ORDER BY seq", [state]).fetchall()
                if state == PENDING:
                    rows = [r for r in rows if r[0] not in self._sending and r[0] not in self._marks
                            and r[0] not in self._skipped]
        return [load(seq, body, digest, event_id) for seq, event_id, body, digest in rows]

    def pruned_runs(self) -> list[tuple[int, int, str]]:
        """``[(first, last, last_hash)]`` of pruned seqs, in order."""
        with self._lock:
            return schema.runs(self._conn, "pruned")

    def lost_runs(self) -> list[tuple[int, int, str]]:
        """``[(first, last, last_hash)]`` of seqs found missing, in order."""
        with self._lock:
            return schema.runs(self._conn, "lost")

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def load(seq: int, body: str, digest: str, event_id: str = "") -> Event:
    """An event from its stored text and its ``hash`` column (a row that cannot be read: what is known, and why)."""
    event, why = repair.read_row(seq, body, digest)
    if event is None:
        return {"seq": seq, "id": event_id, "hash": digest, "damaged": why}
    return event


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
