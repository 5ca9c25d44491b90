"""The supervisor's desk: the hall's commands and reports on the server's database.

Every command of ``python -m hall`` other than serving goes through
:class:`HallDesk`, and so can any Python caller (tests, the simulator). It
reads the received events through the server's :class:`~hall.store.Storage`
and keeps the hall's own records in the tables of :mod:`hall.ledger`, on
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

from hall import appeals as appeals_mod
from hall import fleet, ledger, numbers, phone, registry
from hall.appeals import Appeal
from hall.contract import Event
from hall.dating import china_today, date_events
from hall.errors import LedgerError
from hall.export import export_month
from hall.followup import Action, FollowUp, add_action, check_action, follow_up
from hall.ledger import HallRecords
from hall.report import build_report
from hall.store import Storage
from hall.workdays import WorkCalendar, load_calendar


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

    def today(self) -> datetime.date:
        """The desk's today (China's today unless the desk was made with another clock)."""
        return self._today()

    def connection(self) -> sqlite3.Connection:
        """The connection to the hall's records (autocommit), for the push and matter tables."""
        return self._db

    def fleet(self, silent_after_s: float = fleet.SILENT_AFTER_S,
              now: datetime.datetime | None = None) -> list[dict[str, Any]]:
        """Every device the hall knows (see :func:`~hall.fleet.build_fleet`)."""
        return fleet.build_fleet(self.events(), fleet.read_heartbeats(self._db), self.records(),
                                 fleet.read_fingerprints(self._db), last_received=fleet.read_last_received(self._db),
                                 silent_after_s=silent_after_s, now=now)

    def events(self) -> list[Event]:
        """Every received event, with the ratings and 追评 made on the phone page (hall/phone.py)."""
        return phone.with_phone_records(self._db, self._storage.events())

    def records(self) -> HallRecords:
        """The hall's records, with the ids rectified through ``HallServer.resolve()`` and the store's flags."""
        return dataclasses.replace(ledger.read_records(self._db), resolved=frozenset(self._storage.resolved_ids()),
                                   flags=ledger.read_flags(self._db))

    def number_ratings(self, events: list[Event] | None = None) -> None:
        """Give every dated rating without a short number its number (:mod:`hall.numbers`)."""
        events = self.events() if events is None else events
        dated = date_events(events)
        found = sorted((when, str(e["id"])) for e in events if e.get("type") == "rating"
                       and (when := dated.get(str(e.get("id")))) is not None)
        with self._write() as db:
            numbers.assign(db, ((rating_id, when.strftime("%Y-%m")) for when, rating_id in found))

    def report(self, month: str, as_of: datetime.date | None = None, hall: str | None = None) -> dict[str, Any]:
        """The month's report (see :func:`~hall.report.build_report`)."""
        events = self.events()
        self.number_ratings(events)
        return build_report(events, month, today=as_of or self._today(), records=self.records(),
                            calendar=self.calendar, hall=hall)

    def export(self, month: str, fmt: str, hall: str | None = None,
               as_of: datetime.date | None = None) -> dict[str, Any]:
        """The month's export (see :func:`~hall.export.export_month`)."""
        return export_month(self.events(), month, fmt, records=self.records(), hall=hall,
                            today=as_of or self._today())

    def find_rating(self, ref: str) -> tuple[Event, datetime.datetime | None]:
        """The rating numbered ``ref`` (``2026-11-007``), or whose id is ``ref`` or starts with it,
        and its exact China time.

        Raises:
            LedgerError: none, several, or not a rating.
        """
        events = self.events()
        ref = ref.strip().lower()
        if numbers.PATTERN.fullmatch(ref):
            self.number_ratings(events)
            rating_id = numbers.find(numbers.read_numbers(self._db), ref)
            if rating_id is None:
                raise LedgerError(f"没有编号为 {ref} 的评价")
            ref = rating_id.lower()
        found = [e for e in events if str(e.get("id", "")).lower() == ref] or [
            e for e in events if ref and str(e.get("id", "")).lower().startswith(ref)]
        found = [e for e in found if e.get("type") == "rating"]
        if not found:
            raise LedgerError(f"没有编号或 id 为 {ref!r} 的评价")
        if len(found) > 1:
            raise LedgerError(f"有 {len(found)} 条评价的 id 以 {ref!r} 开头：请用评价编号（如 2026-11-007）或更长的 id")
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
            raise LedgerError(f"评价 {rating['id']} 暂无法确定时间：设备尚未发送对时记录")
        rating_id = str(rating["id"])
        appeal = records.appeals.get(rating_id)
        return follow_up(when.date(), records.actions.get(rating_id, ()), appeal.as_of(as_of) if appeal else None,
                         self.calendar, as_of, rating_id in records.resolved)

    # -- the registry ----------------------------------------------------------

    def register(self, device_id: str, hall: str, name: str | None = None, area_code: str | None = None) -> None:
        """Register ``device_id`` as installed in ``hall`` (with the hall's name and 行政区划 code)."""
        if not device_id.strip() or not hall.strip():
            raise LedgerError("请给出设备编号和大厅编号")
        with self._write() as db:
            registry.register(db, device_id, hall, _now(), name, area_code)

    # -- 差评 follow-up -----------------------------------------------------------

    def _act(self, ref: str, kind: str, text: str, on: datetime.date | None, by: str,
             new_deadline: datetime.date | None = None, verdict: str | None = None) -> FollowUp:
        rating, when = self.find_rating(ref)
        day = self._day(on)
        action = Action(str(rating["id"]), kind, day, text, by, new_deadline, verdict)
        with self._write() as db:
            current = self._state(rating, when, self.records(), self._today())
            check_action(rating, action, current)
            add_action(db, action, _now())
        return self._state(rating, when, self.records(), self._today())

    def _day(self, on: datetime.date | None) -> datetime.date:
        today = self._today()
        if on is not None and on > today:
            raise LedgerError(f"{on} 是将来的日期：请在事情发生后再记录")
        return on or today

    def verify(self, ref: str, verdict: str, text: str, on: datetime.date | None = None, by: str = "") -> FollowUp:
        """Record the 查实 of the 差评 ``ref``: ``confirmed`` (to be rectified) or ``invalid`` with the reason
        (off the rectification list, still in the figures; only an appeal takes a rating out of them).

        Raises:
            LedgerError: not a 差评, already checked, overturned, or no text.
        """
        return self._act(ref, "verify", text, on, by, verdict=verdict)

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
            raise LedgerError(f"{day} 早于评价日期（{when.date()}）")
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
