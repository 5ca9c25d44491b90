"""OLED care: keep a static staff card from burning into the panel.

An OLED shows the same idle card for ten hours a day; the lit pixels age
faster than the dark ones and the card stays visible as a ghost. Three
remedies, decided here as a pure function of the time so the app and the
tests drive it the same way:

* the whole frame moves by a pixel every few minutes (layouts keep a dark
  border of ``layout.SAFE_MARGIN`` so nothing is pushed off the glass);
* the panel dims after a while without a press;
* the panel sleeps outside opening hours, unless someone pressed a button
  a moment ago.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging

from PIL import Image

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def _parse_hhmm(value: str, name: str) -> datetime.time:
    if value == "24:00":  # closing at midnight: open to the end of the day
        return datetime.time.max
    try:
        return datetime.datetime.strptime(value, "%H:%M").time()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a time as HH:MM, got {value!r}") \
            from None


@dataclasses.dataclass(frozen=True)
class CareConfig:
    """OLED care settings (``[care]`` and ``[display]`` in config.toml).

    Attributes:
        shift_every_s: seconds between two frame shifts.
        shift_px: largest shift from the home position, in pixels.
        contrast: normal contrast, 0..255.
        dim_contrast: contrast after ``dim_after_s`` without a press.
        dim_after_s: seconds without a press before dimming.
        open_days: ISO weekdays the hall is open (1 = Monday … 7 = Sunday).
        open_from: opening time, ``"HH:MM"`` local wall time.
        open_until: closing time, ``"HH:MM"``; the panel sleeps from then.
        closed_dates: holidays, ``"YYYY-MM-DD"``, when the panel sleeps.
        wake_s: seconds a press keeps the panel awake outside hours.
    """

    shift_every_s: float = 180.0
    shift_px: int = 1
    contrast: int = 255
    dim_contrast: int = 32
    dim_after_s: float = 120.0
    open_days: tuple[int, ...] = (1, 2, 3, 4, 5)
    open_from: str = "08:30"
    open_until: str = "18:00"
    closed_dates: tuple[str, ...] = ()
    wake_s: float = 60.0

    def __post_init__(self) -> None:
        # Lists from TOML become tuples so the config stays hashable.
        object.__setattr__(self, "open_days", tuple(self.open_days))
        object.__setattr__(self, "closed_dates", tuple(self.closed_dates))
        _parse_hhmm(self.open_from, "open_from")
        _parse_hhmm(self.open_until, "open_until")
        for day in self.open_days:
            if day not in range(1, 8):
                raise ValueError(f"open_days: {day!r} is not an ISO weekday 1-7")
        for date in self.closed_dates:
            try:
                datetime.date.fromisoformat(date)
            except (TypeError, ValueError):
                raise ValueError(
                    f"closed_dates: {date!r} is not a date YYYY-MM-DD") from None
        for name in ("contrast", "dim_contrast"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} must be 0..255")
        if self.shift_every_s <= 0:
            raise ValueError("shift_every_s must be positive")
        if self.shift_px < 0:
            raise ValueError("shift_px must not be negative")


@dataclasses.dataclass(frozen=True)
class CareState:
    """What the display should do now.

    Attributes:
        shift: ``(dx, dy)`` to move the whole frame by.
        contrast: panel contrast, 0..255.
        asleep: the panel should be off.
    """

    shift: tuple[int, int] = (0, 0)
    contrast: int = 255
    asleep: bool = False


_DEFAULT = CareConfig()


def shift_cycle(shift_px: int) -> tuple[tuple[int, int], ...]:
    """The positions the frame visits, home first, ring by ring clockwise.

    Consecutive positions are one pixel apart, so the picture never jumps.
    """
    cycle: list[tuple[int, int]] = [(0, 0)]
    for r in range(1, shift_px + 1):
        ring = [(x, -r) for x in range(-r + 1, r + 1)]       # top edge →
        ring += [(r, y) for y in range(-r + 1, r + 1)]       # right edge ↓
        ring += [(x, r) for x in range(r - 1, -r - 1, -1)]   # bottom edge ←
        ring += [(-r, y) for y in range(r - 1, -r - 1, -1)]  # left edge ↑
        cycle += ring
    return tuple(cycle)


def is_open(now_wall: datetime.datetime, cfg: CareConfig) -> bool:
    """Whether the hall is open at local wall time ``now_wall``."""
    if now_wall.date().isoformat() in cfg.closed_dates:
        return False
    if now_wall.isoweekday() not in cfg.open_days:
        return False
    now = now_wall.time().replace(tzinfo=None)
    return (_parse_hhmm(cfg.open_from, "open_from") <= now
            < _parse_hhmm(cfg.open_until, "open_until"))


def care(now_wall: datetime.datetime, last_activity_mono: float | None, now_mono: float,
         cfg: CareConfig = _DEFAULT) -> CareState:
    """Decide shift, contrast and sleep for this moment.

    Args:
        now_wall: local wall-clock time (decides opening hours).
        last_activity_mono: monotonic time of the last press, or None if
            there was none since start.
        now_mono: monotonic time now (decides shift and idle time, so a
            wall-clock jump at network time sync does not disturb them).
        cfg: the settings.

    Returns:
        CareState: what to do.
    """
    cycle = shift_cycle(cfg.shift_px)
    shift = cycle[int(now_mono // cfg.shift_every_s) % len(cycle)]
    idle = (float("inf") if last_activity_mono is None
            else now_mono - last_activity_mono)
    contrast = cfg.dim_contrast if idle >= cfg.dim_after_s else cfg.contrast
    asleep = not is_open(now_wall, cfg) and not idle < cfg.wake_s
    return CareState(shift=shift, contrast=contrast, asleep=asleep)


def apply_shift(image: Image.Image, shift: tuple[int, int]) -> Image.Image:
    """The frame moved by ``shift`` pixels; uncovered pixels are dark.

    Args:
        image: the frame.
        shift: ``(dx, dy)``.

    Returns:
        PIL.Image.Image: a new image of the same size and mode (the input
        itself when the shift is zero).
    """
    dx, dy = shift
    if not dx and not dy:
        return image
    moved = Image.new(image.mode, image.size, 0)
    moved.paste(image, (dx, dy))
    return moved
