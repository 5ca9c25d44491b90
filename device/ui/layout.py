"""One layout engine for every screen and every panel size.

A screen describes *what* it shows as blocks (lines of text, a row of
cells, a strip of status icons) and optionally a QR code; this module
decides *where*: it splits the panel into a text column and a QR square,
picks the largest native font size that lets every block fit, wraps text
(balanced lines, never an ellipsis) and shrinks down to 12 px before it
gives up with a :class:`LayoutError`.

Geometry is measured on the glyphs' real boxes, so a placed block's
``region`` (its ink box plus one blank pixel on each side) is a promise:
no lit pixel of the block touches the region's edge. Neighbouring regions
may share that blank border, never ink.

The outermost pixel of the panel is kept dark (:data:`SAFE_MARGIN`) so the
OLED-care pixel shift (see ``care.py``) never pushes anything off the glass.
"""

import dataclasses
import functools
import logging
import re
import unicodedata

from PIL import Image, ImageDraw

from device.errors import EvaluatorError
from device.ui import fonts
from device.ui.qr import min_side, qr_fit, qr_image

logger = logging.getLogger(__name__)

#: Dark border kept on every side; equals the largest care shift (px).
SAFE_MARGIN = 1

#: Blank pixels between the text column and the QR square.
QR_GAP = 3

#: Blank rows between wrapped lines of one block.
LINE_GAP = 1

#: Blank rows between blocks: at least / at most (extra space is shared).
MIN_BLOCK_GAP = 1
MAX_BLOCK_GAP = 4

#: Blank columns between the cells of a row.
CELL_GAP = 4

#: Soft line break: where a text prefers to wrap. Never drawn.
BREAK = "\u200b"

#: Height of the status icon strip (px).
ICON_SIZE = 7


class LayoutError(EvaluatorError, ValueError):
    """The content cannot fit the panel even at the smallest font."""


@dataclasses.dataclass(frozen=True)
class Box:
    """A rectangle in panel pixels; ``x``/``y`` is the top-left pixel."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self):
        """One past the last column."""
        return self.x + self.w

    @property
    def bottom(self):
        """One past the last row."""
        return self.y + self.h

    def grow(self, n):
        """The box with ``n`` pixels added on every side."""
        return Box(self.x - n, self.y - n, self.w + 2 * n, self.h + 2 * n)

    def overlaps(self, other):
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
        mode: ``"grid"``: equal columns, text wraps inside each (rows of a
            grid line up); ``"split"``: first cell left, last cell right at
            their natural widths, stacked when they do not fit one line.
    """

    cells: tuple
    key: str = "row"
    headline: bool = False
    group: str = ""
    mode: str = "grid"

    @property
    def max_size(self):
        return min(c.max_size for c in self.cells)

    @property
    def min_size(self):
        return max(c.min_size for c in self.cells)


@dataclasses.dataclass(frozen=True)
class Icons:
    """A strip of small status icons (see ``screens.ICONS``)."""

    icons: tuple
    align: str = "left"
    key: str = "icons"
    headline: bool = False
    group: str = ""
    max_size: int = ICON_SIZE
    min_size: int = ICON_SIZE


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
        region: ``box`` plus one blank pixel each side.
        size: font size (text), icon size, or QR module size.
        lines: the drawn lines (text and rows).
        payload: the icons tuple, or the QR URL.
    """

    key: str
    kind: str
    box: Box
    size: int
    lines: tuple = ()
    payload: object = None

    @property
    def region(self):
        return self.box.grow(1)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything of one frame goes."""

    size: tuple
    items: tuple

    def find(self, key):
        """The placed block with this key.

        Raises:
            KeyError: no such block.
        """
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(key)


# --- measuring -------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _reference_rows(size):
    """Top and bottom ink rows every line at ``size`` includes.

    Lines share the extent of a CJK glyph so that lines of plain Chinese,
    digits and capitals all line up; descenders extend their own line.
    """
    _, top, _, bottom = fonts.load_font(size).getbbox("国")
    return top, bottom


@functools.lru_cache(maxsize=4096)
def measure(text, size):
    """Ink box of one line: ``(left, top, width, height)`` from the origin."""
    font = fonts.load_font(size)
    ref_top, ref_bottom = _reference_rows(size)
    if not text:
        return 0, ref_top, 0, ref_bottom - ref_top
    left, top, right, bottom = font.getbbox(text)
    left = min(left, 0)
    top, bottom = min(top, ref_top), max(bottom, ref_bottom)
    return left, top, right - left, bottom - top


def text_width(text, size):
    """Ink width of one line in pixels."""
    return measure(text, size)[2]


def _is_wide(char):
    return unicodedata.east_asian_width(char) in "WF"


def _units(paragraph):
    """Pieces of a paragraph between which a line may break.

    Chinese may break between any two characters; Latin words and digit
    runs stay whole; spaces are break points and vanish at a break.
    Characters that must not start a line (closing punctuation, the middle
    dot of minority names) stick to the piece before them.
    """
    units = []
    for char in paragraph:
        if char == " ":
            units.append(" ")
        elif (units and units[-1] != " "
              and (char in "，。、：；！？）》」』·.,:;!?)%"
                   or (not _is_wide(char) and not _is_wide(units[-1][-1])
                       and units[-1][-1] not in "·"))):
            units[-1] += char
        else:
            units.append(char)
    return units


def _greedy(units, width, size):
    """Fill lines greedily; None if one piece is wider than ``width``."""
    lines, current = [], ""
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


def _balanced(units, width, size):
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
def wrap(text, width, size):
    """Break ``text`` into lines no wider than ``width`` at ``size``.

    Preferred breaks (:data:`BREAK`) are used when each piece fits; else
    the text breaks between characters or words, and a word too long for
    a line breaks between its letters.

    Returns:
        tuple[str] | None: the lines, or None if one character is too wide.
    """
    lines = []
    for paragraph in text.split("\n"):
        # Hinted pieces that fit stay whole; a piece too wide for the line
        # breaks between characters/words, then at URL-ish punctuation,
        # and as the last resort between any two characters.
        units = []
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


def _cells(block, size, width):
    """Where the cells of a text block go at ``size`` in ``width``.

    Returns:
        list of ``(cell, dx, dy, cell_width, lines)`` relative to the block's
        top-left, or None if some character is wider than its cell.
    """
    cells = block.cells if isinstance(block, Row) else (block,)
    if isinstance(block, Row) and block.mode == "split":
        # Natural widths on one line (first left, last right), else stacked.
        widths = [text_width(c.text.replace(BREAK, ""), size) for c in cells]
        if sum(widths) + CELL_GAP * (len(cells) - 1) <= width:
            out, x = [], 0
            for cell, w in zip(cells, widths):
                out.append((cell, x, 0, w, wrap(cell.text, w, size)))
                x += w + CELL_GAP
            last = out[-1]
            out[-1] = (last[0], width - last[3]) + last[2:]
            return out
        out, y = [], 0
        for cell in cells:
            lines = wrap(cell.text, width, size)
            if lines is None:
                return None
            out.append((cell, 0, y, width, lines))
            y += _lines_height(lines, size) + LINE_GAP
        return out
    cell_w = (width - CELL_GAP * (len(cells) - 1)) // len(cells)
    out = []
    for n, cell in enumerate(cells):
        lines = wrap(cell.text, cell_w, size)
        if lines is None:
            return None
        out.append((cell, n * (cell_w + CELL_GAP), 0, cell_w, lines))
    return out


def _lines_height(lines, size):
    return (sum(measure(line, size)[3] for line in lines)
            + LINE_GAP * (len(lines) - 1))


def _block_height(block, size, width):
    """Height of a block at ``size`` in ``width``, or None if impossible."""
    if isinstance(block, Icons):
        if not block.icons:
            return 0
        return ICON_SIZE if icons_width(block.icons) <= width else None
    cells = _cells(block, size, width)
    if cells is None:
        return None
    return max(dy + _lines_height(lines, size)
               for _, _, dy, _, lines in cells)


def _line_count(block, size, width):
    """Lines a text block takes (its tallest cell), or None."""
    if isinstance(block, Icons):
        return 1
    cells = _cells(block, size, width)
    if cells is None:
        return None
    counts = [len(lines) for _, _, _, _, lines in cells]
    if any(dy for _, _, dy, _, _ in cells):     # stacked cells
        return sum(counts)
    return max(counts)


def fit_column(blocks, width, height):
    """Choose a font size per block so the column fits ``width`` x ``height``.

    The headline gets the largest size that still lets everything else fit
    at its minimum; then each other block (or group of blocks, which share
    one size) in order does the same. Width never overflows: text wraps.

    Returns:
        list[int]: the chosen sizes, one per block.

    Raises:
        LayoutError: it does not fit even with every block at its minimum.
    """
    units = {}
    for i, block in enumerate(blocks):
        units.setdefault(block.group or i, []).append(i)
    order = sorted(units.values(),
                   key=lambda idx: (not any(blocks[i].headline for i in idx),
                                    idx[0]))

    def fits(sizes):
        heights = [_block_height(b, s, width) for b, s in zip(blocks, sizes)]
        if None in heights:
            return False
        visible = [h for h in heights if h]
        return (sum(visible) + MIN_BLOCK_GAP * max(0, len(visible) - 1)
                <= height)

    sizes = [0] * len(blocks)
    ranges = {}
    for idx in order:
        low = max(blocks[i].min_size for i in idx)
        high = min(blocks[i].max_size for i in idx)
        # A size that wraps a block into more lines than the smallest size
        # needs is skipped: one line at 15 px reads better than two at 16.
        least = {i: _line_count(blocks[i], low, width) for i in idx}
        ranges[idx[0]] = [
            s for s in reversed(fonts.SIZES)
            if (low <= s <= high
                and all(_line_count(blocks[i], s, width) == least[i]
                        for i in idx))] or [low]
        if isinstance(blocks[idx[0]], Icons):
            ranges[idx[0]] = [ICON_SIZE]
        for i in idx:
            sizes[i] = ranges[idx[0]][-1]
    if not fits(sizes):
        what = ", ".join(f"{b.key}={getattr(b, 'text', '')!r}"
                         for b in blocks if not isinstance(b, Icons))
        raise LayoutError(
            f"text does not fit {width}x{height} px even at "
            f"{fonts.MIN_SIZE} px: {what}")
    for idx in order:
        for size in ranges[idx[0]]:
            trial = list(sizes)
            for i in idx:
                trial[i] = size
            if fits(trial):
                sizes = trial
                break
    return sizes


def _place_lines(lines, size, box, align):
    """Lines of one block stacked from the top of ``box``."""
    placed, y = [], box.y
    for line in lines:
        _, _, w, h = measure(line, size)
        if align == "center":
            x = box.x + (box.w - w) // 2
        elif align == "right":
            x = box.right - w
        else:
            x = box.x
        placed.append(Line(line, size, Box(x, y, w, h)))
        y += h + LINE_GAP
    return placed


def place_column(blocks, area):
    """Fit and place blocks top to bottom inside ``area``.

    The column is centred vertically; spare height is shared out between
    blocks (up to :data:`MAX_BLOCK_GAP` each).

    Returns:
        list[Placed]: one per block with content.

    Raises:
        LayoutError: the blocks cannot fit.
    """
    sizes = fit_column(blocks, area.w, area.h)
    heights = [_block_height(b, s, area.w) for b, s in zip(blocks, sizes)]
    shown = [(b, s, h) for b, s, h in zip(blocks, sizes, heights) if h]
    total = sum(h for _, _, h in shown)
    gap = MIN_BLOCK_GAP
    if len(shown) > 1:
        gap = max(MIN_BLOCK_GAP,
                  min(MAX_BLOCK_GAP, (area.h - total) // (len(shown) - 1)))
    used = total + gap * max(0, len(shown) - 1)
    y = area.y + (area.h - used) // 2
    placed = []
    for block, size, h in shown:
        if isinstance(block, Icons):
            w = icons_width(block.icons)
            x = area.x if block.align == "left" else area.right - w
            placed.append(Placed(block.key, "icons", Box(x, y, w, h), size,
                                 payload=block.icons))
        else:
            lines = []
            for cell, dx, dy, cell_w, cell_lines in _cells(block, size, area.w):
                cell_box = Box(area.x + dx, y + dy, cell_w, h - dy)
                lines += _place_lines(cell_lines, size, cell_box, cell.align)
            ink = _union([line.box for line in lines])
            placed.append(Placed(block.key, "text", ink, size, tuple(lines)))
        y += h + gap
    return placed


def _union(boxes):
    boxes = [b for b in boxes if b.w and b.h] or boxes
    x0 = min(b.x for b in boxes)
    y0 = min(b.y for b in boxes)
    x1 = max(b.right for b in boxes)
    y1 = max(b.bottom for b in boxes)
    return Box(x0, y0, x1 - x0, y1 - y0)


# --- whole screens -----------------------------------------------------------

def safe_area(size):
    """The panel minus the dark care margin."""
    w, h = size
    return Box(SAFE_MARGIN, SAFE_MARGIN, w - 2 * SAFE_MARGIN,
               h - 2 * SAFE_MARGIN)


def _qr_candidates(url, limit):
    """``(module, smallest side)`` for each module size that fits ``limit``."""
    out = []
    for module in range(limit // 21, 0, -1):
        side = min_side(url, module)
        if side is not None and side <= limit:
            out.append((module, side))
    return out


def _headline_size(blocks, sizes):
    for block, size in zip(blocks, sizes):
        if block.headline:
            return size
    return max(sizes, default=0)


def layout_screen(size, variants, qr_url=None):
    """Lay out a screen: a text column and, if given, a QR square.

    Wide panels (at least 3:2) put the QR code on the right; square and
    portrait panels put it under the text. The split is chosen to keep the
    headline's font as large as possible first, then the QR module, then the
    other text; the QR code then takes all the space the text left.

    Args:
        size: panel ``(width, height)`` as laid out (after rotation).
        variants: alternative block lists, best first; the first that fits
            is used.
        qr_url: URL of the QR code, or None.

    Returns:
        Layout: the placed blocks, the QR code (key ``"qr"``) last.

    Raises:
        LayoutError: no variant fits.
        QRFitError: the URL cannot fit.
    """
    area = safe_area(size)
    if qr_url is not None:
        return _layout_with_qr(size, area, variants, qr_url)
    errors = []
    for blocks in variants:
        try:
            return Layout(tuple(size), tuple(place_column(blocks, area)))
        except LayoutError as exc:
            errors.append(str(exc))
    raise LayoutError(f"nothing fits a {size[0]}x{size[1]} panel: "
                      + "; ".join(errors))


def _split(area, wide, qr_side):
    """(text area, QR area) for a QR square of ``qr_side``."""
    if wide:
        text = Box(area.x, area.y, area.w - qr_side - QR_GAP, area.h)
        qr = Box(area.right - qr_side, area.y, qr_side, area.h)
    else:
        text = Box(area.x, area.y, area.w, area.h - qr_side - QR_GAP)
        qr = Box(area.x, area.bottom - qr_side, area.w, qr_side)
    return text, qr


def _layout_with_qr(size, area, variants, url):
    wide = area.w * 2 >= area.h * 3
    limit = area.h if wide else area.w
    qr_fit(url, limit)      # QRFitError (stating the limit) if it never fits
    best = None
    for rank, blocks in enumerate(variants):
        for module, side in _qr_candidates(url, limit):
            text_area, _ = _split(area, wide, side)
            if text_area.w <= 0 or text_area.h <= 0:
                continue
            try:
                sizes = fit_column(blocks, text_area.w, text_area.h)
            except LayoutError:
                continue
            # 2 px modules matter most (a phone must read the code), then
            # showing everything (earlier variants), then a large headline,
            # then bigger modules and bigger secondary text.
            score = (min(module, 2), -rank, _headline_size(blocks, sizes),
                     module, sum(sizes))
            if best is None or score > best[0]:
                best = (score, side, blocks)
    if best is None:
        raise LayoutError(
            f"text and QR code do not fit together on {size[0]}x{size[1]}: "
            + ", ".join(f"{b.key}={getattr(b, 'text', '')!r}"
                        for b in variants[-1]))
    blocks = best[2]
    text_area, _ = _split(area, wide, best[1])
    placed = place_column(blocks, text_area)
    # Hand the QR code all the room the text did not use.
    if wide:
        used = max((p.region.right for p in placed), default=area.x)
        room = Box(used + QR_GAP - 1, area.y, area.right - used - QR_GAP + 1,
                   area.h)
    else:
        used = max((p.region.bottom for p in placed), default=area.y)
        room = Box(area.x, used + QR_GAP - 1, area.w,
                   area.bottom - used - QR_GAP + 1)
    side = min(room.w, room.h)
    fit = qr_fit(url, side)
    qr_box = Box(room.x + (room.w - fit.side) // 2,
                 room.y + (room.h - fit.side) // 2, fit.side, fit.side)
    if wide:        # keep the QR code hard right, the text column gets the gap
        qr_box = Box(area.right - fit.side, qr_box.y, fit.side, fit.side)
    placed.append(Placed("qr", "qr", qr_box, fit.module, payload=url))
    return Layout(tuple(size), tuple(placed))


# --- drawing -------------------------------------------------------------------

def draw_layout(layout):
    """Draw a layout into a new mode ``"1"`` image (255 = lit).

    Args:
        layout: the placed blocks.

    Returns:
        PIL.Image.Image: the frame.
    """
    image = Image.new("1", layout.size, 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"         # no anti-aliasing: bitmap glyphs stay crisp
    for item in layout.items:
        if item.kind == "text":
            for line in item.lines:
                draw_line(draw, line)
        elif item.kind == "icons":
            x = item.box.x
            for name in item.payload:
                x = _paint_icon(image, name, x, item.box.y) + ICON_GAP
        elif item.kind == "qr":
            image.paste(qr_image(item.payload, item.box.w),
                        (item.box.x, item.box.y))
    return image


def draw_line(draw, line):
    """Draw one placed line so its ink lands in ``line.box``."""
    left, top, _, _ = measure(line.text, line.size)
    draw.text((line.box.x - left, line.box.y - top), line.text,
              font=fonts.load_font(line.size), fill=255)


# --- status icons ----------------------------------------------------------------
# 7x7 bitmaps: a 12 px word per indicator would not fit next to a QR code on
# a 128x64 panel; these marks are for staff and technicians, not citizens.

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


def _icon_parts(name):
    """An icon name (``"backlog:12"`` carries a count) -> (bitmap, digits)."""
    base, _, count = name.partition(":")
    if base not in ICONS:
        raise LayoutError(f"unknown status icon {base!r}")
    digits = ""
    if count:
        number = int(count)
        digits = str(number) if number < 1000 else "999+"
    return ICONS[base], digits


def icon_width(name):
    """Width in pixels of one status icon, its count included."""
    _, digits = _icon_parts(name)
    return ICON_SIZE + (1 + 4 * len(digits) - 1 if digits else 0)


def icons_width(names):
    """Width of a strip of icons."""
    return (sum(icon_width(n) for n in names)
            + ICON_GAP * max(0, len(names) - 1))


def _paint_icon(image, name, x, y):
    """Paint one icon at ``x, y``; return the column after it."""
    bitmap, digits = _icon_parts(name)
    pixels = image.load()
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
