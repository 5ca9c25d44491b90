"""Measuring and wrapping text in the bitmap font.

Geometry is measured on the glyphs' real boxes, so that a line's ink box is
exact: the layout promises that no lit pixel touches a block's region edge.
Wrapping follows Chinese rules (a break may fall between any two characters,
but never before closing punctuation), keeps Latin words and digit runs
whole where it can, and balances the lines (never an ellipsis).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

from device.ui import fonts
from device.ui.blocks import BREAK

# Characters that must not start a line: closing punctuation, and the middle
# dot of minority names (张·三) stays with the part before it.
_NO_LINE_START = "，。、：；！？）》」』·.,:;!?)%"


@functools.cache
def _reference_rows(size: int) -> tuple[int, int]:
    """Top and bottom ink rows every line at ``size`` includes.

    Lines share the extent of a CJK glyph so that lines of plain Chinese,
    digits and capitals all line up; descenders extend their own line.
    """
    _, top, _, bottom = fonts.text_bbox("国", size)
    return top, bottom


@functools.lru_cache(maxsize=4096)
def measure(text: str, size: int) -> tuple[int, int, int, int]:
    """Ink box of one line: ``(left, top, width, height)`` from the origin.

    Measured from the font's metrics (:func:`~device.ui.fonts.text_bbox`),
    so trying a size does not load its face.
    """
    ref_top, ref_bottom = _reference_rows(size)
    if not text:
        return 0, ref_top, 0, ref_bottom - ref_top
    left, top, right, bottom = fonts.text_bbox(text, size)
    left = min(left, 0)
    top, bottom = min(top, ref_top), max(bottom, ref_bottom)
    return left, top, right - left, bottom - top


def text_width(text: str, size: int) -> int:
    """Ink width of one line in pixels."""
    return measure(text, size)[2]


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


def _units(paragraph: str) -> list[str]:
    """Pieces of a paragraph between which a line may break.

    Chinese may break between any two characters; Latin words and digit
    runs stay whole; spaces are break points and vanish at a break.
    Characters that must not start a line (closing punctuation, the middle
    dot of minority names) stick to the piece before them.
    """
    units: list[str] = []
    for char in paragraph:
        if char == " ":
            units.append(" ")
        elif (units and units[-1] != " "
              and (char in _NO_LINE_START
                   or (not _is_wide(char) and not _is_wide(units[-1][-1])
                       and units[-1][-1] not in "·"))):
            units[-1] += char
        else:
            units.append(char)
    return units


def _greedy(units: Sequence[str], width: int, size: int) -> list[str] | None:
    """Fill lines greedily; None if one piece is wider than ``width``."""
    lines: list[str] = []
    current = ""
    for unit in units:
        candidate = (current + unit) if current else unit.lstrip(" ")
        if not candidate:
            continue
        if text_width(candidate.rstrip(" "), size) <= width:
            current = candidate
        elif text_width(unit.strip(" "), size) <= width:
            lines.append(current.rstrip(" "))
            current = unit.strip(" ")
        else:
            return None
    if current.strip(" "):
        lines.append(current.rstrip(" "))
    return lines


def _balanced(units: Sequence[str], width: int, size: int) -> list[str] | None:
    """Greedy lines, then the narrowest width that keeps their count.

    Balancing turns a 7-character name wrapped 5+2 into 4+3.
    """
    lines = _greedy(units, width, size)
    if lines is None or len(lines) <= 1:
        return lines
    low, high = 1, width
    while low < high:
        mid = (low + high) // 2
        attempt = _greedy(units, mid, size)
        if attempt is not None and len(attempt) <= len(lines):
            high = mid
        else:
            low = mid + 1
    return _greedy(units, low, size)


@functools.lru_cache(maxsize=4096)
def wrap(text: str, width: int, size: int) -> tuple[str, ...] | None:
    """Break ``text`` into lines no wider than ``width`` at ``size``.

    Preferred breaks (:data:`~device.ui.blocks.BREAK`) are used when each
    piece fits; else the text breaks between characters or words, and a word
    too long for a line breaks between its letters.

    Returns:
        The lines, or None if one character is too wide.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        # Hinted pieces that fit stay whole; a piece too wide for the line
        # breaks between characters/words, then at URL-ish punctuation,
        # and as the last resort between any two characters.
        units: list[str] = []
        for piece in paragraph.split(BREAK):
            if text_width(piece.strip(" "), size) <= width:
                units.append(piece)
            else:
                units.extend(_units(piece))
        chosen = _balanced(units, width, size)
        if chosen is None:
            plain = paragraph.replace(BREAK, "")
            chosen = _balanced(re.findall(r"[^./:_-]*[./:_-]?", plain)[:-1]
                               or [plain], width, size)
        if chosen is None:
            chosen = _balanced(list(paragraph.replace(BREAK, "")), width, size)
        if chosen is None:
            return None
        lines.extend(chosen or [""])
    return tuple(line.replace(BREAK, "").strip(" ") for line in lines)
