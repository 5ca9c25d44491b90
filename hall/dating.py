"""When an event happened, in China time: the one dating rule of the hall.

A device without a battery clock may stamp events before its clock is set
(``clock_synced: false``, often in 1970). Once the clock of that boot becomes
trustworthy the device appends a ``clock`` event: at monotonic ``mono_ms`` the
true wall time was ``synced_at``. Every event of the same device and boot is
then dated exactly::

    synced_at - (clock.mono_ms - event.mono_ms)

whether it was delivered before or after the ``clock`` event. An unsynced
event whose boot has no ``clock`` event yet has no known time: it is *undated*
and counted apart, never put into 1970 nor into the month it was received.

The hall reports by the calendar of the halls it serves: China time
(Asia/Shanghai, UTC+8 all year). A rating at 23:30 UTC on 30 November is a
December rating.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from hall.contract import parse_time

#: The halls' time zone.
CHINA = ZoneInfo("Asia/Shanghai")

_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def _mono(value: Any) -> int | None:
    # bool is an int subclass: True is not a millisecond count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def exact_time(event: Mapping[str, Any], clock_event: Mapping[str, Any] | None) -> datetime.datetime | None:
    """The time ``event`` happened, or ``None`` when it cannot be known yet.

    Args:
        event: a stored event. Unless it says ``clock_synced: false`` its own
            ``occurred_at`` is trusted.
        clock_event: the ``clock`` event of the same device and boot, if the
            hall holds one. It is used only when device and boot match.

    Returns:
        An aware datetime (in whatever offset it was given; convert with
        :func:`china_time`), or ``None`` for an unsynced event whose boot has
        no usable ``clock`` event.
    """
    if event.get("type") == "clock":
        return parse_time(event.get("synced_at")) or parse_time(event.get("occurred_at"))
    if event.get("clock_synced") is not False:
        return parse_time(event.get("occurred_at"))
    if clock_event is None or clock_event.get("type") != "clock":
        return None
    if (clock_event.get("device_id"), clock_event.get("boot_id")) != (event.get("device_id"), event.get("boot_id")):
        return None
    synced_at = parse_time(clock_event.get("synced_at"))
    clock_mono, event_mono = _mono(clock_event.get("mono_ms")), _mono(event.get("mono_ms"))
    if synced_at is None or clock_mono is None or event_mono is None:
        return None
    return synced_at - datetime.timedelta(milliseconds=clock_mono - event_mono)


def clock_events(events: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, Any], Mapping[str, Any]]:
    """``(device_id, boot_id)`` -> the first ``clock`` event of that boot (lowest ``seq``)."""
    found: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for event in events:
        if event.get("type") != "clock":
            continue
        key = (event.get("device_id"), event.get("boot_id"))
        held = found.get(key)
        if held is None or _seq(event) < _seq(held):
            found[key] = event
    return found


def _seq(event: Mapping[str, Any]) -> int:
    seq = event.get("seq")
    return seq if isinstance(seq, int) else 0


def date_events(events: Iterable[Mapping[str, Any]]) -> dict[str, datetime.datetime | None]:
    """Event id -> its exact time in China time, ``None`` where it is undated.

    Args:
        events: every stored event the dating may need: the ``clock`` events
            must be among them (a list is read twice).

    Returns:
        A dict with every event's ``id``.
    """
    events = list(events)
    clocks = clock_events(events)
    dated: dict[str, datetime.datetime | None] = {}
    for event in events:
        when = exact_time(event, clocks.get((event.get("device_id"), event.get("boot_id"))))
        dated[str(event.get("id"))] = china_time(when) if when is not None else None
    return dated


def china_time(when: datetime.datetime) -> datetime.datetime:
    """``when`` (aware) as Asia/Shanghai time."""
    return when.astimezone(CHINA)


def check_month(month: str) -> str:
    """``month`` if it is ``YYYY-MM``.

    Raises:
        ValueError: it is not.
    """
    if not isinstance(month, str) or not _MONTH.fullmatch(month):
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    return month


def month_days(month: str) -> tuple[datetime.date, datetime.date]:
    """The first day of ``month`` and the first day of the month after it.

    Raises:
        ValueError: ``month`` is not ``YYYY-MM``.
    """
    year, number = (int(part) for part in check_month(month).split("-"))
    first = datetime.date(year, number, 1)
    after = datetime.date(year + number // 12, number % 12 + 1, 1)
    return first, after


def month_of(when: datetime.datetime) -> str:
    """``YYYY-MM`` of ``when`` in China time."""
    return china_time(when).strftime("%Y-%m")


def china_today() -> datetime.date:
    """Today's date in China."""
    return datetime.datetime.now(CHINA).date()
