"""The supervisor's desk: the hall's commands and reports on the server's database.

Every command of ``python -m sim.hall`` other than serving goes through
:class:`HallDesk`, and so can any Python caller (tests, the simulator). It
reads the received events through the server's :class:`~sim.hall.store.Storage`
and keeps the hall's own records in the tables of :mod:`sim.hall.ledger`, on
the same SQLite file, so a hall can run the whole loop on the database of a
``make demo`` run while the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

from sim.hall import appeals as appeals_mod
from sim.hall import ledger, registry
from sim.hall.appeals import Appeal
from sim.hall.contract import Event
from sim.hall.dating import china_today, date_events
from sim.hall.errors import LedgerError
from sim.hall.export import export_month
from sim.hall.followup import Action, FollowUp, add_action, check_action, follow_up
from sim.hall.ledger import HallRecords
from sim.hall.report import build_report
from sim.hall.store import Storage
from sim.hall.workdays import WorkCalendar, load_calendar


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class HallDesk:
    """The hall's commands and reports on one server database.

    Args:
        db_path: the stand-in server's SQLite file.
        calendar: the working-day calendar; the library and the shipped overlay by default.
        today: the day commands are dated with when no day is given (China's today by default).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, db_path: str | os.PathLike[str], calendar: WorkCalendar | None = None,
                 today: Callable[[], datetime.date] = china_today) -> None:
        self._storage = Storage(db_path)
        try:
            self._db = ledger.connect(db_path)
        except BaseException:
            self._storage.close()
            raise
        self.calendar = calendar or load_calendar()
        self._today = today

    def close(self) -> None:
        """Close both connections."""
        self._db.close()
        self._storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the checks and the change see the same records."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading -------------------------------------------------------------

    def events(self) -> list[Event]:
        """Every received event."""
        return self._storage.events()

    def records(self) -> HallRecords:
        """The hall's records, with the ids rectified through ``HallServer.resolve()``."""
        return dataclasses.replace(ledger.read_records(self._db),
                                   resolved=frozenset(self._storage.resolved_ids()))

    def report(self, month: str, as_of: datetime.date | None = None, hall: str | None = None) -> dict[str, Any]:
        """The month's report (see :func:`~sim.hall.report.build_report`)."""
        return build_report(self.events(), month, today=as_of or self._today(), records=self.records(),
                            calendar=self.calendar, hall=hall)

    def export(self, month: str, fmt: str, hall: str | None = None,
               as_of: datetime.date | None = None) -> dict[str, Any]:
        """The month's export (see :func:`~sim.hall.export.export_month`)."""
        return export_month(self.events(), month, fmt, records=self.records(), hall=hall,
                            today=as_of or self._today())

    def find_rating(self, ref: str) -> tuple[Event, datetime.datetime | None]:
        """The rating whose id is ``ref`` or starts with it, and its exact China time.

        Raises:
            LedgerError: none, several, or not a rating.
        """
        events = self.events()
        ref = ref.strip().lower()
        found = [e for e in events if str(e.get("id", "")).lower() == ref] or [
            e for e in events if ref and str(e.get("id", "")).lower().startswith(ref)]
        found = [e for e in found if e.get("type") == "rating"]
        if not found:
            raise LedgerError(f"no rating with id {ref!r}")
        if len(found) > 1:
            raise LedgerError(f"{len(found)} ratings start with {ref!r}: give more of the id")
        rating = found[0]
        return rating, date_events(events)[str(rating["id"])]

    def follow_up(self, ref: str, as_of: datetime.date | None = None) -> FollowUp:
        """Where the 差评 ``ref`` stands.

        Raises:
            LedgerError: no such rating, or it cannot be dated yet.
        """
        rating, when = self.find_rating(ref)
        return self._state(rating, when, self.records(), as_of or self._today())

    def _state(self, rating: Event, when: datetime.datetime | None, records: HallRecords,
               as_of: datetime.date) -> FollowUp:
        if when is None:
            raise LedgerError(f"rating {rating['id']} cannot be dated yet: its device has not sent a clock event")
        rating_id = str(rating["id"])
        appeal = records.appeals.get(rating_id)
        return follow_up(when.date(), records.actions.get(rating_id, ()), appeal.as_of(as_of) if appeal else None,
                         self.calendar, as_of, rating_id in records.resolved)

    # -- the registry ----------------------------------------------------------

    def register(self, device_id: str, hall: str, name: str | None = None, area_code: str | None = None) -> None:
        """Register ``device_id`` as installed in ``hall`` (with the hall's name and 行政区划 code)."""
        if not device_id.strip() or not hall.strip():
            raise LedgerError("give a device id and a hall id")
        with self._write() as db:
            registry.register(db, device_id, hall, _now(), name, area_code)

    # -- 差评 follow-up -----------------------------------------------------------

    def _act(self, ref: str, kind: str, text: str, on: datetime.date | None, by: str,
             new_deadline: datetime.date | None = None) -> FollowUp:
        rating, when = self.find_rating(ref)
        day = self._day(on)
        action = Action(str(rating["id"]), kind, day, text, by, new_deadline)
        with self._write() as db:
            current = self._state(rating, when, self.records(), self._today())
            check_action(rating, action, current)
            add_action(db, action, _now())
        return self._state(rating, when, self.records(), self._today())

    def _day(self, on: datetime.date | None) -> datetime.date:
        today = self._today()
        if on is not None and on > today:
            raise LedgerError(f"{on} is in the future: record what happened, when it has happened")
        return on or today

    def record_fix(self, ref: str, text: str, on: datetime.date | None = None, by: str = "") -> FollowUp:
        """Record that the 差评 ``ref`` was rectified (on ``on``, today by default): what was done.

        Raises:
            LedgerError: not a 差评, already fixed or overturned, no text, a day before the rating.
        """
        return self._act(ref, "fix", text, on, by)

    def extend(self, ref: str, until: datetime.date, reason: str, on: datetime.date | None = None,
               by: str = "") -> FollowUp:
        """Extend the deadline of the 差评 ``ref`` to ``until``, with the reason it cannot be met.

        Raises:
            LedgerError: not a 差评, already fixed or overturned, no reason, or ``until`` not after
                the deadline in force.
        """
        return self._act(ref, "extension", reason, on, by, until)

    def reply(self, ref: str, text: str, on: datetime.date | None = None, by: str = "") -> FollowUp:
        """Record the reply given to the citizen about the 差评 ``ref``.

        Raises:
            LedgerError: not a 差评, overturned, or no text.
        """
        return self._act(ref, "reply", text, on, by)

    # -- appeals -------------------------------------------------------------------

    def file_appeal(self, ref: str, grounds: str, by: str, on: datetime.date | None = None) -> Appeal:
        """Staff appeal against the rating ``ref`` with their grounds.

        Raises:
            LedgerError: no such rating, no grounds or name, or an appeal already filed.
        """
        rating, when = self.find_rating(ref)
        day = self._day(on)
        if when is not None and day < when.date():
            raise LedgerError(f"{day} is before the rating ({when.date()})")
        with self._write() as db:
            n = appeals_mod.file_appeal(db, str(rating["id"]), day, by, grounds, _now())
            return appeals_mod.read_appeal(db, n)

    def decide_appeal(self, n: int, decision: str, reviewer: str, note: str,
                      on: datetime.date | None = None) -> Appeal:
        """The reviewer's decision on appeal ``n``: ``upheld`` (the rating stands) or ``overturned``.

        Raises:
            LedgerError: no such appeal, already decided, or no reviewer or note.
        """
        with self._write() as db:
            return appeals_mod.decide_appeal(db, n, decision, self._day(on), reviewer, note)

    def appeals(self) -> list[Appeal]:
        """Every appeal, in the order filed."""
        return appeals_mod.read_appeals(self._db)
