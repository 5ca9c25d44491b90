"""The OLED panel: luma.oled chip drivers behind one small class.

Layers as in luma: a bus object (``luma.core.interface.serial.i2c``/``spi``,
or a fake in tests) is passed into a chip driver (``ssd1306`` …), which is
wrapped by :class:`Display`. The page-organised monochrome chips (SSD1306,
SSD1309, SH1106) use the drivers of :mod:`device.drivers.paged`, which send
only what changed; the greyscale and colour chips already do with luma's
own ``diff_to_previous`` framebuffer, and the SSD1351's pixels are packed by
:mod:`device.drivers.rgb565`. The bus is always created by the caller (the
composition root): luma's drivers open I²C port 1 themselves when given no
bus, which must never happen by accident, e.g. in the simulator.

Errors from the bus are translated here, once, into :class:`DisplayError`
naming the panel model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import luma.core.device
import luma.core.error
from PIL import Image

from device import panels
from device.errors import DisplayError

logger = logging.getLogger(__name__)

#: Supported panel models and their native size (width, height), read live from
#: :mod:`device.panels` (one record a model), as the configuration's schema reads them.
SUPPORTED_MODELS = panels.SIZES

# What a failing bus raises: OS errors, and luma's own wrappers of them.
_BUS_ERRORS = (OSError, luma.core.error.Error)

#: ``display.rotate`` (degrees clockwise) as luma counts it (quarter turns).
ROTATIONS = {0: 0, 90: 1, 180: 2, 270: 3}


def luma_rotation(degrees: int) -> int:
    """``display.rotate`` in degrees as luma's ``rotate`` (0..3): the one place the two meet.

    Raises:
        DisplayError: naming ``display.rotate`` when it is not 0, 90, 180 or 270.
    """
    try:
        return ROTATIONS[degrees]
    except (KeyError, TypeError):
        raise DisplayError(f"display.rotate must be 0, 90, 180 or 270 (degrees), got {degrees!r}") from None


def make_panel(model: str, bus: Any, width: int | None = None, height: int | None = None, rotate: int = 0,
               **kw: Any) -> luma.core.device.device:
    """Create the luma driver for a panel model on a bus.

    Args:
        model: one of :data:`SUPPORTED_MODELS` (case-insensitive).
        bus: the serial interface (luma ``i2c``/``spi`` or a fake), required.
        width: panel width in pixels; default: the model's native width.
        height: panel height; default: the model's native height.
        rotate: degrees clockwise, 0, 90, 180 or 270 (``display.rotate``;
            90 and 270 make the logical frame portrait: render at ``device.size``).
        **kw: passed to the luma driver (e.g. ``mode``, ``h_offset``).

    Returns:
        luma.core.device.device: the initialised driver.

    Raises:
        DisplayError: unknown model, no bus, or the bus failed.
    """
    name = str(model).lower()
    try:
        record = panels.get(name)
    except KeyError:
        raise DisplayError(
            f"unsupported display model {model!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_MODELS))}") from None
    if bus is None:
        # luma would quietly open I2C port 1 itself.
        raise DisplayError(f"{name}: no bus given for the display")
    quarter_turns = luma_rotation(rotate)
    native_w, native_h = record.size
    if record.mono_frames:
        kw.setdefault("mode", "1")
    try:
        return record.driver_class()(serial_interface=bus, width=width or native_w,
                                     height=height or native_h, rotate=quarter_turns, **kw)
    except _BUS_ERRORS as exc:
        raise DisplayError(f"{name}: cannot initialise display: {exc}") \
            from exc


class Display:
    """Any luma device (a real panel or ``luma.core.device.dummy``).

    Args:
        device: the luma device.
        model: its model name, for error messages.
    """

    def __init__(self, device: luma.core.device.device, model: str | None = None) -> None:
        self.device = device
        self.model = model or type(device).__name__
        self.asleep = False

    @property
    def size(self) -> tuple[int, int]:
        """Logical ``(width, height)`` frames must have (rotation applied)."""
        width, height = self.device.size
        return width, height

    def _call(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except _BUS_ERRORS as exc:
            raise DisplayError(f"{self.model}: {what} failed: {exc}") from exc

    def show(self, image: Image.Image) -> None:
        """Send a frame to the panel.

        Args:
            image: a PIL image of :attr:`size`; converted to the device's
                mode (1-bit frames become white-on-black on colour panels).

        Raises:
            DisplayError: wrong size, or the bus failed.
        """
        if tuple(image.size) != self.size:
            raise DisplayError(
                f"{self.model}: frame is {image.size[0]}x{image.size[1]}, "
                f"the display is {self.size[0]}x{self.size[1]}")
        if image.mode != self.device.mode:
            image = image.convert(self.device.mode)
        self._call("display", self.device.display, image)

    def contrast(self, level: float) -> None:
        """Set the contrast, 0..255."""
        level = max(0, min(255, int(level)))
        self._call("contrast", self.device.contrast, level)

    def sleep(self) -> None:
        """Turn the panel off (low-power mode); the frame is kept."""
        self._call("sleep", self.device.hide)
        self.asleep = True

    def wake(self) -> None:
        """Turn the panel back on."""
        self._call("wake", self.device.show)
        self.asleep = False

    def close(self) -> None:
        """Blank the panel and release its bus (luma's ``cleanup``)."""
        try:
            self._call("close", self.device.cleanup)
        except DisplayError as exc:
            logger.warning("%s", exc)
