"""SSD1306, SSD1309 and SH1106 drivers that send only what changed.

luma.oled's drivers for these page-organised controllers send the whole
frame on every ``display()`` (1,024 data bytes at 128x64), so a countdown
digit costs as much as a new screen: about 24 ms of a 400 kHz I²C bus. Here
each frame is cut into the controller's pages (8 rows, one byte per column)
and compared with the frame last sent; only the changed columns of the
changed pages go out, through the controller's address window:

- SSD1306/SSD1309: ``COLUMNADDR``/``PAGEADDR`` (horizontal addressing, as
  luma sets it up) frame a rectangle of pages x columns; nearby changed
  pages share one window when that costs fewer bytes than one each.
- SH1106: page addressing only (``0xB0 | page``, column nibbles), so one
  window per changed page.

The first frame, and every frame after a failed one, goes out whole: the
panel's RAM is not known then. Everything else (init, contrast, rotation,
``preprocess``) is luma's own, so the classes are drop-in replacements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from luma.oled import device as oled
from PIL import Image

#: A window: first page, last page, first column, last column (inclusive).
Window = tuple[int, int, int, int]


def page_bytes(image: Image.Image) -> list[bytes]:
    """A 1-bit image as the controller stores it: one ``bytes`` per page, one byte per column, LSB at the top.

    Args:
        image: mode ``"1"``, height a multiple of 8, in the panel's own orientation.
    """
    width, height = image.size
    pages = height // 8
    # Turned so each column is a row of packed bits, bottom row first: byte j of a column is page pages-1-j.
    raw = image.transpose(Image.Transpose.TRANSPOSE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    assert len(raw) == width * pages
    return [raw[pages - 1 - page::pages] for page in range(pages)]


def changed_windows(old: list[bytes] | None, new: list[bytes], overhead: int, merge: bool = True) -> list[Window]:
    """The windows that carry every change from ``old`` to ``new``, for few bytes on the bus.

    Args:
        old: the pages on the panel, or None when unknown (then one window: all of it).
        new: the pages to show.
        overhead: bytes a window costs beyond its data (its commands and bus framing).
        merge: whether a window may span pages (False for page addressing).
    """
    width = len(new[0]) if new else 0
    if old is None or len(old) != len(new):
        return [(0, len(new) - 1, 0, width - 1)] if new else []
    windows: list[Window] = []
    for page, (a, b) in enumerate(zip(old, new, strict=True)):
        if a == b:
            continue
        first = next(i for i in range(width) if a[i] != b[i])
        last = next(i for i in range(width - 1, -1, -1) if a[i] != b[i])
        if merge and windows:
            p0, p1, c0, c1 = windows[-1]
            m0, m1 = min(c0, first), max(c1, last)
            apart = overhead + (c1 - c0 + 1) * (p1 - p0 + 1) + overhead + (last - first + 1)
            together = overhead + (m1 - m0 + 1) * (page - p0 + 1)
            if together <= apart:
                windows[-1] = (p0, page, m0, m1)
                continue
        windows.append((page, page, first, last))
    return windows


class PageDiffMixin:
    """Sends only the changed pages x columns of each frame (see the module's docstring).

    Mixed in before a luma page-organised driver; the subclass writes one
    window with :meth:`_write_window`.
    """

    #: Bytes one window costs beyond its data, on I²C (address, control bytes, window commands).
    window_overhead = 10
    #: Whether one window may span pages.
    multi_page = True
    _pages_sent: list[bytes] | None = None

    if TYPE_CHECKING:
        # Provided by the luma driver this is mixed into (never defined here: they would hide luma's).
        mode: str
        size: tuple[int, int]

        def preprocess(self, image: Image.Image) -> Image.Image: ...

        def data(self, data: Any) -> None: ...

        def command(self, *cmd: int) -> None: ...

    def display(self, image: Image.Image) -> None:
        """Show a 1-bit image of :attr:`size`; only what differs from the last frame is sent."""
        assert image.mode == self.mode
        assert image.size == self.size
        pages = page_bytes(self.preprocess(image))
        old, self._pages_sent = self._pages_sent, None   # unknown until every window went out
        for p0, p1, c0, c1 in changed_windows(old, pages, self.window_overhead, self.multi_page):
            self._write_window(p0, p1, c0, c1, [pages[p][c0:c1 + 1] for p in range(p0, p1 + 1)])
        self._pages_sent = pages

    def _write_window(self, p0: int, p1: int, c0: int, c1: int, rows: list[bytes]) -> None:
        raise NotImplementedError


class _AddressWindow(PageDiffMixin):
    """SSD1306-style horizontal addressing: one COLUMNADDR/PAGEADDR window, then its bytes."""

    _colstart: int

    def _write_window(self, p0: int, p1: int, c0: int, c1: int, rows: list[bytes]) -> None:
        self.command(0x21, self._colstart + c0, self._colstart + c1,   # COLUMNADDR
                     0x22, p0, p1)                                      # PAGEADDR
        self.data(list(b"".join(rows)))


class SSD1306(_AddressWindow, oled.ssd1306):
    """luma's ``ssd1306`` sending only what changed."""


class SSD1309(_AddressWindow, oled.ssd1309):
    """luma's ``ssd1309`` sending only what changed."""


class SH1106(PageDiffMixin, oled.sh1106):
    """luma's ``sh1106`` sending only what changed, one page at a time (it has page addressing only)."""

    window_overhead = 7
    multi_page = False
    _page_address_offset: int

    def _write_window(self, p0: int, p1: int, c0: int, c1: int, rows: list[bytes]) -> None:
        column = self._page_address_offset + c0
        for page, row in zip(range(p0, p1 + 1), rows, strict=True):
            self.command(0xB0 | page, column & 0x0F, 0x10 | column >> 4)
            self.data(list(row))
