"""差评 follow-up: the 10-working-day deadline, fixes, extensions and replies.

Rules, 第十三条: a 差评 (不满意, 非常不满意) is investigated, rectified within
10 working days, and the citizen gets feedback; what cannot be rectified in
time needs a reason and a new date. The hall records each step as an
append-only action; the state of a 差评 on any day is computed from its
rating, its actions up to that day and its appeal:

- ``overturned``: an appeal overturned the rating; nothing more to do.
- ``invalid``: 查实 found it not valid (with the reason): off the
  rectification list, still in the figures (only an appeal takes it out).
- ``fixed``: a fix was recorded (late if after the deadline then in force).
- ``overdue``: the deadline (the last extension's date, else 10 working days
  after the rating's China date) has passed without a fix.
- ``open``: within the deadline.

Every 差评 is checked first (查实, a ``verify`` action: ``confirmed`` or
``invalid`` with the reason); only a confirmed 差评 can be recorded as fixed.
The citizen's reply has a deadline of its own: :data:`REPLY_WORKING_DAYS`
working days after the rating.

A 差评 stays on the report of every later month until it is fixed,
found not valid or overturned.
"""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hall.appeals import Appeal
from hall.errors import LedgerError
from hall.workdays import RECTIFY_WORKING_DAYS, WorkCalendar

BAD_LEVELS = ("dissatisfied", "very_dissatisfied")
KINDS = ("fix", "extension", "reply", "verify")
VERDICTS = ("confirmed", "invalid")
#: The citizen hears back within this many working days of the rating.
REPLY_WORKING_DAYS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS followup_actions (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    rating_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('fix', 'extension', 'reply')),
    on_date TEXT NOT NULL,
    new_deadline TEXT,
    text TEXT NOT NULL,
    by TEXT NOT NULL DEFAULT '',
    recorded_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS followup_actions_rating ON followup_actions (rating_id);
CREATE TABLE IF NOT EXISTS verifications (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    rating_id TEXT NOT NULL UNIQUE,
    verdict TEXT NOT NULL CHECK (verdict IN ('confirmed', 'invalid')),
    on_date TEXT NOT NULL,
    text TEXT NOT NULL,
    by TEXT NOT NULL DEFAULT '',
    recorded_at TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class Action:
    """One recorded step on a 差评.

    ``text`` is what was done (fix), the reason (extension) or the reply to
    the citizen (reply); ``new_deadline`` is set for extensions only.
    """

    rating_id: str
    kind: str
    on: datetime.date
    text: str
    by: str = ""
    new_deadline: datetime.date | None = None
    #: ``confirmed`` or ``invalid``, for ``verify`` actions only.
    verdict: str | None = None


@dataclasses.dataclass(frozen=True)
class FollowUp:
    """Where a 差评 stands on ``as_of``."""

    state: str
    rated_on: datetime.date
    #: 10 working days after ``rated_on``.
    first_deadline: datetime.date
    #: The deadline in force: the last extension's date, else ``first_deadline``.
    deadline: datetime.date
    #: False when the deadline was counted through a year without an official calendar.
    official: bool
    fixed: Action | None
    extensions: Sequence[Action]
    replies: Sequence[Action]
    #: Calendar days past the deadline: until ``as_of`` if open, until the fix if fixed late.
    days_overdue: int
    #: The 查实 step, when recorded by ``as_of``.
    verified: Action | None = None
    #: The citizen's reply is due by this day.
    reply_deadline: datetime.date | None = None
    #: The day this state was judged on.
    as_of: datetime.date | None = None

    @property
    def closed(self) -> bool:
        """Fixed, found not valid, or overturned."""
        return self.state in ("fixed", "invalid", "overturned")

    @property
    def reply_state(self) -> str:
        """``replied`` (on time), ``late`` (replied after the deadline), ``due`` or ``overdue``."""
        first = self.replies[0].on if self.replies else None
        if self.reply_deadline is None:
            return "replied" if first else "due"
        if first is not None:
            return "replied" if first <= self.reply_deadline else "late"
        if self.as_of is not None and self.as_of > self.reply_deadline and self.state != "overturned":
            return "overdue"
        return "due"


def create_tables(db: sqlite3.Connection) -> None:
    """Create the follow-up table."""
    db.executescript(SCHEMA)


def add_action(db: sqlite3.Connection, action: Action, recorded_at: str) -> None:
    """Append ``action``; the caller has checked it with :func:`check_action`."""
    if action.kind == "verify":
        db.execute("INSERT INTO verifications (rating_id, verdict, on_date, text, by, recorded_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (action.rating_id, action.verdict, action.on.isoformat(), action.text, action.by, recorded_at))
        return
    db.execute(
        "INSERT INTO followup_actions (rating_id, kind, on_date, new_deadline, text, by, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (action.rating_id, action.kind, action.on.isoformat(),
         action.new_deadline.isoformat() if action.new_deadline else None, action.text, action.by,
         recorded_at))


def read_actions(db: sqlite3.Connection) -> dict[str, list[Action]]:
    """Rating id -> its actions in the order recorded."""
    actions: dict[str, list[Action]] = {}
    for rating_id, kind, on, new_deadline, text, by in db.execute(
            "SELECT rating_id, kind, on_date, new_deadline, text, by FROM followup_actions ORDER BY n"):
        actions.setdefault(rating_id, []).append(Action(
            rating_id, kind, datetime.date.fromisoformat(on), text, by,
            datetime.date.fromisoformat(new_deadline) if new_deadline else None))
    for rating_id, verdict, on, text, by in db.execute(
            "SELECT rating_id, verdict, on_date, text, by FROM verifications ORDER BY n"):
        actions.setdefault(rating_id, []).append(Action(
            rating_id, "verify", datetime.date.fromisoformat(on), text, by, verdict=verdict))
    return actions


def follow_up(rated_on: datetime.date, actions: Iterable[Action], appeal: Appeal | None,
              calendar: WorkCalendar, as_of: datetime.date, legacy_fixed: bool = False) -> FollowUp:
    """The state of one 差评 on ``as_of``.

    Args:
        rated_on: the rating's date in China time.
        actions: its actions; those dated after ``as_of`` are not yet known.
        appeal: its appeal, if any; a decision after ``as_of`` is not yet known.
        calendar: the working-day calendar.
        as_of: the day the state is judged on.
        legacy_fixed: marked rectified through ``HallServer.resolve()``, day unknown.
    """
    first, official = calendar.deadline(rated_on, RECTIFY_WORKING_DAYS)
    known = [a for a in actions if a.on <= as_of]
    extensions = [a for a in known if a.kind == "extension"]
    replies = [a for a in known if a.kind == "reply"]
    fixes = [a for a in known if a.kind == "fix"]
    fixed = fixes[0] if fixes else None
    verified = next((a for a in known if a.kind == "verify"), None)
    reply_deadline = calendar.add_working_days(rated_on, REPLY_WORKING_DAYS)
    deadline = first
    for extension in extensions:
        if extension.new_deadline is not None and (fixed is None or extension.on <= fixed.on):
            deadline = extension.new_deadline
            official = official and calendar.is_official(deadline)
    if appeal is not None and appeal.decision == "overturned" and appeal.decided_on is not None \
            and appeal.decided_on <= as_of:
        state, overdue = "overturned", 0
    elif verified is not None and verified.verdict == "invalid":
        state, overdue = "invalid", 0
    elif fixed is not None or legacy_fixed:
        state = "fixed"
        overdue = max(0, (fixed.on - deadline).days) if fixed is not None else 0
    else:
        state = "overdue" if as_of > deadline else "open"
        overdue = max(0, (as_of - deadline).days)
    return FollowUp(state, rated_on, first, deadline, official, fixed, extensions, replies, overdue, verified,
                    reply_deadline, as_of)


def closed_before(rated_on: datetime.date, actions: Iterable[Action], appeal: Appeal | None,
                  day: datetime.date, legacy_fixed: bool = False) -> bool:
    """True when the 差评 was fixed, found not valid or overturned before ``day`` (so not carried into it)."""
    if legacy_fixed:
        return True
    if any((a.kind == "fix" or (a.kind == "verify" and a.verdict == "invalid")) and a.on < day for a in actions):
        return True
    return bool(appeal is not None and appeal.decision == "overturned" and appeal.decided_on is not None
                and appeal.decided_on < day)


def check_action(rating: Mapping[str, Any], action: Action, current: FollowUp) -> None:
    """Refuse an action that makes no sense for this 差评 in its current state.

    Raises:
        LedgerError: with the reason, in Chinese (the supervisor reads it).
    """
    if rating.get("type") != "rating" or rating.get("level") not in BAD_LEVELS:
        raise LedgerError(f"评价 {rating.get('id')} 不是差评（不满意或非常不满意）")
    if action.kind not in KINDS:
        raise LedgerError(f"未知的处理类型 {action.kind!r}")
    if not action.text.strip():
        raise LedgerError("内容为空：请写明所做的整改、理由或答复")
    if action.on < current.rated_on:
        raise LedgerError(f"{action.on} 早于评价日期（{current.rated_on}）")
    if current.state == "overturned":
        raise LedgerError(f"评价 {rating['id']} 已申诉撤销，无需处理")
    if action.kind == "verify":
        if action.verdict not in VERDICTS:
            raise LedgerError("查实结论须为 属实 或 不属实")
        if current.verified is not None:
            raise LedgerError(f"评价 {rating['id']} 已于 {current.verified.on} 查实")
        return
    if action.kind in ("fix", "extension"):
        if current.verified is None:
            raise LedgerError(f"评价 {rating['id']} 尚未查实：请先查实（属实后才能整改）")
        if current.verified.verdict == "invalid":
            raise LedgerError(f"评价 {rating['id']} 查实不属实，无需整改")
    if action.kind == "fix" and current.fixed is not None:
        raise LedgerError(f"评价 {rating['id']} 已于 {current.fixed.on} 整改")
    if action.kind == "extension":
        if current.fixed is not None:
            raise LedgerError(f"评价 {rating['id']} 已于 {current.fixed.on} 整改")
        if action.new_deadline is None or action.new_deadline <= current.deadline:
            raise LedgerError(f"新的期限须晚于现行整改期限（{current.deadline}）")
