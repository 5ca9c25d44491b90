"""The hall's own SQLite: received events, last heartbeats, rectified 差评."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from sim.hall.contract import Event


class Storage:
    """One connection, one lock, WAL.

    ``id`` is UNIQUE, so a re-sent event can never be stored twice, whatever
    the threads do; ``(device_id, seq)`` is deliberately *not* unique, so a
    device that reuses a seq is stored and then reported by
    :meth:`HallServer.integrity() <sim.hall.HallServer.integrity>`.

    Args:
        path: the SQLite file (``":memory:"`` works).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS events (
                device_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL, received_at TEXT NOT NULL, json TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS events_device_seq ON events (device_id, seq);
            CREATE TABLE IF NOT EXISTS heartbeats (
                device_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, json TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS resolved (
                rating_id TEXT PRIMARY KEY, resolved_at TEXT NOT NULL, note TEXT NOT NULL);
            """
        )

    def store(self, device_id: str, events: Iterable[Event], received_at: str) -> tuple[list[str], list[str]]:
        """Store a batch in one transaction; returns ``(accepted, duplicate)`` ids."""
        accepted: list[str] = []
        duplicate: list[str] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                        (device_id, event["seq"], event["id"], event["type"], received_at,
                         json.dumps(event, ensure_ascii=False)),
                    )
                    (accepted if cursor.rowcount == 1 else duplicate).append(event["id"])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return accepted, duplicate

    def events(self, device_id: str | None = None) -> list[Event]:
        """Stored events, ordered by device, then seq, then arrival."""
        sql = "SELECT json FROM events"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY device_id, seq, rowid", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def put_heartbeat(self, device_id: str, body: dict[str, Any], received_at: str) -> None:
        """Keep ``body`` as the device's last heartbeat."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                (device_id, received_at, json.dumps(body, ensure_ascii=False)),
            )

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Device id -> its last heartbeat body."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, json FROM heartbeats").fetchall()
        return {device_id: json.loads(body) for device_id, body in rows}

    def resolve(self, rating_id: str, note: str, resolved_at: str) -> None:
        """Record a 差评 as rectified."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO resolved VALUES (?, ?, ?)", (rating_id, resolved_at, note)
            )

    def resolved_ids(self) -> set[str]:
        """The ids of every rectified 差评."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT rating_id FROM resolved")}

    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._db.close()
