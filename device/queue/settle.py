"""Settling what was claimed: delivered, rejected, released, or sent again.

The base of :class:`~device.queue.outbox.Outbox` that the uploader's answers
go through. A claimed event is ``sending`` in memory only; a delivered mark
waits in memory for the next append, which writes it in its own transaction
(:meth:`OutboxSettlement.flush_marks` writes it sooner when asked, and keeps it
in memory when the disk is full, so delivery goes on).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from device.errors import StorageError
from device.queue.reading import OutboxReads, chunks
from device.queue.schema import DELIVERED, PENDING, REJECTED

if TYPE_CHECKING:
    from device.queue.damage import DamageBook
    from device.queue.space import Capacity

logger = logging.getLogger(__name__)

#: Dead letters set aside for damage are not sent again by a technician's Upload: they cannot be read.
NOT_DAMAGED = "(error IS NULL OR error NOT LIKE 'damaged:%')"


class OutboxSettlement(OutboxReads):
    """Marks for claimed events (the attributes are the outbox's own)."""

    _sending_ids: dict[str, int]
    _marks_since: float
    _clock: Callable[[], float]
    _commits: int
    _cursor: int
    book: DamageBook
    capacity: Capacity

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _settle(self, ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """Split ids into the seqs of claimed events (no longer sending) and ids not claimed here."""
        seqs, others = [], []
        for event_id in ids:
            seq = self._sending_ids.pop(event_id, None)
            if seq is None:
                others.append(event_id)
            else:
                seqs.append(seq)
                del self._sending[seq]
        return seqs, others

    def mark_delivered(self, ids: Iterable[str], now: float | None) -> int:
        """The server acknowledged these ids (accepted or duplicate).

        ``now`` (epoch seconds) starts the retention time; ``None`` when the
        wall clock is not trusted yet (see :meth:`stamp_delivered`). The marks
        of claimed events are written with the next append, or by
        :meth:`checkpoint` when none comes soon (see the module's docstring);
        when the disk is full they wait in memory, so delivery goes on.

        Returns:
            How many events changed state.
        """
        ids = list(ids)
        with self._lock:
            hashes = {self._sending_ids[i]: self._sending[self._sending_ids[i]][1]
                      for i in ids if i in self._sending_ids}
            seqs, others = self._settle(ids)
            if not self._marks:
                self._marks_since = self._clock()
            self._marks.update(dict.fromkeys(seqs, now))
            n = len(seqs)
            if others:
                # Not claimed here (after a restart): written at once, by id.
                try:
                    with self._transaction():
                        for chunk in chunks(others, 500):
                            n += self._conn.execute(
                                f"UPDATE events SET state = ?, delivered_at = ? WHERE state = ? AND id IN "
                                f"({','.join('?' * len(chunk))})", [DELIVERED, now, PENDING, *chunk]).rowcount
                    self._commits += 1
                except StorageError as e:
                    logger.warning("outbox: %d delivered marks not written (they are sent again): %s",
                                   len(others), e)
            self._waiting -= n
            if hashes:
                top = max(hashes)
                self.book.witness.note_acked(top, hashes[top])
        return n

    def _update_marks(self, marks: Mapping[int, float | None]) -> None:
        """The UPDATEs of waiting delivered marks (inside a transaction)."""
        by_time: dict[float | None, list[int]] = {}
        for seq, when in marks.items():
            by_time.setdefault(when, []).append(seq)
        for when, seqs in by_time.items():
            for chunk in chunks(seqs, 500):
                self._conn.execute(f"UPDATE events SET state = ?, delivered_at = ? WHERE state = ? AND seq IN "
                                   f"({','.join('?' * len(chunk))})", [DELIVERED, when, PENDING, *chunk])

    def _marks_written(self) -> None:
        self._marks.clear()
        self._commits += 1
        if self.book.marks_unsaved:
            logger.info("outbox: the delivered marks kept in memory are written now that there is room")
            self.book.marks_unsaved = 0

    def flush_marks(self) -> int:
        """Write the delivered marks waiting in memory now; returns how many (0 when the disk is full)."""
        with self._lock:
            if not self._marks:
                return 0
            n = len(self._marks)
            try:
                with self._transaction():
                    self._update_marks(self._marks)
            except StorageError as e:
                if self.capacity.full_at is None:
                    self.capacity.note_failure(e)
                if not self.book.marks_unsaved:
                    logger.warning("outbox: %d delivered marks kept in memory until there is room: %s", n, e)
                self.book.marks_unsaved = n
                return 0
            self._marks_written()
            return n

    def mark_rejected(self, rejections: Mapping[str, object]) -> int:
        """Dead letters: ``{id: error}``. Kept and visible, not retried by themselves.

        Returns:
            How many events became dead letters.
        """
        with self._lock:
            n = 0
            with self._transaction():
                for event_id, error in rejections.items():
                    seq = self._sending_ids.pop(event_id, None)
                    if seq is not None:
                        del self._sending[seq]
                    n += self._conn.execute(
                        f"UPDATE events SET state = ?, error = ? WHERE {'seq' if seq is not None else 'id'} = ? "
                        "AND state = ?", [REJECTED, str(error)[:500], event_id if seq is None else seq,
                                          PENDING]).rowcount
            self._commits += 1
            self._waiting -= n
        return n

    def release(self, ids: Iterable[str]) -> None:
        """Put events that were not acknowledged back to pending (in memory: nothing is written)."""
        with self._lock:
            seqs, _ = self._settle(ids)
            if seqs:
                self._cursor = min(self._cursor, *seqs)

    def retry_rejected(self) -> int:
        """A technician's command: send the dead letters again (not the damaged ones); returns how many."""
        with self._lock, self._transaction():
            row = self._conn.execute(f"SELECT min(seq) FROM events WHERE state = ? AND {NOT_DAMAGED}",
                                     [REJECTED]).fetchone()
            if row[0] is not None:
                self._cursor = min(self._cursor, int(row[0]))
            n = self._conn.execute(
                f"UPDATE events SET state = ?, error = NULL WHERE state = ? AND {NOT_DAMAGED}",
                [PENDING, REJECTED]).rowcount
            self._waiting += n
        return n

