"""The simulated hardware: gpiozero MockFactory pins and a luma ``dummy`` display."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.pins.mock import MockFactory, MockPWMPin
from luma.core.device import dummy

from device.drivers.buttons import Buttons
from device.drivers.display import Display, luma_rotation
from device.hardware import Hardware
from device.outputs import make_outputs
from device.outputs.speaker import FileSink

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
                      on_frame: Callable[[Image.Image], None] | None = None,
                      sound_dir: str | None = None) -> tuple[Hardware, MockFactory]:
    """Returns ``(Hardware, MockFactory)``; the factory's pins are the buttons, the buzzer and the LED.

    With ``audio.enabled``, the sound device is a file sink: every prompt it
    would play becomes a WAV file in ``sound_dir`` (default: ``sound`` beside the outbox).
    """
    factory = MockFactory()
    staff_pin = config.buttons.staff_pin if config.session.source == "staff_button" else None
    buttons = Buttons(config.buttons.pins, events, staff_pin=staff_pin,
                      make_staff_event=make_staff_event, pin_factory=factory,
                      bounce_s=config.buttons.bounce_ms / 1000)
    d = config.display
    panel = dummy(width=d.width, height=d.height, rotate=luma_rotation(d.rotate), mode="1")
    display = SimDisplay(panel, frames_dir, on_frame)
    speaker, buzzer, led = _sim_outputs(config, factory, sound_dir)
    return Hardware(buttons, display, panel.size, events, speaker=speaker, buzzer=buzzer, led=led), factory


def _sim_outputs(config: Config, factory: MockFactory, sound_dir: str | None) -> tuple[Any, Any, Any]:
    """The file sink for the speaker; the buzzer and LED on mock pins (PWM for a tone)."""
    speaker = None
    if config.audio.enabled:
        folder = sound_dir or os.path.join(os.path.dirname(os.path.abspath(config.outbox.path)), "sound")
        speaker = FileSink(folder)
    if not config.audio.buzzer_tonal:
        buzzer, led = make_outputs(config, factory)
        return speaker, buzzer, led
    # A passive buzzer needs a PWM pin: the factory makes its pin as one (and the other pins as before).
    saved = factory.pin_class
    factory.pin_class = MockPWMPin
    try:
        buzzer, _ = make_outputs(dataclasses.replace(config, led=dataclasses.replace(config.led, pin=-1)), factory)
    finally:
        factory.pin_class = saved
    _, led = make_outputs(dataclasses.replace(config, audio=dataclasses.replace(config.audio, buzzer_pin=-1)),
                          factory)
    return speaker, buzzer, led
