"""The OLED drawn in a terminal: the densest view that fits, redrawn when the window changes.

Two views of the same frame:

- **half blocks**: one text cell is 1×2 pixels (``▀ ▄ █``), so a 128×64
  panel takes 128×32 cells: the closest to the glass, where there is room;
- **braille**: one cell is 2×4 pixels (U+2800–U+28FF), so a 128×64 panel
  takes 64×16 cells and fits an 80×24 terminal with its key help.

The view is chosen again at every draw from the terminal's size; a resize
(``SIGWINCH``) redraws at once. When neither view fits, the screen says
what is missing instead of wrapping into noise. Keys are read raw.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import textwrap
import threading
import tty
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from PIL import Image

#: The key help, longest first: the longest that fits the width is shown.
HELPS = (
    "keys: 1-5 rate (1 = 非常满意)  s staff 请评价  n network up/down  q quit",
    "1-5 rate  s 请评价  n network  q quit",
    "1-5 s n q",
)
#: Text lines under the frame: the key help and the status line.
FOOTER = 2

# Braille dot bits by (x, y) inside a 2×4 cell (Unicode's dot numbering 1-8).
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def _pixels(image: Image.Image) -> tuple[int, int, Callable[[int, int], bool]]:
    img = image.convert("1")
    w, h = img.size
    data = img.tobytes()
    stride = (w + 7) // 8

    def lit(x: int, y: int) -> bool:
        return x < w and y < h and bool(data[y * stride + x // 8] & (0x80 >> (x % 8)))
    return w, h, lit


def half_blocks(image: Image.Image) -> list[str]:
    """Two pixel rows per text row: '▀', '▄', '█' or ' ' for each column."""
    w, h, lit = _pixels(image)
    rows = []
    for y in range(0, h, 2):
        rows.append("".join("█" if lit(x, y) and lit(x, y + 1) else "▀" if lit(x, y) else
                            "▄" if lit(x, y + 1) else " " for x in range(w)))
    return rows


def braille(image: Image.Image) -> list[str]:
    """Four pixel rows and two columns per text cell; an empty cell is a space."""
    w, h, lit = _pixels(image)
    rows = []
    for y in range(0, h, 4):
        cells = []
        for x in range(0, w, 2):
            bits = sum(bit for dy, pair in enumerate(_BRAILLE_BITS) for dx, bit in enumerate(pair)
                       if lit(x + dx, y + dy))
            cells.append(chr(0x2800 + bits) if bits else " ")
        rows.append("".join(cells))
    return rows


#: Frame -> text rows, and the pixels each text cell holds (width, height): densest on the screen first.
VIEWS: tuple[tuple[str, Callable[[Image.Image], list[str]], tuple[int, int]], ...] = (
    ("half blocks", half_blocks, (1, 2)),
    ("braille", braille, (2, 4)),
)


@dataclass(frozen=True)
class Need:
    """The terminal a view needs for a panel: columns and rows, border and footer included."""

    view: str
    columns: int
    rows: int

    def fits(self, columns: int, rows: int) -> bool:
        return self.columns <= columns and self.rows <= rows


def needs(panel: tuple[int, int]) -> list[Need]:
    """What each view needs for a panel of ``(width, height)`` pixels."""
    w, h = panel
    return [Need(name, -(-w // cw) + 2, -(-h // ch) + 2 + FOOTER) for name, _, (cw, ch) in VIEWS]


def width(text: str) -> int:
    """Columns a string takes in a terminal (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def clip(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` terminal columns."""
    out, used = [], 0
    for c in text:
        used += width(c)
        if used > columns:
            break
        out.append(c)
    return "".join(out)


def compose(image: Image.Image | None, status: str, columns: int, rows: int) -> list[str]:
    """The screen's lines for a terminal of ``columns``×``rows``: frame, key help, status."""
    help_line = next((h for h in HELPS if width(h) <= columns), HELPS[-1])
    if image is None:
        return [clip("starting…", columns), clip(help_line, columns), clip(status, columns)][:rows]
    for need, (_name, draw, _size) in zip(needs(image.size), VIEWS, strict=True):
        if need.fits(columns, rows):
            text = draw(image)
            border = "+" + "-" * width(text[0]) + "+"
            return [border, *("|" + row + "|" for row in text), border, help_line, clip(status, columns)]
    smallest = min(needs(image.size), key=lambda n: n.columns * n.rows)
    missing = [f"{smallest.columns - columns} more columns" if smallest.columns > columns else "",
               f"{smallest.rows - rows} more rows" if smallest.rows > rows else ""]
    why = (f"This terminal is {columns}x{rows}: too small for the {image.size[0]}x{image.size[1]} panel. "
           f"The {smallest.view} view needs {smallest.columns}x{smallest.rows}: "
           f"{' and '.join(m for m in missing if m)}. Make the window larger (it redraws at once) "
           "or the font smaller.")
    lines = [*textwrap.wrap(why, max(columns, 10)), help_line, status]
    return [clip(line, columns) for line in lines][:rows]


#: Where the terminal cannot show them (an ASCII-only locale): the blocks as ASCII shades.
_ASCII_BLOCKS = str.maketrans({"█": "#", "▀": "\"", "▄": ","})


def encodable(text: str, encoding: str | None) -> str:
    """``text`` as ``encoding`` carries it: blocks and braille as ASCII, other characters as ``?`` (``??`` if wide)."""
    try:
        text.encode(encoding or "utf-8")
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    text = text.translate(_ASCII_BLOCKS)
    return "".join(c if c.isascii() else "#" if "\u2801" <= c <= "\u28ff" else " " if c == "\u2800"
                   else "??" if unicodedata.east_asian_width(c) in "WF" else "?" for c in text)


def terminal_size(out: IO[str]) -> tuple[int, int]:
    """``(columns, rows)`` of the terminal ``out`` writes to (80×24 when it is none)."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError, AttributeError):
        return 80, 24
    return size.columns, size.lines


class TerminalScreen:
    """Redraws the OLED in place at the top of the terminal, in the densest view that fits.

    Args:
        out: the terminal.
        size: ``() -> (columns, rows)``; default: asked of ``out`` at each draw.
        watch_resize: redraw on ``SIGWINCH`` (only possible from the main thread).
    """

    def __init__(self, out: IO[str] = sys.stdout, size: Callable[[], tuple[int, int]] | None = None,
                 watch_resize: bool = True) -> None:
        self.out = out
        self.size = size or (lambda: terminal_size(out))
        self.status = ""
        self._lock = threading.Lock()
        self._last: Image.Image | None = None
        self._resized = threading.Event()
        self._closed = False
        self._previous: signal.Handlers | Callable[..., object] | int | None = None
        if watch_resize:
            self._watch_resize()

    def _watch_resize(self) -> None:
        # The handler only flags the resize: drawing from it could interleave with a draw it interrupted.
        try:
            self._previous = signal.signal(signal.SIGWINCH, lambda signum, frame: self._resized.set())
        except ValueError:  # not the main thread: no resize redraws
            return
        threading.Thread(target=self._redraw_on_resize, name="terminal-resize", daemon=True).start()

    def _redraw_on_resize(self) -> None:
        while not self._closed:
            if self._resized.wait(0.5):
                self._resized.clear()
                self.redraw()

    def show(self, image: Image.Image) -> None:
        """Draw a new frame."""
        with self._lock:
            self._last = image
            self._draw()

    def set_status(self, text: str) -> None:
        """Change the status line under the frame."""
        with self._lock:
            self.status = text
            self._draw()

    def redraw(self) -> None:
        """Draw again for the terminal's size now."""
        with self._lock:
            self._draw()

    def lines(self) -> list[str]:
        """What the screen shows now, line by line."""
        columns, rows = self.size()
        return compose(self._last, self.status, columns, rows)

    def _draw(self) -> None:
        if self._closed:
            return
        # Home, each line cleared to its end, the rest cleared: no flicker, no leftovers after a resize.
        frame = "\x1b[?25l\x1b[H" + "\x1b[K\r\n".join(self.lines()) + "\x1b[K\x1b[J"
        self.out.write(encodable(frame, getattr(self.out, "encoding", None)))
        self.out.flush()

    def close(self) -> None:
        """Stop redrawing; the cursor comes back under the last frame."""
        with self._lock:
            self._closed = True
            self.out.write("\x1b[?25h\r\n")
            self.out.flush()
        if self._previous is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGWINCH, self._previous)


@contextlib.contextmanager
def raw_keys(stream: IO[str] = sys.stdin) -> Iterator[Callable[[], str]]:
    """Single key presses without Enter, restored on exit."""
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield lambda: os.read(fd, 1).decode("utf-8", "replace")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
