"""The outbox: every event, durably, until the hall server has it.

SQLite through sqlite-utils, one connection guarded by one lock (as huey's
storage does), ``journal_mode=WAL`` and ``synchronous=FULL`` set and checked
on every connection: FULL so that a power cut cannot lose a rating we
thanked somebody for.

States: ``pending`` -> ``sending`` -> ``delivered``, or ``rejected`` (a dead
letter: kept and visible, retried only on a technician's command). On open,
``sending`` goes back to ``pending``: a batch in flight when the power went
may or may not have arrived, and the server's idempotency on ``id`` makes
sending it again safe.
"""

import contextlib
import json
import logging
import os
import sqlite3
import threading

import sqlite_utils

from device.errors import StorageError
from device.records import GENESIS_HASH, seal

logger = logging.getLogger(__name__)

PENDING, SENDING, DELIVERED, REJECTED = "pending", "sending", "delivered", "rejected"


class OutboxFull(StorageError):
    """The outbox holds ``max_events`` undelivered events; rating must pause."""


class Outbox:
    """Append-only event store with delivery states.

    Args:
        path: the SQLite file.
        max_events: undelivered events at which appends are refused.
    """

    def __init__(self, path, max_events=500_000):
        self.path = str(path)
        self.max_events = max_events
        self._lock = threading.RLock()
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open outbox {self.path}: {e}") from e
        self.db = sqlite_utils.Database(conn)
        self._configure()
        self._create()
        self._recover()
        self._waiting = self._count_waiting()

    # --- set-up -----------------------------------------------------------

    def _configure(self):
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        self.db.execute("PRAGMA synchronous=FULL")
        sync = self.db.execute("PRAGMA synchronous").fetchone()[0]
        if mode.lower() != "wal" or sync != 2:
            raise StorageError(
                f"outbox {self.path}: journal_mode={mode}, synchronous={sync}; need wal and FULL (2)")
        self.db.execute("PRAGMA busy_timeout=5000")

    def _create(self):
        with self._lock, self._transaction():
            self.db["events"].create(
                {"seq": int, "id": str, "type": str, "body": str, "state": str,
                 "attempts": int, "error": str, "delivered_at": float},
                pk="seq", not_null={"id", "type", "body", "state"},
                defaults={"state": PENDING, "attempts": 0}, if_not_exists=True)
            self.db["events"].create_index(["id"], unique=True, if_not_exists=True)
            self.db["events"].create_index(["state", "seq"], if_not_exists=True)
            # The chain head lives apart from the events so that pruning
            # delivered events never breaks the chain for the next append.
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)

    def _recover(self):
        with self._lock, self._transaction():
            n = self.db.execute(
                "UPDATE events SET state = ? WHERE state = ?", [PENDING, SENDING]).rowcount
        if n:
            logger.info("outbox: %d events were in flight at the last stop; sending them again", n)

    @contextlib.contextmanager
    def _transaction(self):
        """An IMMEDIATE transaction: the write lock is taken up front."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def close(self):
        with self._lock:
            self.db.close()

    # --- writing ----------------------------------------------------------

    def append(self, fields):
        """Seal ``fields`` into the next event of the chain and keep it durably.

        Returns:
            The stored event (with ``seq``, ``prev_hash`` and ``hash``).

        Raises:
            OutboxFull: when ``max_events`` undelivered events are waiting.
            StorageError: when SQLite cannot write (disk full, I/O error).
        """
        with self._lock:
            if self._waiting >= self.max_events:
                raise OutboxFull(f"outbox full: {self._waiting} events waiting")
            try:
                with self._transaction():
                    seq, prev = self._head()
                    event = seal(fields, seq + 1, prev)
                    self.db.execute(
                        "INSERT INTO events (seq, id, type, body, state) VALUES (?, ?, ?, ?, ?)",
                        [event["seq"], event["id"], event["type"], json.dumps(event, ensure_ascii=False), PENDING])
                    self.db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)",
                        [json.dumps([event["seq"], event["hash"]])])
            except sqlite3.Error as e:
                raise StorageError(f"cannot write to outbox {self.path}: {e}") from e
            self._waiting += 1
            return event

    def _head(self):
        row = self.db.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
        if row is None:
            return 0, GENESIS_HASH
        seq, digest = json.loads(row[0])
        return seq, digest

    def claim(self, limit):
        """Mark up to ``limit`` oldest pending events as sending and return them."""
        with self._lock, self._transaction():
            rows = self.db.execute(
                "SELECT seq, body FROM events WHERE state = ? ORDER BY seq LIMIT ?",
                [PENDING, limit]).fetchall()
            if rows:
                self.db.execute(
                    "UPDATE events SET state = ?, attempts = attempts + 1 WHERE state = ? AND seq <= ?",
                    [SENDING, PENDING, rows[-1][0]])
        return [json.loads(body) for _, body in rows]

    def mark_delivered(self, ids, now):
        """The server acknowledged these ids (accepted or duplicate)."""
        return self._set_state(ids, DELIVERED, delivered_at=now)

    def mark_rejected(self, rejections):
        """Dead letters: ``{id: error}``. Kept and visible, not retried by themselves."""
        with self._lock, self._transaction():
            n = 0
            for event_id, error in rejections.items():
                n += self.db.execute(
                    "UPDATE events SET state = ?, error = ? WHERE id = ? AND state IN (?, ?)",
                    [REJECTED, str(error)[:500], event_id, SENDING, PENDING]).rowcount
            self._waiting -= n
        return n

    def release(self, ids):
        """Put events that were not acknowledged back to pending."""
        with self._lock, self._transaction():
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                self.db.execute(
                    f"UPDATE events SET state = ? WHERE state = ? AND id IN ({marks})",
                    [PENDING, SENDING, *chunk])

    def retry_rejected(self):
        """A technician's command: send the dead letters again."""
        with self._lock, self._transaction():
            n = self.db.execute(
                "UPDATE events SET state = ?, error = NULL WHERE state = ?", [PENDING, REJECTED]).rowcount
            self._waiting += n
        return n

    def _set_state(self, ids, state, delivered_at=None):
        n = 0
        with self._lock, self._transaction():
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                n += self.db.execute(
                    f"UPDATE events SET state = ?, delivered_at = ? WHERE state IN (?, ?) AND id IN ({marks})",
                    [state, delivered_at, SENDING, PENDING, *chunk]).rowcount
            self._waiting -= n
        return n

    def prune(self, older_than, limit=1000):
        """Delete up to ``limit`` delivered events delivered before ``older_than``."""
        with self._lock, self._transaction():
            return self.db.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE state = ? "
                "AND delivered_at < ? ORDER BY seq LIMIT ?)",
                [DELIVERED, older_than, limit]).rowcount

    # --- reading ----------------------------------------------------------

    def waiting(self):
        """Undelivered, not rejected events (the backlog); kept in memory."""
        return self._waiting

    def _count_waiting(self):
        with self._lock:
            return self.db.execute(
                "SELECT count(*) FROM events WHERE state IN (?, ?)", [PENDING, SENDING]).fetchone()[0]

    def counts(self):
        """``{state: count}`` for every state."""
        with self._lock:
            rows = self.db.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
        counts = {PENDING: 0, SENDING: 0, DELIVERED: 0, REJECTED: 0}
        counts.update(dict(rows))
        return counts

    def oldest_waiting(self):
        """The oldest undelivered event, or None."""
        with self._lock:
            row = self.db.execute(
                "SELECT body FROM events WHERE state IN (?, ?) ORDER BY seq LIMIT 1",
                [PENDING, SENDING]).fetchone()
        return json.loads(row[0]) if row else None

    def events(self, state=None):
        """All kept events in ``seq`` order (optionally of one state)."""
        with self._lock:
            if state is None:
                rows = self.db.execute("SELECT body FROM events ORDER BY seq").fetchall()
            else:
                rows = self.db.execute(
                    "SELECT body FROM events WHERE state = ? ORDER BY seq", [state]).fetchall()
        return [json.loads(body) for (body,) in rows]

    def integrity_check(self):
        """SQLite's own ``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        with self._lock:
            return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]
