"""The outbox: every event, durably, until the hall server has it.

SQLite through sqlite-utils, one connection guarded by one lock (as huey's
storage does), ``journal_mode=WAL`` and ``synchronous=FULL`` set and checked
on every connection: FULL so that a power cut cannot lose a rating we
thanked somebody for. One commit per appended event.

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

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time

import sqlite_utils

from device.errors import StorageError
from device.records import GENESIS_HASH, seal_text

logger = logging.getLogger(__name__)

PENDING, SENDING, DELIVERED, REJECTED = "pending", "sending", "delivered", "rejected"

#: Free disk below which appends are refused and rating pauses: room is left
#: for SQLite's WAL checkpoints, the logs and the system itself.
MIN_FREE_BYTES = 16 * 1024 * 1024
#: Share of ``max_events`` (and multiple of ``min_free_bytes``) at which the device warns.
LOW_FRACTION = 0.8
LOW_FREE_FACTOR = 4

#: Pages in the WAL that trigger a checkpoint (SQLite's default is 1000).
WAL_AUTOCHECKPOINT_PAGES = 200
#: Free disk is looked up at most this often on the append path.
DISK_CHECK_S = 1.0

# Fixed statement texts: sqlite3 keeps them prepared in its statement cache.
_INSERT = "INSERT INTO events (seq, id, type, body, hash, state) VALUES (?, ?, ?, ?, ?, 'pending')"


class OutboxFull(StorageError):
    """The outbox holds ``max_events`` undelivered events, or the disk is nearly full."""


class Outbox:
    """Append-only event store with delivery states.

    Args:
        path: the SQLite file.
        max_events: undelivered events at which appends are refused.
        min_free_bytes: free disk below which appends are refused.
        low_free_bytes: free disk below which :meth:`storage_state` warns
            (default ``LOW_FREE_FACTOR * min_free_bytes``).
        statvfs: ``os.statvfs``, injectable so tests can fake a full disk.
    """

    def __init__(self, path, max_events=500_000, *, min_free_bytes=MIN_FREE_BYTES,
                 low_free_bytes=None, statvfs=os.statvfs):
        self.path = str(path)
        self.max_events = max_events
        self.min_free_bytes = min_free_bytes
        self.low_free_bytes = LOW_FREE_FACTOR * min_free_bytes if low_free_bytes is None else low_free_bytes
        self._statvfs = statvfs
        self._disk = (float("-inf"), None)
        self.directory = os.path.dirname(os.path.abspath(self.path))
        self._lock = threading.RLock()
        try:
            os.makedirs(self.directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open outbox {self.path}: {e}") from e
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            self._configure()
            self._create()
            self._recover()
            self._head = self._read_head()
            self._waiting = self._count_waiting()
            #: No pending event has a seq below this.
            self._cursor = self._lowest_pending()
        except (sqlite3.Error, StorageError) as e:
            conn.close()
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"cannot open outbox {self.path}: {e}") from e

    # --- set-up -----------------------------------------------------------

    def _configure(self):
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        self._conn.execute("PRAGMA synchronous=FULL")
        sync = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        if mode.lower() != "wal" or sync != 2:
            raise StorageError(
                f"outbox {self.path}: journal_mode={mode}, synchronous={sync}; need wal and FULL (2)")
        self._conn.execute("PRAGMA busy_timeout=5000")
        # A small page cache: the outbox is read oldest-first and written at
        # the end, so a big cache buys nothing and costs resident memory.
        self._conn.execute("PRAGMA cache_size=-256")
        # A small WAL is overwritten in place, so a commit's fsync need not also
        # grow the file. The app checkpoints when the device is idle
        # (checkpoint()), so in service a press seldom meets this automatic one.
        self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")

    def _create(self):
        with self._lock, self._transaction():
            # ``body`` is the exact canonical JSON the event's ``hash`` was
            # taken over (without ``hash``, which has its own column): one
            # encoding per append, and the file can be checked byte for byte.
            self.db["events"].create(
                {"seq": int, "id": str, "type": str, "body": str, "hash": str, "state": str,
                 "attempts": int, "error": str, "delivered_at": float},
                pk="seq", not_null={"id", "type", "body", "state"},
                defaults={"state": PENDING, "attempts": 0}, if_not_exists=True)
            if "hash" not in self.db["events"].columns_dict:  # a file from before the column
                self._conn.execute("ALTER TABLE events ADD COLUMN hash TEXT")
            self.db["events"].create_index(["id"], unique=True, if_not_exists=True)
            # No index on state for pending events: claims walk the primary
            # key from a cursor kept in memory (``_cursor``), so an append
            # writes one index less and marking delivered touches none.
            self._conn.execute("DROP INDEX IF EXISTS idx_events_state_seq")
            self._conn.execute("DROP INDEX IF EXISTS events_pending")
            self._conn.execute("CREATE INDEX IF NOT EXISTS events_rejected ON events (seq) "
                               "WHERE state = 'rejected'")
            # Runs of pruned seqs and the hash of each run's last event: the
            # chain continues across them, and past them when all is pruned.
            self.db["pruned"].create({"first": int, "last": int, "last_hash": str}, pk="first",
                                     not_null={"last", "last_hash"}, if_not_exists=True)
            self.db["pruned"].create_index(["last"], unique=True, if_not_exists=True)
            # Older files kept the chain head here; still read, no longer written.

    def _recover(self):
        with self._lock, self._transaction():
            n = self._conn.execute(
                "UPDATE events SET state = ? WHERE state = ?", [PENDING, SENDING]).rowcount
        if n:
            logger.info("outbox: %d events were in flight at the last stop; sending them again", n)

    def _read_head(self):
        """``(seq, hash)`` of the last event ever appended, kept or pruned."""
        head = (0, GENESIS_HASH)
        row = self._conn.execute("SELECT seq, body, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            head = (row[0], _load(row[1], row[2])["hash"])
        row = self._conn.execute("SELECT last, last_hash FROM pruned ORDER BY last DESC LIMIT 1").fetchone()
        if row is not None and row[0] > head[0]:
            head = (row[0], row[1])
        return head

    @contextlib.contextmanager
    def _transaction(self):
        """An IMMEDIATE transaction: the write lock is taken up front.

        Rolled back on any error, including a failed COMMIT (SQLITE_FULL), so
        the connection is never left inside a transaction. SQLite's errors
        leave as :class:`StorageError`.
        """
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except BaseException as e:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("outbox: rollback failed")
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"outbox {self.path}: {e}") from e
            raise

    def close(self):
        with self._lock:
            self.db.close()

    # --- writing ----------------------------------------------------------

    def append(self, fields):
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
            free = self._recent_disk_free()
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

    def _reload_head(self):
        # After a failed write, trust the file rather than memory.
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._head = self._read_head()
        except sqlite3.Error:
            logger.exception("outbox: cannot re-read the chain head")

    def _lowest_pending(self):
        row = self._conn.execute("SELECT min(seq) FROM events WHERE state = 'pending'").fetchone()
        return row[0] if row[0] is not None else self._head[0] + 1

    def _lower_cursor(self, where, args):
        """Events matching ``where`` become pending: move the cursor back to them."""
        row = self._conn.execute(f"SELECT min(seq) FROM events WHERE {where}", args).fetchone()
        if row[0] is not None and row[0] < self._cursor:
            self._cursor = row[0]

    def claim(self, limit):
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

    def mark_delivered(self, ids, now):
        """The server acknowledged these ids (accepted or duplicate).

        ``now`` (epoch seconds) starts the retention time; ``None`` when the
        wall clock is not trusted yet (see :meth:`stamp_delivered`).
        """
        return self._set_state(ids, DELIVERED, delivered_at=now)

    def mark_rejected(self, rejections):
        """Dead letters: ``{id: error}``. Kept and visible, not retried by themselves."""
        with self._lock, self._transaction():
            n = 0
            for event_id, error in rejections.items():
                n += self._conn.execute(
                    "UPDATE events SET state = ?, error = ? WHERE id = ? AND state IN (?, ?)",
                    [REJECTED, str(error)[:500], event_id, SENDING, PENDING]).rowcount
            self._waiting -= n
        return n

    def release(self, ids):
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

    def retry_rejected(self):
        """A technician's command: send the dead letters again."""
        with self._lock, self._transaction():
            self._lower_cursor("state = 'rejected'", [])
            n = self._conn.execute(
                "UPDATE events SET state = ?, error = NULL WHERE state = ?", [PENDING, REJECTED]).rowcount
            self._waiting += n
        return n

    def _set_state(self, ids, state, delivered_at=None):
        ids = list(ids)
        n = 0
        if not ids:
            return n
        with self._lock, self._transaction():
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                n += self._conn.execute(
                    f"UPDATE events SET state = ?, delivered_at = ? WHERE state IN (?, ?) AND id IN ({marks})",
                    [state, delivered_at, SENDING, PENDING, *chunk]).rowcount
            self._waiting -= n
        return n

    def stamp_delivered(self, now):
        """Give events delivered while the clock was not synced a delivery time of ``now``."""
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE events SET delivered_at = ? WHERE state = ? AND delivered_at IS NULL",
                [now, DELIVERED]).rowcount

    def prune(self, older_than, limit=1000):
        """Delete up to ``limit`` delivered events delivered before ``older_than``.

        Oldest first, in one transaction; each run of deleted seqs is
        recorded in ``pruned`` so the chain stays checkable. Undelivered and
        rejected events are never deleted.

        Returns:
            How many events were deleted.
        """
        with self._lock, self._transaction():
            rows = self._conn.execute(
                "SELECT seq, body, hash FROM events WHERE state = ? AND delivered_at < ? ORDER BY seq LIMIT ?",
                [DELIVERED, older_than, limit]).fetchall()
            if not rows:
                return 0
            seqs = [row[0] for row in rows]
            for chunk in _chunks(seqs, 500):
                self._conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
            start = 0
            for i, (seq, body, digest) in enumerate(rows):
                if i + 1 == len(rows) or rows[i + 1][0] != seq + 1:
                    self._record_pruned(rows[start][0], seq, _load(body, digest)["hash"])
                    start = i + 1
        return len(rows)

    def _record_pruned(self, first, last, last_hash):
        """Add the run ``first..last`` to ``pruned``, merging with neighbouring runs."""
        right = self._conn.execute("SELECT last, last_hash FROM pruned WHERE first = ?", [last + 1]).fetchone()
        if right is not None:
            self._conn.execute("DELETE FROM pruned WHERE first = ?", [last + 1])
            last, last_hash = right
        left = self._conn.execute("SELECT first FROM pruned WHERE last = ?", [first - 1]).fetchone()
        if left is not None:
            self._conn.execute("UPDATE pruned SET last = ?, last_hash = ? WHERE first = ?",
                               [last, last_hash, left[0]])
        else:
            self._conn.execute("INSERT INTO pruned (first, last, last_hash) VALUES (?, ?, ?)",
                               [first, last, last_hash])

    # --- reading ----------------------------------------------------------

    def waiting(self):
        """Undelivered, not rejected events (the backlog); kept in memory."""
        return self._waiting

    def _count_waiting(self):
        with self._lock:
            return self._conn.execute(
                "SELECT count(*) FROM events WHERE state IN (?, ?)", [PENDING, SENDING]).fetchone()[0]

    def head(self):
        """``(seq, hash)`` of the last event appended (``(0, 64 zeros)`` before the first)."""
        return self._head

    def count(self, state):
        """Events in one state (through the state index, without a full scan)."""
        if state not in (PENDING, SENDING, DELIVERED, REJECTED):
            raise ValueError(f"no such state: {state!r}")
        with self._lock:
            # The state as a literal, so the partial indexes can serve it.
            return self._conn.execute(f"SELECT count(*) FROM events WHERE state = '{state}'").fetchone()[0]

    def counts(self):
        """``{state: count}`` for every state."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
        counts = {PENDING: 0, SENDING: 0, DELIVERED: 0, REJECTED: 0}
        counts.update(dict(rows))
        return counts

    def oldest_waiting(self):
        """The oldest undelivered event, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT body, hash FROM events WHERE state IN (?, ?) ORDER BY seq LIMIT 1",
                [PENDING, SENDING]).fetchone()
        return _load(*row) if row else None

    def events(self, state=None):
        """All kept events in ``seq`` order (optionally of one state)."""
        with self._lock:
            if state is None:
                rows = self._conn.execute("SELECT body, hash FROM events ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT body, hash FROM events WHERE state = ? ORDER BY seq", [state]).fetchall()
        return [_load(body, digest) for body, digest in rows]

    def pruned_runs(self):
        """``[(first, last, last_hash)]`` of pruned seqs, in order."""
        with self._lock:
            return [tuple(r) for r in self._conn.execute(
                "SELECT first, last, last_hash FROM pruned ORDER BY first").fetchall()]

    def checkpoint(self):
        """Copy the WAL into the database (PASSIVE: never waits); returns pages copied."""
        with self._lock:
            try:
                _busy, _log, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as e:
                logger.warning("outbox checkpoint failed: %s", e)
                return 0
        return copied

    def integrity_check(self):
        """SQLite's own ``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        with self._lock:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    # --- capacity ---------------------------------------------------------

    def disk_free(self):
        """Bytes free for us on the outbox's filesystem, or None if unknown."""
        try:
            st = self._statvfs(self.directory)
        except OSError:
            free = None
        else:
            free = st.f_bavail * st.f_frsize
        self._disk = (time.monotonic(), free)
        return free

    def _recent_disk_free(self):
        checked_at, free = self._disk
        if time.monotonic() - checked_at > DISK_CHECK_S:
            free = self.disk_free()
        return free

    def storage_state(self):
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


def _load(body, digest):
    """An event from its stored text and hash column (older rows carry ``hash`` inside)."""
    event = json.loads(body)
    if digest is not None:
        event["hash"] = digest
    return event


def _mb(n):
    return f"{n / (1024 * 1024):.1f} MB"


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]
