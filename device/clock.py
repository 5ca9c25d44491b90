"""Time as the device knows it: wall clock, sync status, hall time, boot id, monotonic ms.

A Pi has no battery clock: it may boot in 1970 and jump when network time
arrives, and a government intranet may block NTP for good. Events therefore
keep the wall time together with ``clock_synced``, ``boot_id`` and
``mono_ms``; order is by ``seq``, never by wall time.

Two sources make the clock trustworthy: the kernel's (NTP, timesyncd,
chrony) and the hall's. The ``created`` of every answer that verifies as the
hall's (DESIGN.md "Uplink contract v2") is the hall's time; the transports
hand it to :meth:`Clocks.learn_hall_time`, and from then on a device without
NTP tells the time by the hall (``clock_source: "hall"``), counted on the
monotonic clock so that nothing the system clock does can move it. Once the
clock is trustworthy, the loop appends one ``clock`` event
(:meth:`Clocks.clock_event_due`), from which anyone holding the events dates
every event of this boot exactly.

Code never reads these module functions directly at run time: it is given a
:class:`Clocks` (the real ones by default), so tests pass clocks they move.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised

#: ``clock_source`` of a clock set by NTP (the kernel says it is synchronised).
NTP = "ntp"
#: ``clock_source`` of a clock told by the hall's signed answers.
HALL = "hall"
#: The fault while the system clock claims to be synced but differs from verified hall time.
DISAGREES = "clock_disagrees"
#: ``clock.max_disagreement_s``'s default: seconds a synced clock may differ from the hall's.
MAX_DISAGREEMENT_S = 120.0


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


_read_boot_id = boot_id


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


class Clocks:
    """The clocks one device process reads, injected everywhere (never module globals).

    One instance lives as long as the process (the supervisor hands the same
    one to every build), is read from every thread, and is changed only
    through :meth:`learn_hall_time` (any thread) and
    :meth:`clock_event_kept` (the loop).

    Args:
        monotonic: seconds since boot (CLOCK_MONOTONIC on Linux).
        wall: the system's wall clock as an aware datetime.
        synced: whether the system's wall clock is synchronised (by NTP).
        boot_id: the kernel's id of this boot.
        sync_check_s: how long one answer of ``synced`` is trusted: the kernel
            is asked at most this often, so a press never waits on it.
        max_disagreement_s: a system clock that claims to be synced but
            differs from verified hall time by more than this is not
            believed (``clock_disagrees``): events are stamped unsynced and
            dated by the hall's time through a ``clock`` event.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime.datetime] = wall_now,
                 synced: Callable[[], bool] = kernel_clock_synced, boot_id: str | None = None,
                 sync_check_s: float = 10.0, max_disagreement_s: float = MAX_DISAGREEMENT_S) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._synced = synced
        self.boot_id = boot_id if boot_id is not None else _read_boot_id()
        self.sync_check_s = sync_check_s
        self._checked: tuple[float, bool] | None = None
        #: ``(hall Unix seconds, monotonic seconds)`` of the last verified answer; swapped whole.
        self._hall: tuple[float, float] | None = None
        self._lock = threading.Lock()
        #: An event of this boot was stamped while the clock could not be trusted: a ``clock`` event will date it.
        self._clock_event_owed = False
        self.max_disagreement_s = max_disagreement_s
        #: Seconds the synced system clock was off verified hall time at the last answer (None: not judged).
        self._disagreement: float | None = None
        #: A hall-sourced ``clock`` event was kept while the clocks disagreed: it dates the rest of this boot.
        self._dated_by_hall = False

    # --- reading -----------------------------------------------------------------

    def monotonic(self) -> float:
        """Seconds of the monotonic clock."""
        return self._monotonic()

    def mono_ms(self) -> int:
        """Milliseconds of the monotonic clock."""
        return int(self._monotonic() * 1000)

    def ntp_synced(self) -> bool:
        """Whether the system clock is synchronised, asked again at most every ``sync_check_s`` seconds."""
        now = self._monotonic()
        checked = self._checked
        if checked is None or now - checked[0] >= self.sync_check_s:
            checked = (now, bool(self._synced()))
            self._checked = checked
        return checked[1]

    def source(self) -> str:
        """``"ntp"``, ``"hall"``, or ``""`` while the clock cannot be trusted."""
        if self.ntp_synced() and not self.disagrees():
            return NTP
        return HALL if self._hall is not None else ""

    def disagrees(self) -> bool:
        """Whether the system clock claims to be synced but is off verified hall time (``clock_disagrees``)."""
        off = self._disagreement
        return off is not None and abs(off) > self.max_disagreement_s and self.ntp_synced()

    def is_synced(self) -> bool:
        """Whether events may be stamped ``clock_synced: true``: NTP or the hall, and no disagreement.

        A clock that disagrees with the hall is never believed to be synced,
        whatever the kernel says: its events are stamped unsynced, with the
        hall's time, and a ``clock`` event dates them.
        """
        return bool(self.source()) and not self.disagrees()

    def wall(self) -> datetime.datetime:
        """The best wall time: the system's when NTP set it (and the hall agrees), else the hall's when known."""
        system = self._wall()
        if self.ntp_synced() and not self.disagrees():
            return system
        hall = self.hall_now()
        if hall is None:
            return system
        return datetime.datetime.fromtimestamp(hall, system.tzinfo or datetime.UTC)

    def hall_now(self) -> float | None:
        """The hall's time now (Unix seconds) as learnt from its last verified answer, or None."""
        hall = self._hall
        if hall is None:
            return None
        at, mono = hall
        return at + (self._monotonic() - mono)

    # --- changing ------------------------------------------------------------------

    def learn_hall_time(self, created: int) -> None:
        """The ``created`` of an answer that verified as the hall's: the hall's time, just now.

        ``created`` is whole seconds cut down, so the middle of that second is
        taken; it is counted on from the monotonic clock, which nothing moves.
        """
        self._hall = (created + 0.5, self._monotonic())
        if self.ntp_synced():
            self._disagreement = self._wall().timestamp() - (created + 0.5)
        else:
            self._disagreement = None

    def stamped_unsynced(self) -> None:
        """An event of this boot was stamped while the clock could not be trusted (or one is known to be)."""
        with self._lock:
            if self._dated_by_hall and self.disagrees():
                return  # this boot's hall clock event dates it already
            self._clock_event_owed = True

    def clock_event_due(self) -> str:
        """The source to name in a ``clock`` event if one is owed now, else ``""``.

        One is owed once the clock is trustworthy after an event of this boot
        was stamped while it was not (:meth:`stamped_unsynced`).
        """
        with self._lock:
            return self.source() if self._clock_event_owed else ""

    def clock_event_kept(self) -> None:
        """The ``clock`` event is in the outbox: none is owed until another event is stamped unsynced."""
        with self._lock:
            self._clock_event_owed = False
            if self.disagrees():
                self._dated_by_hall = True
