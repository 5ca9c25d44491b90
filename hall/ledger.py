"""The hall's own records beside the received events, on the server's SQLite file.

Received events are the devices' and never change. What the hall decides
about them is kept here, in tables of its own: the registry of devices to
halls (:mod:`~hall.registry`), the 差评 follow-up actions
(:mod:`~hall.followup`), the appeals (:mod:`~hall.appeals`) and a log
of every heartbeat. :func:`create_tables` sets them up on a connection to the
server's database; :func:`read_records` takes one consistent snapshot of them
for a report or an export.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Mapping, Sequence

from hall import appeals, followup, numbers, registry
from hall.appeals import Appeal
from hall.followup import Action
from hall.registry import Beat, Registry


@dataclasses.dataclass(frozen=True)
class HallRecords:
    """What the hall decided about the events, as one snapshot.

    Attributes:
        registry: devices -> halls.
        actions: rating id -> its follow-up actions.
        appeals: rating id -> its appeal.
        beats: every logged heartbeat.
        resolved: ids marked rectified through ``HallServer.resolve()`` (day unknown).
        flags: event id -> why the hall flagged it on receipt (the store's flags).
        numbers: rating id -> its short number (``2026-11-007``).
    """

    registry: Registry = dataclasses.field(default_factory=Registry)
    actions: Mapping[str, Sequence[Action]] = dataclasses.field(default_factory=dict)
    appeals: Mapping[str, Appeal] = dataclasses.field(default_factory=dict)
    beats: Sequence[Beat] = ()
    resolved: frozenset[str] = frozenset()
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    numbers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def create_tables(db: sqlite3.Connection) -> None:
    """Create every table of the hall's records on ``db`` (idempotent)."""
    registry.create_tables(db)
    followup.create_tables(db)
    appeals.create_tables(db)
    numbers.create_tables(db)


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to the server's database with the hall's tables set up.

    Autocommit (each command is one statement or an explicit transaction);
    WAL, as the server uses, so a report can run while the server serves.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    create_tables(db)
    return db


def read_flags(db: sqlite3.Connection) -> dict[str, str]:
    """Event id -> the first problem the store marked it with (``events.flag``): what is kept out of the figures.

    Only the store's own mark counts. The ``flags`` table is a log of notes as well (a ``seq_taken``
    answered, a resealed duplicate), which mark no stored event.
    """
    return {str(event_id): str(flag).split(",")[0]
            for event_id, flag in db.execute("SELECT id, flag FROM events WHERE flag IS NOT NULL AND flag != ''")}


def read_records(db: sqlite3.Connection) -> HallRecords:
    """One snapshot of the hall's records (in one read transaction); ``resolved`` is left empty."""
    own = not db.in_transaction  # inside a command's write transaction, read in it
    if own:
        db.execute("BEGIN")
    try:
        return HallRecords(
            registry=registry.read_registry(db),
            actions=followup.read_actions(db),
            appeals={appeal.rating_id: appeal for appeal in appeals.read_appeals(db)},
            beats=registry.read_beats(db),
            numbers=numbers.read_numbers(db),
        )
    finally:
        if own:
            db.execute("COMMIT")
