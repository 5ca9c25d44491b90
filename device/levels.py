"""The five 好差评 levels, and their numeric codings at the edges.

The device keeps the level's *name* internally; numbers exist only on the
wire, because the two codings in use run in opposite directions (see
shared/reference/haochaping-facts.md).
"""

from __future__ import annotations

import enum


class Level(enum.Enum):
    """A rating level, ordered as the buttons are: 非常满意 first."""

    VERY_SATISFIED = "very_satisfied"
    SATISFIED = "satisfied"
    BASIC = "basically_satisfied"
    DISSATISFIED = "dissatisfied"
    VERY_DISSATISFIED = "very_dissatisfied"

    @classmethod
    def from_button(cls, button: int) -> Level:
        """Level for button 1..5 (1 = 非常满意).

        Raises:
            ValueError: not a button number 1..5.
        """
        if not 1 <= button <= len(_ORDER):
            raise ValueError(f"no rating button {button!r}: buttons are 1..{len(_ORDER)}")
        return _ORDER[button - 1]

    @property
    def button(self) -> int:
        """The button (1..5) that gives this level."""
        return _ORDER.index(self) + 1

    @property
    def satisfaction(self) -> int:
        """The exchange-interface code: 5 = 非常满意 … 1 = 非常不满意."""
        return 6 - self.button

    @property
    def text(self) -> str:
        """The level's name as shown and reported, e.g. ``"非常满意"``."""
        return _TEXT[self]

    @property
    def is_bad(self) -> bool:
        """差评: 不满意 and 非常不满意."""
        return self in (Level.DISSATISFIED, Level.VERY_DISSATISFIED)


_ORDER = list(Level)
_TEXT = {
    Level.VERY_SATISFIED: "非常满意",
    Level.SATISFIED: "满意",
    Level.BASIC: "基本满意",
    Level.DISSATISFIED: "不满意",
    Level.VERY_DISSATISFIED: "非常不满意",
}
