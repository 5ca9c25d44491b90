"""The simulated hardware: gpiozero MockFactory pins and a luma ``dummy`` display."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy

from device.drivers.buttons import Buttons
from device.drivers.display import Display, luma_rotation
from device.hardware import Hardware

if TYPE_CHECKING:
    from PIL import Image

    from device.config import Config

logger = logging.getLogger(__name__)


class SimDisplay(Display):
    """The dummy panel, which keeps every frame; saves PNGs and tells a watcher."""

    def __init__(self, panel: dummy, frames_dir: str | None = None,
                 on_frame: Callable[[Image.Image], None] | None = None) -> None:
        super().__init__(panel)
        self.panel = panel
        self.frames_dir = frames_dir
        self.on_frame = on_frame
        self.count = 0
        if frames_dir:
            os.makedirs(frames_dir, exist_ok=True)

    def show(self, image: Image.Image) -> None:
        super().show(image)
        self.count += 1
        frame = self.panel.image
        if self.frames_dir:
            frame.save(os.path.join(self.frames_dir, f"frame-{self.count:05d}.png"))
        if self.on_frame is not None:
            self.on_frame(frame)


def make_sim_hardware(config: Config, events: queue.Queue[Any], make_staff_event: Callable[[], Any], *,
                      frames_dir: str | None = None,
                      on_frame: Callable[[Image.Image], None] | None = None) -> tuple[Hardware, MockFactory]:
    """Returns ``(Hardware, MockFactory)``; the factory's pins are the buttons."""
    factory = MockFactory()
    staff_pin = config.buttons.staff_pin if config.session.source == "staff_button" else None
    buttons = Buttons(config.buttons.pins, events, staff_pin=staff_pin,
                      make_staff_event=make_staff_event, pin_factory=factory,
                      bounce_s=config.buttons.bounce_ms / 1000)
    d = config.display
    panel = dummy(width=d.width, height=d.height, rotate=luma_rotation(d.rotate), mode="1")
    display = SimDisplay(panel, frames_dir, on_frame)
    return Hardware(buttons, display, panel.size, events), factory
