"""Short per-month numbers for ratings, such as ``2026-11-007`` (the supervisor's commands name ratings by them).

A rating's id is a UUIDv7 of 32 hex digits; 39 of a month's ratings can share
their first seven, so a supervisor would need 13 characters to name one. The
hall gives every dated rating a number in the month of its China date, in the
order the hall learns it can date it (arrival order, then time), and keeps the
number in its own table: once given, a number never changes, so a number
printed in last month's 通报 still names the same rating. Ids (and unique
starts of them) are still accepted everywhere a number is.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS rating_numbers (
    rating_id TEXT PRIMARY KEY, month TEXT NOT NULL, n INTEGER NOT NULL, UNIQUE (month, n));
"""
#: ``YYYY-MM-NNN`` (three digits or more).
PATTERN = re.compile(r"(\d{4}-(?:0[1-9]|1[0-2]))-(\d{1,6})")


def create_tables(db: sqlite3.Connection) -> None:
    """Create the numbers table."""
    db.executescript(SCHEMA)


def label(month: str, n: int) -> str:
    """``2026-11-007``."""
    return f"{month}-{n:03d}"


def assign(db: sqlite3.Connection, dated: Iterable[tuple[str, str]]) -> None:
    """Give a number to each ``(rating id, YYYY-MM)`` that has none, in the order given.

    The caller holds a write transaction (or runs in autocommit).
    """
    held = {row[0] for row in db.execute("SELECT rating_id FROM rating_numbers")}
    last: dict[str, int] = dict(db.execute("SELECT month, MAX(n) FROM rating_numbers GROUP BY month").fetchall())
    for rating_id, month in dated:
        if rating_id in held:
            continue
        last[month] = last.get(month, 0) + 1
        db.execute("INSERT INTO rating_numbers VALUES (?, ?, ?)", (rating_id, month, last[month]))
        held.add(rating_id)


def read_numbers(db: sqlite3.Connection) -> dict[str, str]:
    """Rating id -> its short number."""
    return {rating_id: label(month, n)
            for rating_id, month, n in db.execute("SELECT rating_id, month, n FROM rating_numbers")}


def find(numbers: Mapping[str, str], ref: str) -> str | None:
    """The rating id numbered ``ref`` (``2026-11-7`` and ``2026-11-007`` alike), or None."""
    match = PATTERN.fullmatch(ref.strip())
    if match is None:
        return None
    wanted = label(match.group(1), int(match.group(2)))
    return next((rating_id for rating_id, number in numbers.items() if number == wanted), None)
