"""Quiet hours: the voice and the beep are silent outside the opening hours (``hours.*``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device.ui import care

if TYPE_CHECKING:
    from device.config import Config


class QuietHours:
    """``audio.quiet_outside_hours``: silent outside the opening hours (``hours.*``) on a clock that is set."""

    def __init__(self, config: Config, wall: Callable[[], Any] | None, synced: Callable[[], bool]) -> None:
        h = config.hours
        self.enabled = config.audio.quiet_outside_hours
        self.wall = wall
        self.synced = synced
        self.hours = care.CareConfig(open_days=h.open_days, open_from=h.open_from, open_until=h.open_until,
                                     closed_dates=h.closed_dates)

    def quiet(self) -> bool:
        if not self.enabled or self.wall is None or not self.synced():
            return False
        return not care.is_open(self.wall(), self.hours)
