"""What a screen is made of, and where each part went.

A screen describes *what* it shows as blocks — :class:`Text`, a :class:`Row`
of text cells, a strip of :class:`Icons` — in order of importance;
:mod:`device.ui.layout` decides *where*, and answers with a :class:`Layout`
of :class:`Placed` blocks in panel pixels (:class:`Box`).
"""

from __future__ import annotations

import dataclasses

from device.ui import fonts
from device.ui.icons import ICON_SIZE

#: Soft line break: where a text prefers to wrap. Never drawn.
BREAK = "\u200b"


@dataclasses.dataclass(frozen=True)
class Box:
    """A rectangle in panel pixels; ``x``/``y`` is the top-left pixel."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.x + self.w

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.h

    def grow(self, n: int) -> Box:
        """The box with ``n`` pixels added on every side."""
        return Box(self.x - n, self.y - n, self.w + 2 * n, self.h + 2 * n)

    def overlaps(self, other: Box) -> bool:
        """Whether the two boxes share at least one pixel."""
        return (self.x < other.right and other.x < self.right
                and self.y < other.bottom and other.y < self.bottom)


@dataclasses.dataclass(frozen=True)
class Text:
    """A block of text that may wrap and shrink.

    Attributes:
        text: what to show; ``\\n`` forces a break, :data:`BREAK` marks a
            preferred one.
        max_size: largest native size to use (px).
        min_size: smallest native size allowed before giving up (px).
        align: ``"left"``, ``"center"`` or ``"right"``.
        key: name of the block, for tests and error messages.
        headline: the block the screen is about; it keeps its size longest.
        group: blocks of one group always share a size, so a screen's
            secondary lines stay alike when one of them must shrink.
    """

    text: str
    max_size: int = fonts.MAX_SIZE
    min_size: int = fonts.MIN_SIZE
    align: str = "left"
    key: str = "text"
    headline: bool = False
    group: str = ""


@dataclasses.dataclass(frozen=True)
class Row:
    """Text cells side by side, all at one size.

    Attributes:
        cells: the cells, left to right.
        mode: ``"grid"``: equal columns, text wraps inside each (rows of a
            grid line up); ``"split"``: first cell left, last cell right at
            their natural widths, stacked when they do not fit one line.
    """

    cells: tuple[Text, ...]
    key: str = "row"
    headline: bool = False
    group: str = ""
    mode: str = "grid"

    @property
    def max_size(self) -> int:
        """The largest size every cell allows."""
        return min(c.max_size for c in self.cells)

    @property
    def min_size(self) -> int:
        """The smallest size every cell allows."""
        return max(c.min_size for c in self.cells)


@dataclasses.dataclass(frozen=True)
class Icons:
    """A strip of small status icons (see :mod:`device.ui.icons`)."""

    icons: tuple[str, ...]
    align: str = "left"
    key: str = "icons"
    headline: bool = False
    group: str = ""
    max_size: int = ICON_SIZE
    min_size: int = ICON_SIZE


#: Anything a screen's column is made of.
Block = Text | Row | Icons


@dataclasses.dataclass(frozen=True)
class Line:
    """One drawn line: its text, font size and ink box."""

    text: str
    size: int
    box: Box


@dataclasses.dataclass(frozen=True)
class Placed:
    """A block after layout.

    Attributes:
        key: the block's key.
        kind: ``"text"``, ``"icons"`` or ``"qr"``.
        box: the ink box (everything drawn lies inside it).
        size: font size (text), icon size, or QR module size.
        lines: the drawn lines (text and rows).
        icons: the icon names (icons).
        url: the QR code's URL (qr).
    """

    key: str
    kind: str
    box: Box
    size: int
    lines: tuple[Line, ...] = ()
    icons: tuple[str, ...] = ()
    url: str = ""

    @property
    def region(self) -> Box:
        """``box`` plus one blank pixel on each side."""
        return self.box.grow(1)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything of one frame goes."""

    size: tuple[int, int]
    items: tuple[Placed, ...]

    def find(self, key: str) -> Placed:
        """The placed block with this key.

        Raises:
            KeyError: no such block.
        """
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(key)
