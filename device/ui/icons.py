"""The status icons: 7x7 bitmaps for the idle screen's indicator strip.

A 12 px word per indicator would not fit next to a QR code on a 128x64
panel; these marks are for staff and technicians, not citizens. An icon name
may carry a count (``"backlog:12"``), drawn after it in 3x5 digits.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from device.errors import LayoutError

#: Height (and width, without a count) of one icon (px).
ICON_SIZE = 7

#: Blank columns between icons.
ICON_GAP = 2

ICONS = {
    # A circle with a slash: no connection to the hall server.
    "offline": (
        "..###..",
        ".#...##",
        "#...#.#",
        "#..#..#",
        "#.#...#",
        "##...#.",
        "..###.."),
    # An arrow up onto a bar: events waiting to be uploaded (count follows).
    "backlog": (
        "...#...",
        "..###..",
        ".#.#.#.",
        "...#...",
        "...#...",
        ".......",
        "#######"),
    # A clock face: the wall clock has not been synchronised.
    "clock": (
        ".#####.",
        "#..#..#",
        "#..#..#",
        "#..###.",
        "#.....#",
        "#.....#",
        ".#####."),
    # A database cylinder: storage nearly full.
    "storage": (
        ".#####.",
        "#.....#",
        ".#####.",
        "#.....#",
        ".#####.",
        "#.....#",
        ".#####."),
}

# 3x5 digits for the backlog count, bottom-aligned in the 7 px strip.
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "+": ("...", ".#.", "###", ".#.", "..."),
}


def _icon_parts(name: str) -> tuple[tuple[str, ...], str]:
    """An icon name (``"backlog:12"`` carries a count) -> (bitmap, digits)."""
    base, _, count = name.partition(":")
    if base not in ICONS:
        raise LayoutError(f"unknown status icon {base!r}")
    digits = ""
    if count:
        number = int(count)
        digits = str(number) if number < 1000 else "999+"
    return ICONS[base], digits


def icon_width(name: str) -> int:
    """Width in pixels of one status icon, its count included.

    Raises:
        LayoutError: no such icon.
    """
    _, digits = _icon_parts(name)
    return ICON_SIZE + (1 + 4 * len(digits) - 1 if digits else 0)


def icons_width(names: Sequence[str]) -> int:
    """Width of a strip of icons."""
    return (sum(icon_width(n) for n in names)
            + ICON_GAP * max(0, len(names) - 1))


def paint_icon(image: Image.Image, name: str, x: int, y: int) -> int:
    """Paint one icon (lit = 255) with its top-left at ``x, y``.

    Returns:
        The first column after the icon, its count included.
    """
    bitmap, digits = _icon_parts(name)
    pixels = image.load()
    assert pixels is not None   # an image made in memory always has pixel access
    for dy, row in enumerate(bitmap):
        for dx, cell in enumerate(row):
            if cell == "#":
                pixels[x + dx, y + dy] = 255
    x += ICON_SIZE + 1
    for digit in digits:
        for dy, row in enumerate(_DIGITS[digit]):
            for dx, cell in enumerate(row):
                if cell == "#":
                    pixels[x + dx, y + 2 + dy] = 255
        x += 4
    return x - 1
