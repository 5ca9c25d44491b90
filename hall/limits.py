"""The hall's per-device limits: seen nonces kept durably, and requests in flight.

**Nonces survive a restart.** A request is refused as replayed when its
nonce was seen while its ``created`` is still within the window; so every
nonce is written to the hall's SQLite before the request is acted on, kept
until its ``created`` leaves the window, and read back at start. A request
captured before a restart is refused after it as it was before.

**No device can fill a limit that refuses another.** Every bound is per
device and counted only for requests whose signature verified (a request
naming a device without its key counts for nobody): at most
:data:`~hall.auth.MAX_NONCES_PER_DEVICE` nonces within the window, and at
most :data:`MAX_IN_FLIGHT` requests being handled at once. A device past
either is answered 429 with ``Retry-After``; the others are not touched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable

from hall.auth import BUSY, MAX_NONCES_PER_DEVICE, WINDOW_S, Refused

#: Requests of one device handled at once (a long poll, a batch, a heartbeat and some to spare).
MAX_IN_FLIGHT = 8
#: How often expired nonces are deleted from the database, in seconds.
PRUNE_EVERY_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    device_id TEXT NOT NULL, nonce TEXT NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (device_id, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_created ON nonces (created);
"""


class DurableNonces:
    """The nonces seen within the window, per device, in memory and in the hall's SQLite.

    Args:
        path: the hall's database (``":memory:"``: not durable, as the hall's events are not).
        clock: the hall's clock, for what is loaded at start.
        window_s: how far ``created`` may be from the hall's clock.
        per_device: the most nonces remembered for one device; past it, 429 for that device.
    """

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float],
                 window_s: float = WINDOW_S, per_device: int = MAX_NONCES_PER_DEVICE) -> None:
        self.window_s = window_s
        self.per_device = per_device
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        now = clock()
        self._db.execute("DELETE FROM nonces WHERE created < ?", (now - window_s,))
        self._seen: dict[str, dict[str, int]] = {}
        for device_id, nonce, created in self._db.execute("SELECT device_id, nonce, created FROM nonces"):
            self._seen.setdefault(device_id, {})[nonce] = created
        self._pruned_at = now

    def add(self, device_id: str, nonce: str, created: int, now: float) -> bool:
        """Remember a nonce (durably); False if it was seen within the window.

        Raises:
            Refused: 429 ``busy`` when this device has sent ``per_device``
                requests within the window.
        """
        with self._lock:
            seen = self._seen.setdefault(device_id, {})
            if nonce in seen:
                return False
            if len(seen) >= self.per_device:
                self._prune_device(seen, now)
                if len(seen) >= self.per_device:
                    oldest = min(seen.values())
                    wait = max(1, int(oldest + self.window_s - now) + 1)
                    raise Refused(BUSY, "too many requests from this device within the window; try again later",
                                  429, retry_after=wait)
            self._db.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", (device_id, nonce, created))
            seen[nonce] = created
            if now - self._pruned_at >= PRUNE_EVERY_S:
                self._prune(now)
            return True

    def _prune_device(self, seen: dict[str, int], now: float) -> None:
        for old in [n for n, c in seen.items() if c < now - self.window_s]:
            del seen[old]

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for device_id in list(self._seen):
            seen = self._seen[device_id]
            self._prune_device(seen, now)
            if not seen:
                del self._seen[device_id]
        self._db.execute("DELETE FROM nonces WHERE created < ?", (now - self.window_s,))

    def count(self, device_id: str | None = None) -> int:
        """Nonces held, for one device or all."""
        with self._lock:
            if device_id is not None:
                return len(self._seen.get(device_id, {}))
            return sum(len(s) for s in self._seen.values())

    def close(self) -> None:
        with self._lock:
            self._db.close()


class InFlight:
    """Requests of each device being handled now, at most ``per_device`` each.

    Args:
        per_device: the most at once for one device; past it, 429 for that device.
    """

    def __init__(self, per_device: int = MAX_IN_FLIGHT) -> None:
        self.per_device = per_device
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}

    def enter(self, device_id: str) -> None:
        """Count one more request of the device.

        Raises:
            Refused: 429 ``busy`` (its ``verified`` left for the caller to set).
        """
        with self._lock:
            count = self._count.get(device_id, 0)
            if count >= self.per_device:
                raise Refused(BUSY, f"more than {self.per_device} requests from this device at once", 429,
                              retry_after=1)
            self._count[device_id] = count + 1

    def leave(self, device_id: str) -> None:
        with self._lock:
            count = self._count.get(device_id, 0) - 1
            if count > 0:
                self._count[device_id] = count
            else:
                self._count.pop(device_id, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(self._count.values())
