"""Time as the device knows it: wall clock, sync status, boot id, monotonic ms.

A Pi has no battery clock: it may boot in 1970 and jump when network time
arrives. Events therefore keep the wall time together with ``clock_synced``,
``boot_id`` and ``mono_ms`` so that the uploader can send a corrected time
later; order is by ``seq``, never by wall time.
"""

import ctypes
import ctypes.util
import datetime
import functools
import time

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


def wall_now():
    """The wall clock as an aware datetime in local time."""
    return datetime.datetime.now().astimezone()


def iso(moment):
    """ISO 8601 with offset, millisecond precision."""
    return moment.isoformat(timespec="milliseconds")


def mono_ms():
    """Milliseconds of CLOCK_MONOTONIC, which counts from boot on Linux."""
    return time.monotonic_ns() // 1_000_000


@functools.cache
def boot_id():
    """The kernel's id of this boot; changes at every start of the machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc if hasattr(libc, "adjtimex") else None
    except OSError:
        return None


def kernel_clock_synced():
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


def corrected_time(event, now_wall, now_mono_ms):
    """Wall time at which an event of this boot really happened, from its mono_ms."""
    delta = datetime.timedelta(milliseconds=now_mono_ms - event["mono_ms"])
    return iso(now_wall - delta)
