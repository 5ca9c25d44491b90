"""China's official working days: statutory holidays and 调休 make-up working days.

A 差评 is rectified within 10 *working* days (rules, 第十三条), and a working
day in China is not simply Monday to Friday: the State Council publishes each
year's holidays and the weekend days worked in exchange (调休). The calendar
comes from the maintained ``chinese-calendar`` library, overlaid by data files
(TOML) in which a hall adds the next year's dates as soon as they are
published, or corrects a day, without a code change::

    [2027]
    source = "国务院办公厅关于2027年部分节假日安排的通知"
    holidays = [2027-01-01, 2027-02-08]   # days off that would be working days
    workdays = [2027-02-06]               # weekend days that are working days

A year listed in a file counts as official. A day of a year that neither the
library nor any file knows is counted Monday to Friday, and every deadline
that runs through such a day is marked *provisional*, so nobody mistakes a
guess for the official count.
"""

from __future__ import annotations

import datetime
import logging
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

import chinese_calendar

logger = logging.getLogger(__name__)

#: The overlay shipped with the stand-in hall (``hall/holidays.toml``).
DEFAULT_HOLIDAYS_FILE = Path(__file__).with_name("holidays.toml")
#: A confirmed 差评 is rectified within 10 working days (rules, 第十三条).
RECTIFY_WORKING_DAYS = 10


class WorkCalendar:
    """Which days are working days, from the library and the halls' overlay.

    Args:
        holidays: days off, whatever weekday (they win over the library).
        workdays: days worked, whatever weekday (they win over the library).
        years: years the overlay declares complete and official.
        use_library: ask ``chinese-calendar`` for the years it covers.
    """

    def __init__(self, holidays: Iterable[datetime.date] = (), workdays: Iterable[datetime.date] = (),
                 years: Iterable[int] = (), use_library: bool = True) -> None:
        self._holidays = set(holidays)
        self._workdays = set(workdays)
        both = self._holidays & self._workdays
        if both:
            raise ValueError(f"both a holiday and a working day: {', '.join(sorted(map(str, both)))}")
        self._years = set(years)
        if use_library:
            self._library_years = range(min(chinese_calendar.holidays).year,
                                        max(chinese_calendar.holidays).year + 1)
        else:
            self._library_years = range(0)
        self._warned: set[int] = set()

    def is_official(self, day: datetime.date) -> bool:
        """True when ``day``'s year comes from the library or a file, not a Mon-Fri guess."""
        return day.year in self._years or day.year in self._library_years

    def is_workday(self, day: datetime.date) -> bool:
        """True when ``day`` is a working day in China."""
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        if day.year in self._library_years:
            return bool(chinese_calendar.is_workday(day))
        if day.year not in self._years and day.year not in self._warned:
            self._warned.add(day.year)
            logger.warning("no official calendar for %d: counting Monday to Friday; add the year to %s",
                           day.year, DEFAULT_HOLIDAYS_FILE.name)
        return day.weekday() < 5

    def add_working_days(self, day: datetime.date, count: int) -> datetime.date:
        """The ``count``-th working day after ``day`` (``day`` itself is not counted)."""
        while count > 0:
            day += datetime.timedelta(days=1)
            if self.is_workday(day):
                count -= 1
        return day

    def working_days_between(self, start: datetime.date, end: datetime.date) -> int:
        """Working days after ``start`` up to and including ``end``; 0 when ``end <= start``."""
        count, day = 0, start
        while day < end:
            day += datetime.timedelta(days=1)
            count += self.is_workday(day)
        return count

    def deadline(self, day: datetime.date, count: int = RECTIFY_WORKING_DAYS) -> tuple[datetime.date, bool]:
        """``(deadline, official)``: ``count`` working days after ``day``.

        ``official`` is False when a day in between was counted by guess.
        """
        end = self.add_working_days(day, count)
        official = all(self.is_official(datetime.date(year, 1, 1)) for year in range(day.year, end.year + 1))
        return end, official


def read_overlay(path: str | os.PathLike[str]) -> tuple[set[datetime.date], set[datetime.date], set[int]]:
    """Read one overlay file.

    Returns:
        ``(holidays, workdays, years)``.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not TOML of the shape in the module docstring.
    """
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    holidays: set[datetime.date] = set()
    workdays: set[datetime.date] = set()
    years: set[int] = set()
    for key, table in data.items():
        if not key.isdigit() or not isinstance(table, dict):
            raise ValueError(f"{path}: [{key}] must be a year table such as [2027]")
        year = int(key)
        years.add(year)
        unknown = set(table) - {"holidays", "workdays", "source"}
        if unknown:
            raise ValueError(f"{path}: [{key}] has unknown keys: {', '.join(sorted(unknown))}")
        for name, into in (("holidays", holidays), ("workdays", workdays)):
            days = table.get(name, [])
            if not isinstance(days, list) or not all(_is_date(d) for d in days):
                raise ValueError(f"{path}: [{key}] {name} must be a list of dates (YYYY-MM-DD, unquoted)")
            if any(d.year != year for d in days):
                raise ValueError(f"{path}: [{key}] {name} lists a day of another year")
            into.update(days)
    return holidays, workdays, years


def _is_date(value: object) -> bool:
    return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)


def load_calendar(*paths: str | os.PathLike[str]) -> WorkCalendar:
    """The library overlaid by the shipped file, then by each of ``paths`` in turn.

    A later file wins over an earlier one for the days it names.

    Raises:
        OSError: a file cannot be read.
        ValueError: a file is malformed, or names one day both ways.
    """
    holidays: set[datetime.date] = set()
    workdays: set[datetime.date] = set()
    years: set[int] = set()
    for path in (DEFAULT_HOLIDAYS_FILE, *paths):
        more_holidays, more_workdays, more_years = read_overlay(path)
        holidays = (holidays - more_workdays) | more_holidays
        workdays = (workdays - more_holidays) | more_workdays
        years |= more_years
    return WorkCalendar(holidays, workdays, years)


_default: WorkCalendar | None = None


def add_working_days(day: datetime.date, count: int) -> datetime.date:
    """``count`` working days after ``day`` by the default calendar (:func:`load_calendar` with no file)."""
    global _default
    if _default is None:
        _default = load_calendar()
    return _default.add_working_days(day, count)
