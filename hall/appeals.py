"""Appeals (申诉复核, rules 第十一条): staff contest a rating, a reviewer decides.

Staff file an appeal against one rating with their grounds; a reviewer
*upholds* the rating (the appeal fails, the rating counts) or *overturns* it
(a 误评 or 恶意差评: the rating leaves the figures). An overturned rating is
never deleted: the event stays as the device sent it, and the report lists it
with the appeal. One appeal per rating, decided once.
"""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3

from hall.errors import LedgerError

DECISIONS = ("upheld", "overturned")
#: How the report names each outcome.
DECISION_TEXT = {None: "待复核", "upheld": "维持评价", "overturned": "撤销评价"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS appeals (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    rating_id TEXT NOT NULL UNIQUE,
    filed_on TEXT NOT NULL,
    filed_by TEXT NOT NULL,
    grounds TEXT NOT NULL,
    decision TEXT CHECK (decision IN ('upheld', 'overturned')),
    decided_on TEXT,
    reviewer TEXT,
    note TEXT,
    recorded_at TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class Appeal:
    """One appeal and, once decided, its outcome."""

    n: int
    rating_id: str
    filed_on: datetime.date
    filed_by: str
    grounds: str
    decision: str | None = None
    decided_on: datetime.date | None = None
    reviewer: str = ""
    note: str = ""

    def as_of(self, day: datetime.date) -> Appeal | None:
        """This appeal as known on ``day``: ``None`` before it was filed, undecided before the decision."""
        if self.filed_on > day:
            return None
        if self.decided_on is not None and self.decided_on > day:
            return dataclasses.replace(self, decision=None, decided_on=None, reviewer="", note="")
        return self


def create_tables(db: sqlite3.Connection) -> None:
    """Create the appeals table."""
    db.executescript(SCHEMA)


def file_appeal(db: sqlite3.Connection, rating_id: str, filed_on: datetime.date, filed_by: str,
                grounds: str, recorded_at: str) -> int:
    """Record an appeal; returns its number.

    Raises:
        LedgerError: no grounds or no name, or the rating was already appealed.
    """
    if not grounds.strip():
        raise LedgerError("申诉须写明申诉理由")
    if not filed_by.strip():
        raise LedgerError("请写明申诉人（工号或姓名）")
    held = db.execute("SELECT n FROM appeals WHERE rating_id = ?", (rating_id,)).fetchone()
    if held:
        raise LedgerError(f"评价 {rating_id} 已有申诉 #{held[0]}")
    cursor = db.execute(
        "INSERT INTO appeals (rating_id, filed_on, filed_by, grounds, recorded_at) VALUES (?, ?, ?, ?, ?)",
        (rating_id, filed_on.isoformat(), filed_by, grounds, recorded_at))
    return int(cursor.lastrowid or 0)


def decide_appeal(db: sqlite3.Connection, n: int, decision: str, decided_on: datetime.date,
                  reviewer: str, note: str) -> Appeal:
    """Record the reviewer's decision on appeal ``n``.

    Raises:
        LedgerError: no such appeal, already decided, an unknown decision, a
            decision dated before the filing, or no reviewer or note.
    """
    if decision not in DECISIONS:
        raise LedgerError("复核结论须为 维持 或 撤销")
    if not reviewer.strip() or not note.strip():
        raise LedgerError("复核须写明复核人和复核意见")
    appeal = read_appeal(db, n)
    if appeal.decision is not None:
        raise LedgerError(f"申诉 #{n} 已于 {appeal.decided_on} 复核：{DECISION_TEXT[appeal.decision]}")
    if decided_on < appeal.filed_on:
        raise LedgerError(f"申诉 #{n} 提出于 {appeal.filed_on}，晚于 {decided_on}")
    db.execute("UPDATE appeals SET decision = ?, decided_on = ?, reviewer = ?, note = ? WHERE n = ?",
               (decision, decided_on.isoformat(), reviewer, note, n))
    return read_appeal(db, n)


def read_appeal(db: sqlite3.Connection, n: int) -> Appeal:
    """Appeal number ``n``.

    Raises:
        LedgerError: there is none.
    """
    row = db.execute(_SELECT + " WHERE n = ?", (n,)).fetchone()
    if row is None:
        raise LedgerError(f"没有申诉 #{n}")
    return _appeal(row)


def read_appeals(db: sqlite3.Connection) -> list[Appeal]:
    """Every appeal, in the order filed."""
    return [_appeal(row) for row in db.execute(_SELECT + " ORDER BY n")]


_SELECT = "SELECT n, rating_id, filed_on, filed_by, grounds, decision, decided_on, reviewer, note FROM appeals"


def _appeal(row: tuple[object, ...]) -> Appeal:
    n, rating_id, filed_on, filed_by, grounds, decision, decided_on, reviewer, note = row
    return Appeal(int(str(n)), str(rating_id), datetime.date.fromisoformat(str(filed_on)), str(filed_by),
                  str(grounds), str(decision) if decision else None,
                  datetime.date.fromisoformat(str(decided_on)) if decided_on else None,
                  str(reviewer or ""), str(note or ""))
