"""The outbox's SQLite file: connection settings, tables and transactions.

Kept apart from :mod:`device.queue.outbox` (delivery states and the chain) so
that what makes the file durable reads in one short place: ``journal_mode=WAL``
and ``synchronous=FULL`` are set and read back on every connection, and a
connection that will not take them is refused. FULL so that a power cut cannot
lose a rating we thanked somebody for.

The schema is created by the first open; no other file format has shipped.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator

import sqlite_utils

from device.errors import StorageError
from device.records import GENESIS_HASH

logger = logging.getLogger(__name__)

#: The states of an event, in the ``state`` column.
PENDING, SENDING, DELIVERED, REJECTED = "pending", "sending", "delivered", "rejected"
STATES = (PENDING, SENDING, DELIVERED, REJECTED)

#: Pages in the WAL that trigger a checkpoint (SQLite's default is 1000).
WAL_AUTOCHECKPOINT_PAGES = 200


def configure(conn: sqlite3.Connection, path: str) -> None:
    """Set the connection's durability and size settings.

    Raises:
        StorageError: SQLite did not take WAL and ``synchronous=FULL``.
        sqlite3.Error: the file cannot be read.
    """
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    if mode.lower() != "wal" or sync != 2:
        raise StorageError(f"outbox {path}: journal_mode={mode}, synchronous={sync}; need wal and FULL (2)")
    conn.execute("PRAGMA busy_timeout=5000")
    # A small page cache: the outbox is read oldest-first and written at
    # the end, so a big cache buys nothing and costs resident memory.
    conn.execute("PRAGMA cache_size=-256")
    # A small WAL is overwritten in place, so a commit's fsync need not also
    # grow the file. The loop checkpoints when the device is idle
    # (Outbox.checkpoint()), so in service a press seldom meets this automatic one.
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")


def create(db: sqlite_utils.Database, path: str) -> None:
    """Create the tables and indexes that are not there yet, in one transaction."""
    with immediate(db.conn, path):
        # ``body`` is the exact canonical JSON the event's ``hash`` was
        # taken over (without ``hash``, which has its own column): one
        # encoding per append, and the file can be checked byte for byte.
        db.table("events").create(
            {"seq": int, "id": str, "type": str, "body": str, "hash": str, "state": str,
             "attempts": int, "error": str, "delivered_at": float},
            pk="seq", not_null={"id", "type", "body", "hash", "state"},
            defaults={"state": PENDING, "attempts": 0}, if_not_exists=True)
        db.table("events").create_index(["id"], unique=True, if_not_exists=True)
        # No index on state for pending events: claims walk the primary
        # key from a cursor the outbox keeps in memory, so an append
        # writes one index less and marking delivered touches none.
        db.conn.execute("CREATE INDEX IF NOT EXISTS events_rejected ON events (seq) WHERE state = 'rejected'")
        # Runs of pruned seqs and the hash of each run's last event: the
        # chain continues across them, and past them when all is pruned.
        db.table("pruned").create({"first": int, "last": int, "last_hash": str}, pk="first",
                                  not_null={"last", "last_hash"}, if_not_exists=True)
        db.table("pruned").create_index(["last"], unique=True, if_not_exists=True)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection, path: str) -> Iterator[None]:
    """An IMMEDIATE transaction: the write lock is taken up front.

    Rolled back on any error, including a failed COMMIT (SQLITE_FULL), so
    the connection is never left inside a transaction. SQLite's errors
    leave as :class:`StorageError`.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("outbox: rollback failed")
        if isinstance(e, sqlite3.Error):
            raise StorageError(f"outbox {path}: {e}") from e
        raise


def read_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, hash)`` of the last event ever appended, kept or pruned."""
    head = (0, GENESIS_HASH)
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        head = (row[0], row[1])
    row = conn.execute("SELECT last, last_hash FROM pruned ORDER BY last DESC LIMIT 1").fetchone()
    if row is not None and row[0] > head[0]:
        head = (row[0], row[1])
    return head


def record_pruned(conn: sqlite3.Connection, first: int, last: int, last_hash: str) -> None:
    """Add the run ``first..last`` to ``pruned``, merging with neighbouring runs.

    Call inside the transaction that deletes the run's events.
    """
    right = conn.execute("SELECT last, last_hash FROM pruned WHERE first = ?", [last + 1]).fetchone()
    if right is not None:
        conn.execute("DELETE FROM pruned WHERE first = ?", [last + 1])
        last, last_hash = right
    left = conn.execute("SELECT first FROM pruned WHERE last = ?", [first - 1]).fetchone()
    if left is not None:
        conn.execute("UPDATE pruned SET last = ?, last_hash = ? WHERE first = ?", [last, last_hash, left[0]])
    else:
        conn.execute("INSERT INTO pruned (first, last, last_hash) VALUES (?, ?, ?)", [first, last, last_hash])
