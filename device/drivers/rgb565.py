"""An SSD1351 driver whose frames become RGB565 bytes in Pillow, not in a Python loop.

luma's ``color_device.display`` packs each pixel into two bytes in Python:
16,384 iterations a full 128x128 frame, about 30 ms of a Pi Zero 2 W's CPU
before the first byte reaches the bus. Here the same bytes come from a few
lookup-table and channel operations in Pillow (``hi = R & 0xF8 | G >> 5``,
``lo = (G << 3) & 0xE0 | B >> 3``, interleaved as an ``LA`` image). The
rest (init, windows, luma's ``diff_to_previous`` framebuffer, offsets) is
luma's own.
"""

from __future__ import annotations

from luma.oled import device as oled
from PIL import Image, ImageChops

_HIGH_RED = [v & 0xF8 for v in range(256)]
_HIGH_GREEN = [v >> 5 for v in range(256)]
_LOW_GREEN = [(v << 3) & 0xE0 for v in range(256)]
_LOW_BLUE = [v >> 3 for v in range(256)]


def rgb565(image: Image.Image) -> bytes:
    """An RGB image as RGB565, high byte first, row by row (what the SSD1351 takes)."""
    r, g, b = image.split()
    high = ImageChops.add(r.point(_HIGH_RED), g.point(_HIGH_GREEN))     # disjoint bits: add is or
    low = ImageChops.add(g.point(_LOW_GREEN), b.point(_LOW_BLUE))
    return Image.merge("LA", (high, low)).tobytes()


class SSD1351(oled.ssd1351):
    """luma's ``ssd1351``, packing pixels in Pillow."""

    def display(self, image: Image.Image) -> None:
        assert image.mode == self.mode
        assert image.size == self.size
        image = self.preprocess(image)
        for segment, bounding_box in self.framebuffer.redraw(image):
            left, top, right, bottom = self._apply_offsets(bounding_box)
            self._set_position(top, right, bottom, left)
            self.data(list(rgb565(segment)))
