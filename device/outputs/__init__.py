"""Outputs for people who cannot read the small screen (issue 19): voice, a beep, a status light.

The state machine asks for sound with effects (:class:`device.state.Say`,
:class:`device.state.Beep`); the loop hands each one to a handler here, which
only puts it on a queue and returns: the speaker and the buzzer play on
threads of their own, never on the path press → commit → thank-you frame.
The status LED follows the device's published status on its own.

- :mod:`device.outputs.prompts`: the prompt texts, rendered offline with
  espeak-ng's Mandarin voice, or a hall's own recordings; checked at start.
- :mod:`device.outputs.speaker`: plays prompts through ALSA (``aplay``), or
  into WAV files in the simulator; quiet hours; its faults.
- :mod:`device.outputs.buzzer`: the press beep (gpiozero ``Buzzer`` or ``TonalBuzzer``).
- :mod:`device.outputs.led`: the status LED (gpiozero ``LED``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero import LED

from device.outputs.buzzer import Beeper, make_buzzer
from device.outputs.led import StatusLed
from device.outputs.quiet import QuietHours
from device.outputs.speaker import Speaker
from device.state import Beep, Say

if TYPE_CHECKING:
    from device.clock import Clocks
    from device.config import Config
    from device.hardware import Hardware

__all__ = ["Outputs", "QuietHours", "make_outputs"]

logger = logging.getLogger(__name__)


def make_outputs(config: Config, pin_factory: Any = None) -> tuple[Any, Any]:
    """``(buzzer, led)`` on their configured pins (None where none is fitted).

    A pin that cannot be set up is logged and the part left out: the beep and
    the light are aids, never a reason for the device not to rate.
    """
    buzzer = led = None
    a = config.audio
    if a.buzzer_pin >= 0:
        try:
            buzzer = make_buzzer(a.buzzer_pin, a.buzzer_tonal, pin_factory)
        except Exception as e:
            logger.error("buzzer on GPIO %d left out: %s: %s", a.buzzer_pin, type(e).__name__, e)
    if config.led.pin >= 0:
        try:
            led = StatusLed(LED(config.led.pin, pin_factory=pin_factory))
        except Exception as e:
            logger.error("status LED on GPIO %d left out: %s: %s", config.led.pin, type(e).__name__, e)
    return buzzer, led


class Outputs:
    """The speaker, the beeper and the status LED of one build of the device.

    Args:
        config: the committed configuration.
        hardware: its ``speaker`` (a sink), ``buzzer`` and ``led`` (each None when not fitted).
        clocks: the device's clocks (quiet hours follow ``hours.*`` on the wall clock).
    """

    def __init__(self, config: Config, hardware: Hardware, clocks: Clocks) -> None:
        self.enabled = config.audio.enabled
        self.speaker: Speaker | None = None
        self.beeper: Beeper | None = None
        self.led = hardware.led
        if self.enabled and hardware.speaker is not None:
            self.speaker = Speaker(config, hardware.speaker, wall=clocks.wall, synced=clocks.is_synced)
        if self.enabled and hardware.buzzer is not None:
            hours = QuietHours(config, clocks.wall, clocks.is_synced)
            self.beeper = Beeper(hardware.buzzer, tonal=config.audio.buzzer_tonal, quiet=hours.quiet)

    def register(self, register: Callable[[type, Callable[[Any], None]], None]) -> None:
        """Hand the effect handlers to the loop's table (``loop.register``)."""
        if self.speaker is not None:
            register(Say, self.speaker.handle)
        if self.beeper is not None:
            register(Beep, self.beeper.handle)

    def start(self, status: Callable[[], str]) -> None:
        """Start the players' threads, and let the LED follow ``status``."""
        if self.speaker is not None:
            self.speaker.start()
        if self.beeper is not None:
            self.beeper.start()
        if self.led is not None:
            self.led.follow(status)

    def stop(self) -> None:
        if self.led is not None:
            self.led.follow(None)
        if self.speaker is not None:
            self.speaker.stop()
        if self.beeper is not None:
            self.beeper.stop()

    def faults(self) -> list[str]:
        """``audio: ...`` when the voice is on but cannot be heard (missing device, prompts), and the pins'."""
        faults = []
        if self.speaker is not None and self.speaker.fault:
            faults.append("audio: " + self.speaker.fault)
        for part in (self.beeper, self.led):
            if part is not None and part.fault:
                faults.append(part.fault)
        return faults

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Every queued prompt and beep played or dropped (tests and tools)."""
        ok = True
        if self.speaker is not None:
            ok = self.speaker.wait_idle(timeout) and ok
        if self.beeper is not None:
            ok = self.beeper.wait_idle(timeout) and ok
        return ok
