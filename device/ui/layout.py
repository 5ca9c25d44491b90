"""One layout engine for every screen and every panel size.

A screen describes *what* it shows as blocks (:mod:`device.ui.blocks`) and
optionally a QR code; this module decides *where*: it splits the panel into
a text column and a QR square, picks the largest native font size that lets
every block fit, wraps text (:mod:`device.ui.typeset`: balanced lines, never
an ellipsis) and shrinks down to 12 px before it gives up with a
:class:`~device.errors.LayoutError`.

A placed block's ``region`` (its ink box plus one blank pixel on each side)
is a promise: no lit pixel of the block touches the region's edge.
Neighbouring regions may share that blank border, never ink.

The outermost pixel of the panel is kept dark (:data:`SAFE_MARGIN`) so the
OLED-care pixel shift (see ``care.py``) never pushes anything off the glass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw

from device.errors import LayoutError
from device.ui import fonts
from device.ui.blocks import BREAK, Block, Box, Icons, Layout, Line, Placed, Row, Text
from device.ui.icons import ICON_GAP, ICON_SIZE, ICONS, icon_width, icons_width, paint_icon
from device.ui.qr import min_side, qr_fit, qr_image
from device.ui.typeset import measure, text_width, wrap

# The building blocks are importable from here too, where screens look for them.
__all__ = [
    "BREAK", "CELL_GAP", "ICONS", "ICON_GAP", "ICON_SIZE", "LINE_GAP", "MAX_BLOCK_GAP", "MIN_BLOCK_GAP",
    "QR_GAP", "SAFE_MARGIN", "Block", "Box", "Icons", "Layout", "Line", "Placed", "Row", "Text",
    "draw_layout", "draw_line", "fit_column", "icon_width", "icons_width", "layout_screen", "measure",
    "place_column", "safe_area", "text_width", "wrap",
]

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

#: Where one cell of a block goes: ``(cell, dx, dy, cell width, lines)``,
#: relative to the block's top-left.
_Cell = tuple[Text, int, int, int, tuple[str, ...]]


# --- one column of blocks ----------------------------------------------------

def _cells(block: Text | Row, size: int, width: int) -> list[_Cell] | None:
    """Where the cells of a text block go at ``size`` in ``width``.

    Returns:
        One entry per cell, or None if some character is wider than its cell.
    """
    cells = block.cells if isinstance(block, Row) else (block,)
    if isinstance(block, Row) and block.mode == "split":
        # Natural widths on one line (first left, last right), else stacked.
        widths = [text_width(c.text.replace(BREAK, ""), size) for c in cells]
        out: list[_Cell] = []
        if sum(widths) + CELL_GAP * (len(cells) - 1) <= width:
            x = 0
            for cell, w in zip(cells, widths, strict=True):
                lines = wrap(cell.text, w, size)
                if lines is None:
                    return None
                out.append((cell, x, 0, w, lines))
                x += w + CELL_GAP
            last = out[-1]
            out[-1] = (last[0], width - last[3], last[2], last[3], last[4])
            return out
        y = 0
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


def _lines_height(lines: Sequence[str], size: int) -> int:
    return (sum(measure(line, size)[3] for line in lines)
            + LINE_GAP * (len(lines) - 1))


def _block_height(block: Block, size: int, width: int) -> int | None:
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


def _line_count(block: Block, size: int, width: int) -> int | None:
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


def fit_column(blocks: Sequence[Block], width: int, height: int) -> list[int]:
    """Choose a font size per block so the column fits ``width`` x ``height``.

    The headline gets the largest size that still lets everything else fit
    at its minimum; then each other block (or group of blocks, which share
    one size) in order does the same. Width never overflows: text wraps.

    Returns:
        The chosen sizes, one per block.

    Raises:
        LayoutError: it does not fit even with every block at its minimum.
    """
    units: dict[str | int, list[int]] = {}
    for i, block in enumerate(blocks):
        units.setdefault(block.group or i, []).append(i)
    order = sorted(units.values(),
                   key=lambda idx: (not any(blocks[i].headline for i in idx),
                                    idx[0]))

    def fits(sizes: Sequence[int]) -> bool:
        heights = [_block_height(b, s, width) for b, s in zip(blocks, sizes, strict=True)]
        if None in heights:
            return False
        visible = [h for h in heights if h]
        return (sum(visible) + MIN_BLOCK_GAP * max(0, len(visible) - 1)
                <= height)

    sizes = [0] * len(blocks)
    ranges: dict[int, list[int]] = {}
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


def _place_lines(lines: Sequence[str], size: int, box: Box, align: str) -> list[Line]:
    """Lines of one block stacked from the top of ``box``."""
    placed = []
    y = box.y
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


def place_column(blocks: Sequence[Block], area: Box) -> list[Placed]:
    """Fit and place blocks top to bottom inside ``area``.

    The column is centred vertically; spare height is shared out between
    blocks (up to :data:`MAX_BLOCK_GAP` each).

    Returns:
        One placed block per block with content.

    Raises:
        LayoutError: the blocks cannot fit.
    """
    sizes = fit_column(blocks, area.w, area.h)
    heights = [_block_height(b, s, area.w) for b, s in zip(blocks, sizes, strict=True)]
    shown = [(b, s, h) for b, s, h in zip(blocks, sizes, heights, strict=True) if h]
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
                                 icons=block.icons))
        else:
            lines: list[Line] = []
            for cell, dx, dy, cell_w, cell_lines in _cells(block, size, area.w) or ():
                cell_box = Box(area.x + dx, y + dy, cell_w, h - dy)
                lines += _place_lines(cell_lines, size, cell_box, cell.align)
            ink = _union([line.box for line in lines])
            placed.append(Placed(block.key, "text", ink, size, tuple(lines)))
        y += h + gap
    return placed


def _union(boxes: Sequence[Box]) -> Box:
    boxes = [b for b in boxes if b.w and b.h] or boxes
    x0 = min(b.x for b in boxes)
    y0 = min(b.y for b in boxes)
    x1 = max(b.right for b in boxes)
    y1 = max(b.bottom for b in boxes)
    return Box(x0, y0, x1 - x0, y1 - y0)


# --- whole screens -----------------------------------------------------------

def safe_area(size: tuple[int, int]) -> Box:
    """The panel minus the dark care margin."""
    w, h = size
    return Box(SAFE_MARGIN, SAFE_MARGIN, w - 2 * SAFE_MARGIN,
               h - 2 * SAFE_MARGIN)


def _qr_candidates(url: str, limit: int) -> list[tuple[int, int]]:
    """``(module, smallest side)`` for each module size that fits ``limit``."""
    out = []
    for module in range(limit // 21, 0, -1):
        side = min_side(url, module)
        if side is not None and side <= limit:
            out.append((module, side))
    return out


def _headline_size(blocks: Sequence[Block], sizes: Sequence[int]) -> int:
    for block, size in zip(blocks, sizes, strict=True):
        if block.headline:
            return size
    return max(sizes, default=0)


def layout_screen(size: tuple[int, int], variants: Sequence[Sequence[Block]],
                  qr_url: str | None = None) -> Layout:
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
        The placed blocks, the QR code (key ``"qr"``) last.

    Raises:
        LayoutError: no variant fits.
        QRFitError: the URL cannot fit.
    """
    size = (size[0], size[1])   # a list from a caller becomes the frame's size tuple
    area = safe_area(size)
    if qr_url is not None:
        return _layout_with_qr(size, area, variants, qr_url)
    errors = []
    for blocks in variants:
        try:
            return Layout(size, tuple(place_column(blocks, area)))
        except LayoutError as exc:
            errors.append(str(exc))
    raise LayoutError(f"nothing fits a {size[0]}x{size[1]} panel: "
                      + "; ".join(errors))


def _split(area: Box, wide: bool, qr_side: int) -> tuple[Box, Box]:
    """(text area, QR area) for a QR square of ``qr_side``."""
    if wide:
        text = Box(area.x, area.y, area.w - qr_side - QR_GAP, area.h)
        qr = Box(area.right - qr_side, area.y, qr_side, area.h)
    else:
        text = Box(area.x, area.y, area.w, area.h - qr_side - QR_GAP)
        qr = Box(area.x, area.bottom - qr_side, area.w, qr_side)
    return text, qr


def _layout_with_qr(size: tuple[int, int], area: Box, variants: Sequence[Sequence[Block]],
                    url: str) -> Layout:
    wide = area.w * 2 >= area.h * 3
    limit = area.h if wide else area.w
    qr_fit(url, limit)      # QRFitError (stating the limit) if it never fits
    best: tuple[tuple[int, ...], int, Sequence[Block]] | None = None
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
    placed.append(Placed("qr", "qr", qr_box, fit.module, url=url))
    return Layout(size, tuple(placed))


# --- drawing -------------------------------------------------------------------

def draw_layout(layout: Layout) -> Image.Image:
    """Draw a layout into a new mode ``"1"`` image (255 = lit).

    Args:
        layout: the placed blocks.

    Returns:
        The frame.
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
            for name in item.icons:
                x = paint_icon(image, name, x, item.box.y) + ICON_GAP
        elif item.kind == "qr":
            image.paste(qr_image(item.url, item.box.w),
                        (item.box.x, item.box.y))
    return image


def draw_line(draw: ImageDraw.ImageDraw, line: Line) -> None:
    """Draw one placed line so its ink lands in ``line.box``."""
    left, top, _, _ = measure(line.text, line.size)
    draw.text((line.box.x - left, line.box.y - top), line.text,
              font=fonts.load_font(line.size), fill=255)
