"""The OLED drawn in a terminal with half-block cells, and keys read raw."""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from typing import IO

from PIL import Image

HELP = "keys: 1-5 rate (1 = 非常满意)  s staff 请评价  n network up/down  q quit"


def frame_to_text(image: Image.Image) -> list[str]:
    """Two pixel rows per text row: '▀', '▄', '█' or ' ' for each column."""
    img = image.convert("1")
    w, h = img.size
    px = img.load()
    assert px is not None   # an image in memory always has pixel access
    rows = []
    for y in range(0, h, 2):
        cells = []
        for x in range(w):
            top = px[x, y] != 0
            bottom = y + 1 < h and px[x, y + 1] != 0
            cells.append("█" if top and bottom else "▀" if top else "▄" if bottom else " ")
        rows.append("".join(cells))
    return rows


class TerminalScreen:
    """Redraws the whole OLED in place at the top of the terminal."""

    def __init__(self, out: IO[str] = sys.stdout) -> None:
        self.out = out
        self.status = ""
        self._lock = threading.Lock()
        self._last: Image.Image | None = None

    def show(self, image: Image.Image) -> None:
        """Draw a new frame."""
        with self._lock:
            self._last = image
            self._draw()

    def set_status(self, text: str) -> None:
        """Change the status line under the frame (redrawn if a frame is shown)."""
        with self._lock:
            self.status = text
            if self._last is not None:
                self._draw()

    def _draw(self) -> None:
        if self._last is None:
            return
        rows = frame_to_text(self._last)
        border = "+" + "-" * len(rows[0]) + "+"
        lines = [border] + ["|" + r + "|" for r in rows] + [border, HELP, self.status]
        self.out.write("\x1b[H\x1b[2J" + "\r\n".join(lines) + "\r\n")
        self.out.flush()


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
