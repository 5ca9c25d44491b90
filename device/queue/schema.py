"""The outbox's SQLite file: connection settings, tables and transactions.

Kept apart from :mod:`device.queue.outbox` (delivery states and the chain) so
that what makes the file durable reads in one short place: ``journal_mode=WAL``
and ``synchronous=FULL`` are set and read back on every connection, and a
connection that will not take them is refused. FULL so that a power cut cannot
lose a rating we thanked somebody for.

The schema is created by the first open; tables added since (``lost``) are
created by the first open of the newer program, so an older file just gains them.
The file and its companions (``-wal``, ``-shm``, the witness) are private to
the device: mode 0600, in a folder of mode 0700.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator

from device.errors import StorageError
from device.records import GENESIS_HASH

logger = logging.getLogger(__name__)

#: The states of an event, in the ``state`` column.
PENDING, SENDING, DELIVERED, REJECTED = "pending", "sending", "delivered", "rejected"
STATES = (PENDING, SENDING, DELIVERED, REJECTED)

#: Pages in the WAL at which SQLite checkpoints by itself, on the press path: a
#: safety net only. In service the uploader's thread checkpoints much sooner
#: (``Outbox.checkpoint(passive=True)``, on a connection of its own).
WAL_AUTOCHECKPOINT_PAGES = 200

#: Files SQLite and the outbox keep beside the database, by suffix.
COMPANIONS = ("-wal", "-shm", "-witness", "-damage.log")


def prepare_file(path: str) -> None:
    """Make the database file private (0600) before SQLite opens it.

    SQLite gives ``-wal`` and ``-shm`` the mode of the database file, so
    this covers them too. An existing file that others could read is
    tightened (it holds staff names).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass


def prepare_directory(folder: str) -> None:
    """Make the outbox's folder (mode 0700), or tighten it if it is ours and open to others.

    A folder that others may write to (``/tmp``) or that belongs to someone
    else is left as it is: only the device's own data folder is tightened.

    Raises:
        OSError: the folder cannot be made.
    """
    os.makedirs(folder, mode=0o700, exist_ok=True)
    st = os.stat(folder)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid() and mode & 0o077 and not mode & (0o002 | stat.S_ISVTX):
        try:
            os.chmod(folder, 0o700)
        except OSError as e:
            logger.warning("outbox folder %s stays readable by others: %s", folder, e)


def lenient_text(raw: bytes) -> str:
    """Text from the file as SQLite holds it; bytes that are not UTF-8 come back as surrogates, never an error.

    A flipped bit inside a row (the commonest SD-card damage) must not make
    every read of it raise ``Could not decode to UTF-8``: the row is then
    read, found not to match its hash, and set aside (``encode("utf-8",
    "surrogateescape")`` gives the stored bytes back).
    """
    return raw.decode("utf-8", "surrogateescape")


def configure(conn: sqlite3.Connection, path: str) -> None:
    """Set the connection's durability and size settings.

    Raises:
        StorageError: SQLite did not take WAL and ``synchronous=FULL``.
        sqlite3.Error: the file cannot be read.
    """
    conn.text_factory = lenient_text
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    if mode.lower() != "wal" or sync != 2:
        raise StorageError(f"outbox {path}: journal_mode={mode}, synchronous={sync}; need wal and FULL (2)")
    conn.execute("PRAGMA busy_timeout=5000")
    # A small page cache: the outbox is read oldest-first and written at
    # the end, so a big cache buys nothing and costs resident memory.
    conn.execute("PRAGMA cache_size=-256")
    # Checkpoints are the uploader's work, on its own connection, after a
    # delivered batch: never on the press path. SQLite's own automatic
    # checkpoint stays as a safety net for a device that never uploads.
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")


def create(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables and indexes that are not there yet, in one transaction.

    Plain SQL, the same text sqlite-utils wrote when it made these tables (so
    files made before and after read the same): the library cost the device
    4 MB of resident memory for these few statements.
    """
    with immediate(conn, path):
        # ``body`` is the exact canonical JSON the event's ``hash`` was
        # taken over (without ``hash``, which has its own column): one
        # encoding per append, and the file can be checked byte for byte.
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "events" (\n'
            '   "seq" INTEGER PRIMARY KEY,\n'
            '   "id" TEXT NOT NULL,\n'
            '   "type" TEXT NOT NULL,\n'
            '   "body" TEXT NOT NULL,\n'
            '   "hash" TEXT NOT NULL,\n'
            f'   "state" TEXT NOT NULL DEFAULT \'{PENDING}\',\n'
            '   "attempts" INTEGER DEFAULT 0,\n'
            '   "error" TEXT,\n'
            '   "delivered_at" REAL\n'
            ')')
        # No index on ``id``: it cost a second page in the WAL with every append (5 KiB per
        # rating on an SD card, a third of what the outbox writes). Ids are UUIDv7 made here, the
        # hall is idempotent on them, and the outbox finds claimed events by seq (an id it did
        # not claim, rare, is found by a scan). Files made before lose the index once.
        conn.execute("DROP INDEX IF EXISTS idx_events_id")
        # No index on state for pending events: claims walk the primary
        # key from a cursor the outbox keeps in memory, so an append
        # writes one index less and marking delivered touches none.
        conn.execute("CREATE INDEX IF NOT EXISTS events_rejected ON events (seq) WHERE state = 'rejected'")
        # Runs of pruned seqs and the hash of each run's last event: the
        # chain continues across them, and past them when all is pruned.
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "pruned" (\n'
            '   "first" INTEGER PRIMARY KEY,\n'
            '   "last" INTEGER NOT NULL,\n'
            '   "last_hash" TEXT NOT NULL\n'
            ')')
        conn.execute('CREATE UNIQUE INDEX IF NOT EXISTS "idx_pruned_last"\n    ON "pruned" ("last")')
        # Small facts about the file. The uploader's checkpoint writes one after
        # copying the WAL in, so that the WAL restarts (and its header is flushed)
        # on the uploader's thread, not with the next press.
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "meta" (\n'
            '   "k" TEXT PRIMARY KEY,\n'
            '   "v" TEXT\n'
            ')')
        # Runs of seqs found missing (a lost WAL, a damaged page): the hash of
        # each run's last event where it is known, so the chain continues
        # across the hole and no seq is used again; ``delivered`` counts those
        # the hall had acknowledged, ``reason`` says what was found.
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "lost" (\n'
            '   "first" INTEGER PRIMARY KEY,\n'
            '   "last" INTEGER NOT NULL,\n'
            '   "last_hash" TEXT NOT NULL,\n'
            '   "delivered" INTEGER DEFAULT 0,\n'
            '   "reason" TEXT NOT NULL,\n'
            '   "found_at" TEXT\n'
            ')')


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


def note_device(conn: sqlite3.Connection, path: str, device_id: str) -> None:
    """Remember which device keeps this outbox (``meta``), once: a folder carried to another device is then known."""
    if conn.execute("SELECT 1 FROM meta WHERE k = 'device_id'").fetchone() is None:
        with immediate(conn, path):
            conn.execute("INSERT OR IGNORE INTO meta (k, v) VALUES ('device_id', ?)", [device_id])


def stored_device(conn: sqlite3.Connection) -> str:
    """The device that keeps this outbox: as its newest event says, else as ``meta`` says ("" if unknown).

    The newest event wins: a device given a new id while it runs (a technician's ``DeviceId`` and
    ``Commit``) seals its next events under the new id in the same outbox, which is still its own.
    """
    try:
        row = conn.execute("SELECT json_extract(body, '$.device_id') FROM events WHERE json_valid(body) "
                           "ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    if row is None or not row[0]:
        try:
            row = conn.execute("SELECT v FROM meta WHERE k = 'device_id'").fetchone()
        except sqlite3.Error:
            row = None
    return str(row[0]) if row and row[0] else ""


def own_device(conn: sqlite3.Connection, path: str, device_id: str) -> None:
    """Record ``device_id`` as this outbox's keeper (replacing an earlier id of the same device)."""
    with immediate(conn, path):
        conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('device_id', ?)",
                     [device_id])


def read_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, hash)`` of the last event ever appended: kept, pruned or recorded as lost."""
    head = (0, GENESIS_HASH)
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is not None:
        head = (row[0], row[1])
    for table in ("pruned", "lost"):
        row = conn.execute(f"SELECT last, last_hash FROM {table} ORDER BY last DESC LIMIT 1").fetchone()
        if row is not None and row[0] > head[0]:
            head = (row[0], row[1])
    return head


def runs(conn: sqlite3.Connection, table: str) -> list[tuple[int, int, str]]:
    """``[(first, last, last_hash)]`` of ``pruned`` or ``lost``, in order."""
    return [(r[0], r[1], r[2]) for r in conn.execute(f"SELECT first, last, last_hash FROM {table} ORDER BY first")]


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


class Checkpointer:
    """Copies the WAL into the database file on a connection of its own (the uploader's thread).

    A PASSIVE checkpoint never waits for the writer, so a press is never held
    up by it. Once the whole WAL is in the file, the next write starts the WAL
    over and flushes its new header: the checkpointer makes that write itself
    (a line in ``meta``), so the extra flush lands here and not on a press.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def run(self) -> tuple[int, bool]:
        """Checkpoint now; returns ``(pages copied, whether the whole WAL is in the file)``."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                    configure(self._conn, self.path)
                _busy, log, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if copied >= log:
                    self._conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('checkpoint', ?)",
                                       [datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")])
            except (sqlite3.Error, StorageError) as e:
                logger.warning("outbox checkpoint failed: %s", e)
                return 0, False
        return int(copied), copied >= log

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
