"""Time as the device knows it: wall clock, sync status, boot id, monotonic ms.

A Pi has no battery clock: it may boot in 1970 and jump when network time
arrives. Events therefore keep the wall time together with ``clock_synced``,
``boot_id`` and ``mono_ms`` so that the uploader can send a corrected time
later; order is by ``seq``, never by wall time.

Code never reads these module functions directly at run time: it is given a
:class:`Clocks` (the real ones by default), so tests pass clocks they move.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


def wall_now() -> datetime.datetime:
    """The wall clock as an aware datetime in local time."""
    return datetime.datetime.now().astimezone()


def iso(moment: datetime.datetime) -> str:
    """ISO 8601 with offset, millisecond precision."""
    return moment.isoformat(timespec="milliseconds")


def mono_ms() -> int:
    """Milliseconds of CLOCK_MONOTONIC, which counts from boot on Linux."""
    return time.monotonic_ns() // 1_000_000


@functools.cache
def boot_id() -> str:
    """The kernel's id of this boot; changes at every start of the machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc if hasattr(libc, "adjtimex") else None
    except OSError:
        return None


def kernel_clock_synced() -> bool:
    """True when the kernel says the clock is synchronised (NTP, timesyncd, chrony).

    Reads ``adjtimex`` without changing anything; where that is not possible
    the clock is taken as synchronised, as on any machine with a battery clock.
    """
    libc = _libc()
    if libc is None:
        return True
    buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0 reads only
    state = libc.adjtimex(buf)
    return state not in (-1, _TIME_ERROR)


def corrected_time(event: dict[str, Any], now_wall: datetime.datetime, now_mono_ms: int) -> str:
    """Wall time at which an event of this boot really happened, from its mono_ms."""
    delta = datetime.timedelta(milliseconds=now_mono_ms - event["mono_ms"])
    return iso(now_wall - delta)


@dataclass(frozen=True)
class Clocks:
    """The clocks one device build reads, injected everywhere (never module globals).

    Attributes:
        monotonic: seconds since boot (CLOCK_MONOTONIC on Linux).
        wall: the local wall clock as an aware datetime.
        synced: whether the wall clock is synchronised (NTP or the hall).
        boot_id: the kernel's id of this boot.
        sync_check_s: how long one answer of ``synced`` is trusted: the kernel
            is asked at most this often, so a press never waits on it.
    """

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = wall_now
    synced: Callable[[], bool] = kernel_clock_synced
    boot_id: str = field(default_factory=boot_id)
    sync_check_s: float = 10.0
    _cache: list[Any] = field(default_factory=lambda: [None, False], repr=False, compare=False)

    def mono_ms(self) -> int:
        """Milliseconds of the monotonic clock."""
        return int(self.monotonic() * 1000)

    def is_synced(self) -> bool:
        """``synced()``, asked again at most every ``sync_check_s`` seconds."""
        checked_at, value = self._cache
        now = self.monotonic()
        if checked_at is None or now - checked_at > self.sync_check_s:
            value = bool(self.synced())
            self._cache[:] = [now, value]
        return bool(value)
