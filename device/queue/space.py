"""How full the outbox may get: free disk, the undelivered count, and a write that failed for lack of space.

When the store nears its limit (count or free disk) the device warns; when
full, rating pauses and says so (:meth:`Capacity.state`). A write that failed
for lack of space (a true ``ENOSPC``, even above the reserve) also pauses
rating, until clearly more space is free again.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

from device.errors import OutboxFull, StorageError

#: Free disk below which appends are refused and rating pauses: room is left
#: for SQLite's WAL checkpoints, the logs and the system itself.
MIN_FREE_BYTES = 16 * 1024 * 1024
#: Share of ``max_events`` (and multiple of ``min_free_bytes``) at which the device warns.
LOW_FRACTION = 0.8
LOW_FREE_FACTOR = 4
#: After a write failed for lack of space, rating stays paused until this much more is free.
FULL_HYSTERESIS_BYTES = 1024 * 1024
#: Free disk is looked up at most this often on the append path.
DISK_CHECK_S = 1.0


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


class Capacity:
    """The outbox's limits and how close it is to them.

    Args:
        disk: the :class:`DiskSpace` of the outbox's folder.
        max_events: undelivered events at which appends are refused.
        min_free_bytes: free disk below which appends are refused.
        low_free_bytes: free disk below which :meth:`state` warns (default
            ``LOW_FREE_FACTOR * min_free_bytes``).
    """

    def __init__(self, disk: DiskSpace, max_events: int, min_free_bytes: int, low_free_bytes: int | None) -> None:
        self.disk = disk
        self.max_events = max_events
        self.min_free_bytes = min_free_bytes
        self.low_free_bytes = LOW_FREE_FACTOR * min_free_bytes if low_free_bytes is None else low_free_bytes
        #: Free disk when a write last failed for lack of space (None: no such failure).
        self.full_at: int | None = None

    def check_append(self, waiting: int) -> None:
        """Refuse an append the limits do not allow.

        Raises:
            OutboxFull: ``max_events`` are waiting, or the disk is below ``min_free_bytes``.
        """
        if waiting >= self.max_events:
            raise OutboxFull(f"outbox full: {waiting} events waiting")
        free = self.disk.recent()
        if free is not None and free < self.min_free_bytes:
            raise OutboxFull(f"disk nearly full: {mb(free)} free, {mb(self.min_free_bytes)} kept in reserve")

    def note_failure(self, error: BaseException) -> None:
        """A write failed; when it was for lack of space, rating pauses until there is more."""
        cause = error.__cause__ if isinstance(error, StorageError) and error.__cause__ else error
        if "full" in str(cause).lower() or getattr(cause, "errno", None) == errno.ENOSPC:
            self.full_at = self.disk.free() or 0

    def state(self, waiting: int) -> tuple[str, str]:
        """``("ok", "")``, ``("low", reason)`` (warn) or ``("full", reason)`` (appends refused: rating pauses)."""
        free = self.disk.free()
        if waiting >= self.max_events:
            return "full", f"outbox full: {waiting} events waiting (limit {self.max_events})"
        if free is not None and free < self.min_free_bytes:
            return "full", f"disk full: {mb(free)} free, {mb(self.min_free_bytes)} kept in reserve"
        if self.full_at is not None:
            if free is None or free < self.full_at + FULL_HYSTERESIS_BYTES:
                return "full", f"disk full: the last write failed for lack of space ({mb(free or 0)} free)"
            self.full_at = None
        if waiting >= LOW_FRACTION * self.max_events:
            return "low", f"outbox nearly full: {waiting} of {self.max_events} events waiting"
        if free is not None and free < self.low_free_bytes:
            return "low", f"disk nearly full: {mb(free)} free"
        return "ok", ""


def mb(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
