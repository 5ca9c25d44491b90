"""The outbox: every event, durably, until the hall server has it.

SQLite through sqlite-utils, one connection guarded by one lock (as huey's
storage does); the file's durability settings (WAL, ``synchronous=FULL``,
checked on every connection) and its tables are in :mod:`device.queue.schema`.
One commit per appended event; checkpoints run on a second connection from
the uploader's thread (:meth:`Outbox.checkpoint`), never on the press path.

States: ``pending`` -> ``sending`` -> ``delivered``, or ``rejected`` (a dead
letter: kept and visible, retried only on a technician's command). ``sending``
lives in memory only: a claim writes nothing (so a full disk never stops
delivery), and after a restart everything not delivered is pending again,
which the server's idempotency on ``id`` makes safe to send again. For the
same reason a delivered mark need not be on disk at once: it is written with
the next append, in the same transaction and mostly on the same page (the
newest rows share the last leaf), or by the uploader's checkpoint when no
rating came for :data:`MARKS_FLUSH_S`; a power cut before that only sends the
event again. One page write and one flush per delivered rating are saved,
which an SD card that takes a rating a minute for years feels.

Damage is never silent (:mod:`device.queue.repair`, :mod:`device.queue.damage`):
at open SQLite's ``quick_check`` runs, the tail of the chain is checked, and
the head is compared with the witness kept beside the file and with the head
the hall last acknowledged. A database that fails the check is kept aside and
what can be read is copied into a new one; what went missing is recorded as
runs of lost seqs and counted, and no seq is ever used twice. A row that
cannot be read is set aside as a dead letter with the reason when it is
claimed, and never blocks the rows behind it. Every loss found becomes a
``gap`` event appended to the chain (``from_seq``, ``to_seq``, ``count``,
``reason``), delivered like any event, so the hall learns of it.
:meth:`Outbox.damage` gives the counts.

A data folder restored from an older copy, cloned, or carried over never
gives a seq the hall holds to another event: another device's outbox is
kept aside at open (``device_id``), the hall's head from each verified
answer moves ours past it (:meth:`Outbox.note_acknowledged_head`), and when
the hall answers ``seq_taken`` the undelivered events are sealed again after
its head (:meth:`Outbox.reseal`).

Pruning deletes delivered events only, oldest first, and records each run of
deleted ``seq`` numbers with the hash of its last event in ``pruned``, so the
chain stays checkable across the holes (``device.integrity``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from device.clock import Clocks
from device.errors import StorageDamaged, StorageError
from device.queue import repair, schema
from device.queue.damage import DamageBook
from device.queue.reading import Event, chunks
from device.queue.schema import DELIVERED, PENDING, REJECTED, SENDING
from device.queue.settle import OutboxSettlement
from device.queue.space import MIN_FREE_BYTES, Capacity, DiskSpace
from device.records import gap_fields, seal_text

logger = logging.getLogger(__name__)

#: Commits after which a passive checkpoint is worth its writes: each one copies
#: the pages changed since the last, so checkpointing after every delivered
#: rating would write the same page to the database again and again.
CHECKPOINT_COMMITS = 50
#: Delivered marks waiting for the next append are written by the uploader's checkpoint after this long.
MARKS_FLUSH_S = 10.0
#: ... or once this many wait.
MARKS_FLUSH_COUNT = 500
#: Ids appended lately, kept in memory: the same id appended again (a retried append) is refused.
#: The file has no index on ``id`` (it cost a page per append; see :func:`device.queue.schema.create`).
RECENT_IDS = 64

# Fixed statement texts: sqlite3 keeps them prepared in its statement cache.
_INSERT = "INSERT INTO events (seq, id, type, body, hash, state) VALUES (?, ?, ?, ?, ?, 'pending')"
_CLAIM = "SELECT seq, id, body, hash FROM events WHERE seq >= ? AND state = 'pending' ORDER BY seq LIMIT ?"

__all__ = ["MIN_FREE_BYTES", "DiskSpace", "Event", "Outbox"]


class Outbox(OutboxSettlement):
    """Append-only event store with delivery states.

    Args:
        path: the SQLite file.
        max_events: undelivered events at which appends are refused.
        min_free_bytes: free disk below which appends are refused.
        low_free_bytes: free disk below which :meth:`storage_state` warns
            (default ``LOW_FREE_FACTOR * min_free_bytes``).
        statvfs: ``os.statvfs``, injectable so tests can fake a full disk.
        clock: monotonic seconds, for the free-disk cache (injectable like ``statvfs``).
        device_id: the configured device id: an outbox kept by another device (a carried-over
            folder) is kept aside and a new one started; also the ``device_id`` of ``gap`` events
            (default: the newest event's).
        window_no: the configured window, for ``gap`` events (default: the newest event's).
        clocks: what stamps ``gap`` events (default: the system's clocks).

    Raises:
        StorageError: the file cannot be opened or made (a folder that cannot be written).
        StorageDamaged: the database could not be opened as it was: it was kept
            aside, what could be read was copied into a new one, and the next
            open uses that (the device shows the fault, in recovery, meanwhile).
    """

    def __init__(self, path: str | os.PathLike[str], max_events: int = 500_000, *,
                 min_free_bytes: int = MIN_FREE_BYTES, low_free_bytes: int | None = None,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
                 clock: Callable[[], float] = time.monotonic, device_id: str = "", window_no: str = "",
                 clocks: Clocks | None = None) -> None:
        self.path = str(path)
        self.directory = os.path.dirname(os.path.abspath(self.path))
        self.capacity = Capacity(DiskSpace(self.directory, statvfs, clock), max_events, min_free_bytes,
                                 low_free_bytes)
        self._lock = threading.RLock()
        #: Claimed and not yet settled: seq -> (id, hash); nothing of it is on disk.
        self._sending: dict[int, tuple[str, str]] = {}
        self._sending_ids: dict[str, int] = {}
        #: Delivered, the mark not written yet (the next append writes it): seq -> delivered_at.
        self._marks: dict[int, float | None] = {}
        self._marks_since = 0.0
        self._clock = clock
        #: Rows that could not be read and could not be marked either: never claimed again.
        self._skipped: set[int] = set()
        self._commits = 0
        self._recent_ids: collections.deque[str] = collections.deque(maxlen=RECENT_IDS)
        self._recent_set: set[str] = set()
        self._checkpointer = schema.Checkpointer(self.path)
        self.device_id, self.window_no = device_id, window_no
        self._clocks = clocks
        try:
            schema.prepare_directory(self.directory)
            moved = repair.adopt(self.path)
            foreign = repair.keep_foreign_aside(self.path, device_id) if device_id else None
            self.book = DamageBook(self.path)
        except OSError as e:
            raise StorageError(f"cannot open outbox {self.path}: {e.strerror or e}") from e
        if moved:
            logger.warning("outbox: %s", moved)
        if foreign is not None:
            self.book.incident(
                f"the data folder held the outbox of device {foreign.device_id!r}, not {device_id!r} (a carried-over "
                f"or swapped card): kept aside as {os.path.basename(foreign.aside)} with {foreign.undelivered} "
                "undelivered events; a new outbox started", foreign=1)
            self.book.gap(None, None, foreign.undelivered, "foreign_folder")
        self._witness_found = self.book.witness.found
        try:
            conn, unreadable = self.book.open_database(self._connect)
            self._conn = conn
            self.db = conn
            with self._lock:
                schema.create(conn, self.path)
            self._recover()
            self._head = self.book.check(conn)
            self._opened_head = self._head[0]
            self._waiting = self._count_waiting()
            #: No pending event has a seq below this.
            self._cursor = self._lowest_pending()
            if device_id:
                schema.note_device(conn, self.path, device_id)
            self._append_gaps()
        except BaseException as e:
            if hasattr(self, "_conn"):
                self._conn.close()
            self.book.close()
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"cannot open outbox {self.path}: {e}") from e
            raise
        if unreadable:
            self.close()
            raise StorageDamaged(unreadable)

    @property
    def max_events(self) -> int:
        return self.capacity.max_events

    # --- set-up -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        schema.prepare_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            schema.configure(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _recover(self) -> None:
        with self._lock, self._transaction():
            n = self._conn.execute(
                "UPDATE events SET state = ? WHERE state = ?", [PENDING, SENDING]).rowcount
        if n:
            logger.info("outbox: %d events were in flight at the last stop; sending them again", n)

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return schema.immediate(self._conn, self.path)

    def close(self) -> None:
        """Write what waits in memory, close the connections; the outbox cannot be used afterwards."""
        if hasattr(self, "_conn") and self.book.gaps:
            self._append_gaps()
        if hasattr(self, "_conn") and self._marks:
            try:
                self.flush_marks()
            except sqlite3.Error as e:
                logger.warning("outbox: delivered marks not written at close (sent again): %s", e)
        self._checkpointer.close()
        with self._lock:
            if hasattr(self, "db"):
                self.db.close()
            self.book.close()

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
            self.capacity.check_append(self._waiting)
            if self.book.gaps:
                self._append_gaps()
            return self._append(fields)

    def _append(self, fields: dict[str, Any]) -> Event:
        """Seal and keep ``fields`` (the lock held; capacity already checked)."""
        if fields.get("id") in self._recent_set:
            raise StorageError(f"outbox {self.path}: event id {fields['id']} was appended already")
        seq, prev = self._head
        event, text = seal_text(fields, seq + 1, prev)
        row = (event["seq"], event["id"], event["type"], text, event["hash"])
        try:
            if self._marks:
                # The delivered marks waiting in memory go in the same transaction (one fsync).
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(_INSERT, row)
                self._update_marks(self._marks)
                self._conn.execute("COMMIT")
                self._marks_written()
            else:
                # One statement in autocommit mode: one transaction, one fsync.
                self._conn.execute(_INSERT, row)
        except sqlite3.Error as e:
            self._reload_head()
            self.capacity.note_failure(e)
            raise StorageError(f"cannot write to outbox {self.path}: {e}") from e
        self._head = (event["seq"], event["hash"])
        if len(self._recent_ids) == RECENT_IDS:
            self._recent_set.discard(self._recent_ids[0])
        self._recent_ids.append(event["id"])
        self._recent_set.add(event["id"])
        # Beside the database, before anyone can claim the event (one pwrite, no fsync here).
        self.book.witness.note_head(event["seq"], event["hash"])
        self._waiting += 1
        self._commits += 1
        self.capacity.full_at = None
        return event

    def _append_gaps(self) -> None:
        """Append the ``gap`` events the damage book has due (a full disk: they wait for the next append)."""
        with self._lock:
            while self.book.gaps:
                first, last, count, reason = self.book.gaps[0]
                if self._clocks is None:
                    self._clocks = Clocks()
                device_id, window_no = self._origin()
                fields = gap_fields(self._clocks, device_id, window_no, first, last, count, reason)
                try:
                    event = self._append(fields)
                except StorageError as e:
                    logger.warning("outbox: gap event not written yet (%s)", e)
                    return
                self.book.gaps.pop(0)
                self.book.counts.gaps += 1
                self.book.witness.set_counts(self.book.counts)
                logger.warning("outbox: gap event kept as seq %d: %s, seq %s..%s, %d not delivered",
                               event["seq"], reason, first, last, count)

    def _origin(self) -> tuple[str, str]:
        """The device and window of ``gap`` events: as configured, else as the newest event says."""
        if self.device_id and self.window_no:
            return self.device_id, self.window_no
        row = self._conn.execute(
            "SELECT json_extract(body, '$.device_id'), json_extract(body, '$.window_no') FROM events "
            "WHERE json_valid(body) ORDER BY seq DESC LIMIT 1").fetchone()
        found = (str(row[0] or ""), str(row[1] or "")) if row else ("", "")
        return self.device_id or found[0], self.window_no or found[1]

    def _reload_head(self) -> None:
        # After a failed write, trust the file rather than memory.
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._head = max(self._head, schema.read_head(self._conn))
        except sqlite3.Error:
            logger.exception("outbox: cannot re-read the chain head")

    def _lowest_pending(self) -> int:
        row = self._conn.execute("SELECT min(seq) FROM events WHERE state = 'pending'").fetchone()
        return int(row[0]) if row[0] is not None else self._head[0] + 1

    def claim(self, limit: int) -> list[Event]:
        """Hand out up to ``limit`` oldest pending events as sending (nothing is written).

        A row that cannot be read is set aside as a dead letter with the
        reason and the rows behind it are handed out instead.
        """
        if self.book.gaps:
            self._append_gaps()
        # The witness of the last commit goes to disk here, on the uploader's thread.
        self.book.witness.sync()
        batch: list[Event] = []
        damaged: list[tuple[int, str]] = []
        with self._lock:
            skip = len(self._sending) + len(self._marks) + len(self._skipped)
            rows = self._conn.execute(_CLAIM, (self._cursor, limit + skip)).fetchall()
            scanned = self._cursor - 1
            for seq, _event_id, body, digest in rows:
                if len(batch) == limit:
                    break
                scanned = seq
                if seq in self._sending or seq in self._marks or seq in self._skipped:
                    continue
                event, why = repair.read_row(seq, body, digest)
                if event is None:
                    damaged.append((seq, why))
                    continue
                batch.append(event)
                self._sending[seq] = (event["id"], digest)
                self._sending_ids[event["id"]] = seq
            if damaged:
                self._set_aside(damaged)
            self._cursor = max(self._cursor, scanned + 1)
        return batch

    def _set_aside(self, damaged: list[tuple[int, str]]) -> None:
        """Rows that cannot be read: dead letters with the reason, never claimed again."""
        try:
            with self._transaction():
                for seq, why in damaged:
                    self._conn.execute("UPDATE events SET state = ?, error = ? WHERE seq = ?", [REJECTED, why, seq])
            self._commits += 1
        except StorageError as e:
            logger.warning("outbox: damaged rows not marked (%s); skipped until the next start", e)
            self._skipped.update(seq for seq, _ in damaged)
        self._waiting -= len(damaged)
        for seq, why in damaged:
            self.book.incident(f"the row of seq {seq} was set aside as a dead letter ({why})", set_aside=1)
            self.book.gap(seq, seq, 1, "unreadable_row")
        self._append_gaps()

    def stamp_delivered(self, now: float) -> int:
        """Give events delivered while the clock was not synced a delivery time of ``now``.

        Returns:
            How many events were stamped.
        """
        self.flush_marks()
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
        self.flush_marks()
        with self._lock, self._transaction():
            rows = self._conn.execute(
                "SELECT seq, hash FROM events WHERE state = ? AND delivered_at < ? ORDER BY seq LIMIT ?",
                [DELIVERED, older_than, limit]).fetchall()
            if not rows:
                return 0
            seqs = [row[0] for row in rows]
            for chunk in chunks(seqs, 500):
                self._conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
            start = 0
            for i, (seq, digest) in enumerate(rows):
                if i + 1 == len(rows) or rows[i + 1][0] != seq + 1:
                    schema.record_pruned(self._conn, rows[start][0], seq, digest)
                    start = i + 1
        return len(rows)

    # --- the hall's view --------------------------------------------------------

    def note_acknowledged_head(self, seq: int, digest: str) -> None:
        """The hall's head from a verified answer: its highest gapless ``seq`` and that event's ``hash``.

        A different hash for that seq here means the history was rewritten
        (here or there); a head beyond ours means the hall holds events this
        outbox lost without noticing (its witness gone too): they are recorded
        as lost, and the next seq follows the hall's so none is used twice.
        """
        if seq <= 0:
            return
        with self._lock:
            opened = self._opened_head
            self._head = self.book.hall_head(self._conn, self._head, opened, seq, digest)
            if self.book.gaps and self._conn.execute(
                    "SELECT 1 FROM events WHERE state = 'pending' AND seq > ? AND seq <= ? LIMIT 1",
                    [opened, seq]).fetchone() is None:
                # Nothing of ours sits at a seq the hall holds: no reseal follows, the gap goes now.
                self._append_gaps()
            # Else the reseal that follows (seq_taken) appends it after the events it seals again,
            # or the next claim or append does.

    #: The name the uploader may call after each verified answer (the same method).

    def reseal(self, after_seq: int, after_hash: str) -> int:
        """Seal every event the hall has not acknowledged again onto the hall's head.

        The hall answered ``seq_taken``: it holds some of our seqs under other
        events (a data folder restored from an older copy, cloned, or carried
        over). Every pending or sending event (never a delivered or rejected
        one) keeps its ``id`` and content and gets, in ``seq`` order, a new
        ``seq`` after ``after_seq`` (after the last seq this outbox keeps, if
        that is higher, so no seq goes to two rows), a new ``prev_hash``
        linking onto ``after_hash`` and a new ``hash``. Later appends continue
        after the last. The seqs left empty here are recorded in ``lost`` as
        held by the hall (delivered), so the chain stays checkable.

        Returns:
            How many events were sealed again.

        Raises:
            StorageError: SQLite cannot write (nothing changed).
        """
        with self._lock:
            if self._marks:
                self.flush_marks()
            rows = self._conn.execute(
                "SELECT seq, id, CAST(body AS BLOB), hash FROM events WHERE state = 'pending' ORDER BY seq").fetchall()
            moving: list[tuple[int, Event]] = []
            damaged: list[tuple[int, str]] = []
            for seq, _event_id, body, digest in rows:
                if seq in self._marks or seq in self._skipped:
                    continue
                event, why = repair.read_row(seq, body, digest)
                if event is None:
                    damaged.append((seq, why))
                else:
                    moving.append((seq, event))
            if damaged:
                self._set_aside(damaged)
            if not moving:
                return 0
            moved: dict[int, tuple[int, str]] = {}
            with self._transaction():
                old = [seq for seq, _ in moving]
                for chunk in chunks(old, 500):
                    self._conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
                rest, rest_hash = schema.read_head(self._conn)
                start, prev = (after_seq, after_hash) if after_seq >= rest else (rest, rest_hash)
                repair.record_vacated(self._conn, start, after_seq, after_hash)
                for i, (seq, event) in enumerate(moving):
                    fields = {k: v for k, v in event.items() if k not in ("seq", "prev_hash", "hash")}
                    sealed, text = seal_text(fields, start + 1 + i, prev)
                    self._conn.execute(_INSERT, (sealed["seq"], sealed["id"], sealed["type"], text, sealed["hash"]))
                    prev = sealed["hash"]
                    moved[seq] = (sealed["seq"], prev)
            # Claimed events keep their claim under the new seq.
            sending = {moved.get(seq, (seq, ""))[0]: (event_id, moved[seq][1] if seq in moved else digest)
                       for seq, (event_id, digest) in self._sending.items()}
            self._sending = sending
            self._sending_ids = {event_id: seq for seq, (event_id, _) in sending.items()}
            self._head = (start + len(moving), prev)
            self._cursor = min([start + 1, *(s for s in self._sending)])
            self._commits += 1
            self.book.witness.note_head(*self._head)
            self.book.copy_found(after_seq)
            self.book.incident(
                f"the hall holds seq {moving[0][0]} under another event (a restored, cloned or carried-over data "
                f"folder): {len(moving)} undelivered events sealed again as seq {start + 1}..{start + len(moving)}",
                reused_seq_prevented=len(moving))
            self._append_gaps()
            return len(moving)

    def damage(self) -> dict[str, Any]:
        """What damage was found, cumulative across restarts, for ``Status``, the heartbeat and ``evaluator-verify``.

        Returns:
            ``{"lost", "lost_delivered", "set_aside", "rewritten", "reused_seq_prevented",
            "reused_seq", "replaced", "incidents", "last", "quick_check", "witness",
            "kept_aside", "marks_unsaved"}`` (see :data:`device.queue.witness.KINDS`).
        """
        return self.book.as_dict(self._witness_found)

    def checkpoint(self, passive: bool = False) -> int:
        """Copy the WAL into the database file, on a connection of its own (never waits for the writer).

        Args:
            passive: only when enough commits have collected to be worth it
                (the uploader calls this after each delivered batch); without
                it, whatever the WAL holds is copied now.

        Returns:
            Pages copied (0 when nothing was due).
        """
        self.book.witness.sync()
        if self._marks and (not passive or len(self._marks) >= MARKS_FLUSH_COUNT
                            or self._clock() - self._marks_since >= MARKS_FLUSH_S):
            self.flush_marks()
        if (passive and self._commits < CHECKPOINT_COMMITS) or not self._commits:
            return 0
        copied, complete = self._checkpointer.run()
        if complete:
            self._commits = 0
        return copied

    # --- capacity ---------------------------------------------------------

    def disk_free(self) -> int | None:
        """Bytes free for us on the outbox's filesystem, or None if unknown."""
        return self.capacity.disk.free()

    def storage_state(self) -> tuple[str, str]:
        """How close the outbox is to its limits.

        Returns:
            ``("ok", "")``, ``("low", reason)`` (warn: indicator, heartbeat) or
            ``("full", reason)`` (appends are refused: rating pauses).
        """
        return self.capacity.state(self._waiting)
