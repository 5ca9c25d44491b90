"""The outbox: every event, durably, until the hall server has it.

SQLite through sqlite-utils, one connection guarded by one lock (as huey's
storage does); the file's durability settings (WAL, ``synchronous=FULL``,
checked on every connection) and its tables are in :mod:`device.queue.schema`.
One commit per appended event.

States: ``pending`` -> ``sending`` -> ``delivered``, or ``rejected`` (a dead
letter: kept and visible, retried only on a technician's command). On open,
``sending`` goes back to ``pending``: a batch in flight when the power went
may or may not have arrived, and the server's idempotency on ``id`` makes
sending it again safe.

Pruning deletes delivered events only, oldest first, and records each run of
deleted ``seq`` numbers with the hash of its last event in ``pruned``, so the
chain stays checkable across the holes (``device.integrity``) and the next
append links to the right ``prev_hash`` even when every event was pruned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlite_utils

from device.errors import OutboxFull, StorageError
from device.queue import schema
from device.queue.schema import DELIVERED, PENDING, REJECTED, SENDING, STATES
from device.records import seal_text

logger = logging.getLogger(__name__)

#: Free disk below which appends are refused and rating pauses: room is left
#: for SQLite's WAL checkpoints, the logs and the system itself.
MIN_FREE_BYTES = 16 * 1024 * 1024
#: Share of ``max_events`` (and multiple of ``min_free_bytes``) at which the device warns.
LOW_FRACTION = 0.8
LOW_FREE_FACTOR = 4

#: Free disk is looked up at most this often on the append path.
DISK_CHECK_S = 1.0

# Fixed statement texts: sqlite3 keeps them prepared in its statement cache.
_INSERT = "INSERT INTO events (seq, id, type, body, hash, state) VALUES (?, ?, ?, ?, ?, 'pending')"

#: An event as stored and sent: the sealed record, ``hash`` included.
Event = dict[str, Any]

_T = TypeVar("_T")


class DiskSpace:
    """Free space on the filesystem that holds a directory.

    Args:
        directory: a directory on the filesystem.
        statvfs: ``os.statvfs``, injectable so tests can fake a full disk.
        clock: monotonic seconds, for :meth:`recent`.
    """

    def __init__(self, directory: str, statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._statvfs = statvfs
        self._clock = clock
        self._last: tuple[float, int | None] = (float("-inf"), None)

    def free(self) -> int | None:
        """Bytes free for us (not for root) now, or None if unknown."""
        try:
            st = self._statvfs(self.directory)
        except OSError:
            free = None
        else:
            free = st.f_bavail * st.f_frsize
        self._last = (self._clock(), free)
        return free

    def recent(self) -> int | None:
        """:meth:`free`, looked up again only after ``DISK_CHECK_S`` (the append path is hot)."""
        checked_at, free = self._last
        if self._clock() - checked_at > DISK_CHECK_S:
            free = self.free()
        return free


class Outbox:
    """Append-only event store with delivery states.

    Args:
        path: the SQLite file.
        max_events: undelivered events at which appends are refused.
        min_free_bytes: free disk below which appends are refused.
        low_free_bytes: free disk below which :meth:`storage_state` warns
            (default ``LOW_FREE_FACTOR * min_free_bytes``).
        statvfs: ``os.statvfs``, injectable so tests can fake a full disk.
        clock: monotonic seconds, for the free-disk cache (injectable like ``statvfs``).
    """

    def __init__(self, path: str | os.PathLike[str], max_events: int = 500_000, *,
                 min_free_bytes: int = MIN_FREE_BYTES, low_free_bytes: int | None = None,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = str(path)
        self.max_events = max_events
        self.min_free_bytes = min_free_bytes
        self.low_free_bytes = LOW_FREE_FACTOR * min_free_bytes if low_free_bytes is None else low_free_bytes
        self.directory = os.path.dirname(os.path.abspath(self.path))
        self._disk = DiskSpace(self.directory, statvfs, clock)
        self._lock = threading.RLock()
        try:
            os.makedirs(self.directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open outbox {self.path}: {e}") from e
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            schema.configure(conn, self.path)
            with self._lock:
                schema.create(self.db, self.path)
            self._recover()
            self._head = schema.read_head(conn)
            self._waiting = self._count_waiting()
            #: No pending event has a seq below this.
            self._cursor = self._lowest_pending()
        except (sqlite3.Error, StorageError) as e:
            conn.close()
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"cannot open outbox {self.path}: {e}") from e

    # --- set-up -----------------------------------------------------------

    def _recover(self) -> None:
        with self._lock, self._transaction():
            n = self._conn.execute(
                "UPDATE events SET state = ? WHERE state = ?", [PENDING, SENDING]).rowcount
        if n:
            logger.info("outbox: %d events were in flight at the last stop; sending them again", n)

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return schema.immediate(self._conn, self.path)

    def close(self) -> None:
        """Close the connection; the outbox cannot be used afterwards."""
        with self._lock:
            self.db.close()

    # --- writing ----------------------------------------------------------

    def append(self, fields: dict[str, Any]) -> Event:
        """Seal ``fields`` into the next event of the chain and keep it durably.

        Returns:
            The stored event (with ``seq``, ``prev_hash`` and ``hash``).

        Raises:
            OutboxFull: when ``max_events`` undelivered events are waiting or
                the disk is below ``min_free_bytes``.
            StorageError: when SQLite cannot write (disk full, I/O error).
        """
        with self._lock:
            if self._waiting >= self.max_events:
                raise OutboxFull(f"outbox full: {self._waiting} events waiting")
            free = self._disk.recent()
            if free is not None and free < self.min_free_bytes:
                raise OutboxFull(f"disk nearly full: {_mb(free)} free, {_mb(self.min_free_bytes)} kept in reserve")
            seq, prev = self._head
            event, text = seal_text(fields, seq + 1, prev)
            try:
                # One statement in autocommit mode: one transaction, one fsync.
                self._conn.execute(_INSERT, (event["seq"], event["id"], event["type"], text, event["hash"]))
            except sqlite3.Error as e:
                self._reload_head()
                raise StorageError(f"cannot write to outbox {self.path}: {e}") from e
            self._head = (event["seq"], event["hash"])
            self._waiting += 1
            return event

    def _reload_head(self) -> None:
        # After a failed write, trust the file rather than memory.
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._head = schema.read_head(self._conn)
        except sqlite3.Error:
            logger.exception("outbox: cannot re-read the chain head")

    def _lowest_pending(self) -> int:
        row = self._conn.execute("SELECT min(seq) FROM events WHERE state = 'pending'").fetchone()
        return int(row[0]) if row[0] is not None else self._head[0] + 1

    def _lower_cursor(self, where: str, args: Sequence[Any]) -> None:
        """Events matching ``where`` become pending: move the cursor back to them."""
        row = self._conn.execute(f"SELECT min(seq) FROM events WHERE {where}", args).fetchone()
        if row[0] is not None and row[0] < self._cursor:
            self._cursor = row[0]

    def claim(self, limit: int) -> list[Event]:
        """Mark up to ``limit`` oldest pending events as sending and return them."""
        with self._lock, self._transaction():
            rows = self._conn.execute(
                "SELECT seq, body, hash FROM events WHERE seq >= ? AND state = 'pending' ORDER BY seq LIMIT ?",
                (self._cursor, limit)).fetchall()
            if rows:
                self._conn.execute(
                    "UPDATE events SET state = 'sending', attempts = attempts + 1 "
                    "WHERE seq BETWEEN ? AND ? AND state = 'pending'", (rows[0][0], rows[-1][0]))
        if rows:
            self._cursor = rows[-1][0] + 1
        return [_load(body, digest) for _, body, digest in rows]

    def mark_delivered(self, ids: Iterable[str], now: float | None) -> int:
        """The server acknowledged these ids (accepted or duplicate).

        ``now`` (epoch seconds) starts the retention time; ``None`` when the
        wall clock is not trusted yet (see :meth:`stamp_delivered`).

        Returns:
            How many events changed state.
        """
        ids = list(ids)
        n = 0
        if not ids:
            return n
        with self._lock, self._transaction():
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                n += self._conn.execute(
                    f"UPDATE events SET state = ?, delivered_at = ? WHERE state IN (?, ?) AND id IN ({marks})",
                    [DELIVERED, now, SENDING, PENDING, *chunk]).rowcount
            self._waiting -= n
        return n

    def mark_rejected(self, rejections: Mapping[str, object]) -> int:
        """Dead letters: ``{id: error}``. Kept and visible, not retried by themselves.

        Returns:
            How many events became dead letters.
        """
        with self._lock, self._transaction():
            n = 0
            for event_id, error in rejections.items():
                n += self._conn.execute(
                    "UPDATE events SET state = ?, error = ? WHERE id = ? AND state IN (?, ?)",
                    [REJECTED, str(error)[:500], event_id, SENDING, PENDING]).rowcount
            self._waiting -= n
        return n

    def release(self, ids: Iterable[str]) -> None:
        """Put events that were not acknowledged back to pending."""
        ids = list(ids)
        if not ids:
            return
        with self._lock, self._transaction():
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                self._conn.execute(
                    f"UPDATE events SET state = ? WHERE state = ? AND id IN ({marks})",
                    [PENDING, SENDING, *chunk])
                self._lower_cursor(f"state = 'pending' AND id IN ({marks})", chunk)

    def retry_rejected(self) -> int:
        """A technician's command: send the dead letters again; returns how many."""
        with self._lock, self._transaction():
            self._lower_cursor("state = 'rejected'", [])
            n = self._conn.execute(
                "UPDATE events SET state = ?, error = NULL WHERE state = ?", [PENDING, REJECTED]).rowcount
            self._waiting += n
        return n

    def stamp_delivered(self, now: float) -> int:
        """Give events delivered while the clock was not synced a delivery time of ``now``.

        Returns:
            How many events were stamped.
        """
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE events SET delivered_at = ? WHERE state = ? AND delivered_at IS NULL",
                [now, DELIVERED]).rowcount

    def prune(self, older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` delivered events delivered before ``older_than``.

        Oldest first, in one transaction; each run of deleted seqs is
        recorded in ``pruned`` so the chain stays checkable. Undelivered and
        rejected events are never deleted.

        Returns:
            How many events were deleted.
        """
        with self._lock, self._transaction():
            rows = self._conn.execute(
                "SELECT seq, hash FROM events WHERE state = ? AND delivered_at < ? ORDER BY seq LIMIT ?",
                [DELIVERED, older_than, limit]).fetchall()
            if not rows:
                return 0
            seqs = [row[0] for row in rows]
            for chunk in _chunks(seqs, 500):
                self._conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
            start = 0
            for i, (seq, digest) in enumerate(rows):
                if i + 1 == len(rows) or rows[i + 1][0] != seq + 1:
                    schema.record_pruned(self._conn, rows[start][0], seq, digest)
                    start = i + 1
        return len(rows)

    # --- reading ----------------------------------------------------------

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
        with self._lock:
            # The state as a literal (checked above), so the partial index
            # ``events_rejected`` can answer the dead-letter count.
            return int(self._conn.execute(f"SELECT count(*) FROM events WHERE state = '{state}'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """``{state: count}`` for every state."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update(dict(rows))
        return counts

    def oldest_waiting(self) -> Event | None:
        """The oldest undelivered event, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT body, hash FROM events WHERE state IN (?, ?) ORDER BY seq LIMIT 1",
                [PENDING, SENDING]).fetchone()
        return _load(*row) if row else None

    def events(self, state: str | None = None) -> list[Event]:
        """All kept events in ``seq`` order (optionally of one state)."""
        with self._lock:
            if state is None:
                rows = self._conn.execute("SELECT body, hash FROM events ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT body, hash FROM events WHERE state = ? ORDER BY seq", [state]).fetchall()
        return [_load(body, digest) for body, digest in rows]

    def pruned_runs(self) -> list[tuple[int, int, str]]:
        """``[(first, last, last_hash)]`` of pruned seqs, in order."""
        with self._lock:
            return [(r[0], r[1], r[2]) for r in self._conn.execute(
                "SELECT first, last, last_hash FROM pruned ORDER BY first").fetchall()]

    def checkpoint(self) -> int:
        """Copy the WAL into the database (PASSIVE: never waits); returns pages copied."""
        with self._lock:
            try:
                _busy, _log, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as e:
                logger.warning("outbox checkpoint failed: %s", e)
                return 0
        return int(copied)

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    # --- capacity ---------------------------------------------------------

    def disk_free(self) -> int | None:
        """Bytes free for us on the outbox's filesystem, or None if unknown."""
        return self._disk.free()

    def storage_state(self) -> tuple[str, str]:
        """How close the outbox is to its limits.

        Returns:
            ``("ok", "")``, ``("low", reason)`` (warn: indicator, heartbeat) or
            ``("full", reason)`` (appends are refused: rating pauses).
        """
        waiting, free = self._waiting, self.disk_free()
        if waiting >= self.max_events:
            return "full", f"outbox full: {waiting} events waiting (limit {self.max_events})"
        if free is not None and free < self.min_free_bytes:
            return "full", f"disk full: {_mb(free)} free, {_mb(self.min_free_bytes)} kept in reserve"
        if waiting >= LOW_FRACTION * self.max_events:
            return "low", f"outbox nearly full: {waiting} of {self.max_events} events waiting"
        if free is not None and free < self.low_free_bytes:
            return "low", f"disk nearly full: {_mb(free)} free"
        return "ok", ""


def _load(body: str, digest: str) -> Event:
    """An event from its stored text and its ``hash`` column."""
    event: Event = json.loads(body)
    event["hash"] = digest
    return event


def _mb(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
