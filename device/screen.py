"""The panel's one owner: screen models in, frames out, OLED care on the way.

Only the loop's thread calls a :class:`Screen`. A model equal to the one on
the panel is not drawn again; a frame is rendered once per model (the
renderer caches), moved by the care shift and sent. A panel that fails is
reported (:attr:`Screen.fault`) and tried again at the next change: the
device goes on taking ratings, which are kept whether or not the panel works.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from PIL import Image

from device.ui import care
from device.ui.screens import render

if TYPE_CHECKING:
    from device.drivers.display import Display

logger = logging.getLogger(__name__)


class Screen:
    """Draws screen models on a display, with OLED care.

    Args:
        display: a :class:`~device.drivers.display.Display` (or alike).
        size: ``(width, height)`` frames are rendered at.
        care_config: :class:`~device.ui.care.CareConfig`.
    """

    def __init__(self, display: Display, size: tuple[int, int], care_config: care.CareConfig) -> None:
        self.display = display
        self.size = size
        self.care_config = care_config
        #: The model on the panel (None: draw at the next show).
        self.model: Any = None
        self._frame: Image.Image | None = None
        self._care = care.CareState(contrast=-1)
        self._hold_until = 0.0
        #: Why the panel last failed; empty while it works.
        self.fault = ""

    @property
    def asleep(self) -> bool:
        return self._care.asleep

    def show(self, model: Any, now: float = 0.0) -> None:
        """Draw ``model`` unless it is already shown (or a test pattern holds the panel)."""
        if now < self._hold_until or model == self.model:
            return
        self.model = model
        self._frame = render(model, self.size)
        self._send(self._frame)
        logger.info("screen: %s", type(model).__name__.removesuffix("Screen").lower())

    def hold(self, image: Image.Image, until: float) -> None:
        """Show ``image`` (a test pattern) and keep it until monotonic ``until``."""
        self._hold_until = until
        self.model = None
        self._call("show", self.display.show, image)

    def apply_care(self, state: care.CareState) -> None:
        """OLED care: sleep outside hours, dim when idle, move the frame now and then."""
        old, self._care = self._care, state
        if state.asleep != old.asleep:
            self._call("sleep" if state.asleep else "wake", self.display.sleep if state.asleep else self.display.wake)
            logger.info("panel %s", "asleep outside opening hours" if state.asleep else "awake")
        if state.contrast != old.contrast:
            self._call("contrast", self.display.contrast, state.contrast)
        if state.shift != old.shift and self._frame is not None:
            self._send(self._frame)

    def _send(self, frame: Image.Image) -> None:
        if not self._call("show", self.display.show, care.apply_shift(frame, self._care.shift)):
            self.model = None  # draw again at the next change

    def _call(self, what: str, fn: Any, *args: Any) -> bool:
        """Call the display; a failure is logged once and kept as :attr:`fault`, never raised."""
        try:
            fn(*args)
        except Exception as e:
            # Any error: a bus error (DisplayError), or a driver that breaks in its own way.
            fault = f"{what}: {e}" if str(e) else f"{what}: {type(e).__name__}"
            if fault != self.fault:
                logger.error("display %s", fault)
            self.fault = fault
            return False
        if what == "show" and self.fault:
            logger.info("display answers again")
            self.fault = ""
        return True


def test_pattern(size: tuple[int, int]) -> Image.Image:
    """A checkerboard of 4-pixel squares: every pixel lit in one of two frames' worth."""
    w, h = size
    pattern = Image.new("1", (w, h))
    pattern.putdata([((x // 4 + y // 4) % 2) * 255 for y in range(h) for x in range(w)])
    return pattern
