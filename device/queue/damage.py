"""The outbox's damage book: what went missing or wrong, counted, recorded and never silent.

One :class:`DamageBook` per open outbox keeps the witness
(:mod:`device.queue.witness`), the cumulative counts it holds, and the
incidents: each is logged at ERROR, appended to ``<outbox>-damage.log`` and
counted in the witness at once. :meth:`DamageBook.record` writes what
:func:`device.queue.repair.inspect` found into the database itself: runs of
lost seqs in ``lost`` (so the chain continues across them and no seq is used
again), rows that cannot be trusted set aside as dead letters with the
reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from device.errors import StorageError
from device.queue import repair, schema
from device.queue.witness import Head, Witness

logger = logging.getLogger(__name__)


class DamageBook:
    """Damage counts and incidents of the outbox at ``path``.

    Args:
        path: the outbox's database file; the witness and the log sit beside it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.witness = Witness(path + "-witness")
        self.counts = dataclasses.replace(self.witness.state.counts)
        #: SQLite's quick_check at this open ("ok", or what it found).
        self.quick_check = "ok"
        #: Databases kept aside at this open.
        self.kept_aside: list[str] = []
        #: Delivered marks kept in memory because the disk was full (see Outbox.mark_delivered).
        self.marks_unsaved = 0
        #: ``gap`` events due: ``(from_seq, to_seq, count, reason)``; the outbox appends them to the chain.
        self.gaps: list[tuple[int | None, int | None, int, str]] = []
        #: A restored or cloned copy was already announced with a ``gap`` since this open.
        self.copy_announced = False

    def gap(self, from_seq: int | None, to_seq: int | None, count: int, reason: str) -> None:
        """A ``gap`` event is due (see :data:`device.records.GAP_REASONS`)."""
        self.gaps.append((from_seq, to_seq, count, reason))

    def copy_found(self, after_seq: int) -> None:
        """This folder is a restored, cloned or carried-over copy: the hall holds seqs up to ``after_seq`` it
        never had. What its newer copy sealed after them and never delivered cannot be known here: one
        ``gap`` (end and count unknown) says so, once per open."""
        if self.copy_announced:
            return
        self.copy_announced = True
        self.gap(after_seq + 1, None, 0, "lost_wal" if self.witness.found != "ok" else "restored_copy")

    def incident(self, message: str, **counts: int) -> None:
        """Record one incident: logged, counted, kept in the witness and the damage log."""
        logger.error("outbox damage: %s", message)
        for kind, n in counts.items():
            setattr(self.counts, kind, getattr(self.counts, kind) + n)
        self.counts.incidents += 1
        when = repair.now_text()
        self.counts.last = f"{when} {message}"[:240]
        self.witness.set_counts(self.counts)
        repair.log_incident(self.path + "-damage.log", {"at": when, "message": message, **counts})

    def record(self, conn: sqlite3.Connection, found: repair.Findings, acked: int) -> None:
        """Write what :func:`~device.queue.repair.inspect` found into the database, then count it.

        Raises:
            StorageError: the database cannot be written (the findings stay uncounted
                and are found again at the next open).
        """
        undelivered = set()
        if found.damaged:
            marks = ",".join("?" * len(found.damaged))
            undelivered = {seq for (seq,) in conn.execute(
                f"SELECT seq FROM events WHERE state != ? AND seq IN ({marks})",
                [schema.DELIVERED, *(seq for seq, _ in found.damaged)])}
        if found.losses or found.damaged:
            with schema.immediate(conn, self.path):
                for loss in found.losses:
                    delivered = max(0, min(loss.last, acked) - loss.first + 1)
                    conn.execute("INSERT OR REPLACE INTO lost (first, last, last_hash, delivered, reason, found_at) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 [loss.first, loss.last, loss.last_hash, delivered, loss.reason, repair.now_text()])
                for seq, why in found.damaged:
                    conn.execute("UPDATE events SET state = ?, error = ? WHERE seq = ?", [schema.REJECTED, why, seq])
        head = schema.read_head(conn)[0]
        for loss in found.losses:
            delivered = max(0, min(loss.last, acked) - loss.first + 1)
            span = f"seq {loss.first}" if loss.size == 1 else f"seq {loss.first}..{loss.last}"
            tail = loss.last == head
            self.incident(f"{loss.size} events missing ({span}): {loss.reason}; "
                          f"{loss.size - delivered} of them not yet delivered"
                          + ("; their seq numbers are not used again" if tail else ""),
                          lost=loss.size - delivered, lost_delivered=delivered,
                          reused_seq_prevented=loss.size if tail else 0)
            if loss.size > delivered:
                self.gap(loss.first, loss.last, loss.size - delivered,
                         "lost_wal" if "WAL" in loss.reason and not self.kept_aside else "lost_events")
        for seq, why in found.damaged:
            self.incident(f"the row of seq {seq} was set aside as a dead letter ({why})", set_aside=1)
            if seq in undelivered:
                self.gap(seq, seq, 1, "unreadable_row")
        if found.broken:
            shown = ", ".join(map(str, found.broken[:5]))
            self.witness.note_broken(max(found.broken))
            self.incident(f"the chain does not link at seq {shown} (an edited or re-chained history)",
                          rewritten=len(found.broken))
        for seq, digest, text in found.rewritten:
            if self.witness.flag(seq, digest):
                self.incident(text, rewritten=1)

    # --- at open ----------------------------------------------------------------------

    def open_database(self, connect: Callable[[], sqlite3.Connection]) -> tuple[sqlite3.Connection, str]:
        """Open the database and run SQLite's ``quick_check``; keep a damaged one aside and salvage it.

        Returns:
            The connection, and why the database could not be opened as it was
            ("" when it could, even if some of it was damaged and salvaged).

        Raises:
            StorageError: the file cannot be opened for another reason (a folder that cannot be written).
        """
        conn: sqlite3.Connection | None = None
        try:
            conn = connect()
            check = repair.quick_check(conn)
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            if not repair.is_damage(e):
                raise StorageError(f"cannot open outbox {self.path}: {e}") from e
            conn, check = None, str(e)
        except OSError as e:
            raise StorageError(f"cannot open outbox {self.path}: {e.strerror or e}") from e
        if check == "ok":
            assert conn is not None
            return conn, ""
        self.quick_check = check
        if conn is not None:
            conn.close()
        aside = repair.move_aside(self.path)
        self.kept_aside.append(aside)
        conn = connect()
        schema.create(conn, self.path)
        saved = repair.salvage(aside, conn, self.witness.state.head.seq)
        how = ("could not be read at all" if not saved.opened else
               f"{saved.copied} rows copied into a new one" + (" after repairing its header"
                                                                if saved.header_repaired else ""))
        self.incident(f"the database failed SQLite's check ({check[:120]}); kept aside as "
                      f"{os.path.basename(aside)}; {how}", replaced=1)
        for seq, why, delivered in saved.damaged:
            self.incident(f"the row of seq {seq} was set aside as a dead letter ({why})", set_aside=1)
            if not delivered:
                self.gap(seq, seq, 1, "unreadable_row")
        unreadable = "" if saved.opened and not saved.header_repaired else (
            f"the outbox database {self.path} could not be opened ({check[:120]}); it was kept aside as {aside} "
            f"and a new one started ({how}); the device starts again with it")
        return conn, unreadable

    def check(self, conn: sqlite3.Connection) -> tuple[int, str]:
        """Compare the database with its witness and itself; record and count what is wrong.

        Returns:
            The head to continue from (a lost tail's seqs are not used again).
        """
        state = self.witness.state
        found = self.witness.found
        self.record(conn, repair.inspect(conn, state), state.acked.seq)
        head = schema.read_head(conn)
        if found != "ok" and head[0]:
            logger.warning("outbox witness %s; written again from the database (head seq %d)", found, head[0])
        self.witness.rewrite(dataclasses.replace(state, head=Head(*head), counts=self.counts))
        return head

    # --- the hall's head ------------------------------------------------------------------

    def hall_head(self, conn: sqlite3.Connection, head: tuple[int, str], opened_head: int,
                  seq: int, digest: str) -> tuple[int, str]:
        """Compare the hall's acknowledged head with this outbox; returns the head to continue from.

        See :meth:`~device.queue.outbox.Outbox.note_acknowledged_head`.
        """
        if seq > head[0]:
            # Events sealed since this open under seqs the hall holds: a hall that rejects them
            # (seq_taken) gets them sealed again; only those it took anyway were used twice.
            reused = int(conn.execute("SELECT count(*) FROM events WHERE seq > ? AND seq <= ? AND state = ?",
                                      [opened_head, head[0], schema.DELIVERED]).fetchone()[0])
            first = head[0] + 1
            try:
                with schema.immediate(conn, self.path):
                    conn.execute("INSERT OR REPLACE INTO lost (first, last, last_hash, delivered, reason, found_at) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", [first, seq, digest, seq - first + 1,
                                                               "held by the hall but gone from the outbox",
                                                               repair.now_text()])
            except StorageError as e:
                logger.warning("outbox: the hall's head not recorded: %s", e)
            self.witness.note_head(seq, digest)
            self.incident(
                f"the hall holds events up to seq {seq} but this outbox ended at seq {first - 1}: "
                f"{seq - first + 1} events gone here (the hall has them); the next seq follows the hall's"
                + (f"; {reused} seq numbers were used twice before this was known" if reused else ""),
                lost_delivered=seq - first + 1, reused_seq_prevented=seq - first + 1, reused_seq=reused)
            self.copy_found(seq)
            head = (seq, digest)
        else:
            ours = repair.hash_at(conn, seq)
            # Not yet acknowledged here: another copy's event holds that seq at the hall (seq_taken and a
            # reseal follow), not a rewritten history. Looked up only when the hashes differ (rare).
            if ours is not None and ours != digest and not _pending_at(conn, seq) and self.witness.flag(seq, digest):
                self.incident(f"the event at seq {seq} differs from the one the hall acknowledged "
                              "(a rewritten history)", rewritten=1)
            self._refine_losses(conn, seq)
        self.witness.note_acked(seq, digest)
        return head

    def _refine_losses(self, conn: sqlite3.Connection, acked: int) -> None:
        """Events counted lost that the hall turns out to hold (its head covers them) were delivered after all."""
        runs = conn.execute("SELECT first, last, delivered FROM lost WHERE first <= ? AND "
                            "delivered < min(last, ?) - first + 1", [acked, acked]).fetchall()
        for first, last, delivered in runs:
            held = min(last, acked) - first + 1
            try:
                with schema.immediate(conn, self.path):
                    conn.execute("UPDATE lost SET delivered = ? WHERE first = ?", [held, first])
            except StorageError as e:
                logger.warning("outbox: lost run %d..%d not updated: %s", first, last, e)
                continue
            self.incident(f"the hall holds {held - delivered} of the events of seq {first}..{last} counted "
                          "as lost: they had been delivered", lost=delivered - held, lost_delivered=held - delivered)

    # --- reporting ------------------------------------------------------------------

    def as_dict(self, witness_found: str) -> dict[str, Any]:
        """The counts with what this open found, for ``Status``, the heartbeat and ``evaluator-verify``."""
        return {**self.counts.as_dict(), "quick_check": self.quick_check, "witness": witness_found,
                "kept_aside": list(self.kept_aside), "marks_unsaved": self.marks_unsaved}

    def close(self) -> None:
        self.witness.close()


def summary(damage: dict[str, Any]) -> str:
    """One line for a fault list: ``lost 40, set aside 1, ...``; "" when nothing was ever found."""
    parts = [f"{kind.replace('_', ' ')} {damage[kind]}" for kind in
             ("lost", "lost_delivered", "set_aside", "rewritten", "reused_seq", "replaced", "foreign", "gaps")
             if damage.get(kind)]
    if damage.get("marks_unsaved"):
        parts.append(f"{damage['marks_unsaved']} delivery marks not yet saved (disk full)")
    return ", ".join(parts)


def _pending_at(conn: sqlite3.Connection, seq: int) -> bool:
    """Whether the event at ``seq`` waits to be delivered (not yet acknowledged by the hall)."""
    row = conn.execute("SELECT state FROM events WHERE seq = ?", [seq]).fetchone()
    return row is not None and row[0] == schema.PENDING
