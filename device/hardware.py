"""The hardware bundle, and the real one for a Raspberry Pi.

Only this module (and ``sim/hardware.py``) creates hardware objects; Pi-only
imports stay inside :func:`make_pi_hardware` so the rest imports anywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from device.errors import DisplayError, EvaluatorError, PinLibraryError
from device.outputs import make_outputs
from device.outputs.speaker import AlsaSink
from device.records import new_id
from device.state import StaffRequested

if TYPE_CHECKING:
    from device.config import Config
    from device.drivers.buttons import Buttons
    from device.drivers.display import Display
    from device.loop import Loop

logger = logging.getLogger(__name__)


class Output(Protocol):
    """An output besides the panel (a speaker, a buzzer, a status LED): it registers its own handlers.

    ``register`` adds a handler for each effect it acts on
    (``loop.register(Say, self.say)``), or a hook that follows the published
    status (``loop.after_turn``); the composition root calls it for every
    output fitted. Nothing else changes to add one.
    """

    def register(self, loop: Loop) -> None: ...

    def close(self) -> None: ...


@dataclass
class Hardware:
    """What the app drives: buttons feeding ``events``, a display, and the outputs fitted.

    Attributes:
        buttons: :class:`~device.drivers.buttons.Buttons`.
        display: :class:`~device.drivers.display.Display` (or the simulator's wrapper).
        size: ``(width, height)`` to render at, after rotation.
        events: the queue the buttons put their events on.
        speaker: where voice prompts play (a :class:`~device.outputs.speaker.Sink`), None when off.
        buzzer: gpiozero ``Buzzer`` or ``TonalBuzzer``, None when not fitted.
        led: the :class:`~device.outputs.led.StatusLed`, None when not fitted.
            Any of them may also be an :class:`Output` (a ``register(loop)`` of its own handlers).
    """

    buttons: Buttons
    display: Display
    size: tuple[int, int]
    events: queue.Queue[Any]
    speaker: Any = None
    buzzer: Any = None
    led: Any = None

    def outputs(self) -> list[Output]:
        """Every output fitted besides the panel that registers its own handlers (an :class:`Output`)."""
        fixed = ("buttons", "display", "size", "events")
        return [value for f in dataclasses.fields(self) if f.name not in fixed
                and (value := getattr(self, f.name)) is not None and hasattr(value, "register")]

    def close(self) -> None:
        self.buttons.close()
        self.display.close()
        for output in (self.speaker, self.buzzer, self.led):
            close = getattr(output, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("closing %r failed", output)


def staff_request() -> StaffRequested:
    """A 请评价 press opens a session with an id made here, outside the pure step."""
    return StaffRequested(new_id())


def make_pi_hardware(config: Config, events: queue.Queue[Any],
                     make_staff_event: Callable[[], Any]) -> Hardware:
    """Buttons on the Pi's GPIO (gpiozero's pin library) and the OLED on its bus.

    Raises:
        PinLibraryError: no pin library loads (the supervisor starts in recovery).
        DisplayError: the bus cannot be opened or the panel does not answer.
    """
    from device.drivers.buttons import Buttons  # noqa: PLC0415 -- Pi-only: gpiozero's pins, loaded only on a Pi
    from device.drivers.display import Display  # noqa: PLC0415 -- Pi-only: luma's panels
    from device.drivers.pins import open_pin_factory  # noqa: PLC0415 -- Pi-only: lgpio

    # The pin library first: lgpio's working directory is settled before luma's
    # GPIO module (rpi-lgpio, for SPI's DC/RST) loads lgpio too.
    factory = open_pin_factory()
    b = config.buttons
    staff_pin = b.staff_pin if config.session.source == "staff_button" else None
    try:
        buttons = Buttons(b.pins, events, staff_pin=staff_pin, make_staff_event=make_staff_event,
                          pin_factory=factory, bounce_s=b.bounce_ms / 1000, min_press_s=b.min_press_ms / 1000)
    except EvaluatorError:
        raise
    except Exception as e:
        # A library that loads but cannot drive the lines (no gpiochip, a line another program holds).
        raise PinLibraryError(f"{type(factory).__name__} cannot set up the button pins "
                              f"{', '.join(map(str, b.pins))}: {type(e).__name__}: {e}") from e
    try:
        panel = open_panel(config)
    except BaseException:
        buttons.close()
        raise
    speaker = AlsaSink(config.audio.device) if config.audio.enabled else None
    buzzer, led = make_outputs(config, factory)
    return Hardware(buttons, Display(panel, config.display.model), panel.size, events,
                    speaker=speaker, buzzer=buzzer, led=led)


def open_panel(config: Config) -> Any:
    """The configured panel on its I²C or SPI bus (luma's own bus classes).

    Raises:
        DisplayError: naming the bus and the model.
    """
    from luma.core.interface.serial import i2c, spi  # noqa: PLC0415 -- Pi-only: the buses (smbus2, spidev, RPi.GPIO)

    from device.drivers.display import make_panel  # noqa: PLC0415 -- Pi-only: luma's panels

    d = config.display
    bus: i2c | spi
    try:
        if d.interface == "i2c":
            bus = i2c(port=d.i2c_port, address=d.i2c_address)
        else:
            bus = spi(port=d.spi_port, device=d.spi_device, gpio_DC=d.gpio_dc, gpio_RST=d.gpio_rst)
    except Exception as e:  # luma raises its own DeviceNotFoundError / DevicePermissionError
        hint = (" (luma drives DC and RST through RPi.GPIO: install rpi-lgpio, the pi extra)"
                if isinstance(e, ImportError) else "")
        raise DisplayError(f"cannot open the {d.interface} bus for the {d.model} display: "
                           f"{type(e).__name__}: {e}{hint}") from e
    try:
        return make_panel(d.model, bus, width=d.width, height=d.height, rotate=d.rotate)
    except BaseException:
        try:
            bus.cleanup()
        except Exception:
            pass
        raise
