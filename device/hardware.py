"""The hardware bundle, and the real one for a Raspberry Pi.

Only this module (and ``sim/hardware.py``) creates hardware objects; Pi-only
imports stay inside :func:`make_pi_hardware` so the rest imports anywhere.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.config import Config
    from device.drivers.buttons import Buttons
    from device.drivers.display import Display
    from device.state import StaffRequested

logger = logging.getLogger(__name__)


@dataclass
class Hardware:
    """What the app drives: buttons feeding ``events``, and a display.

    Attributes:
        buttons: :class:`~device.drivers.buttons.Buttons`.
        display: :class:`~device.drivers.display.Display` (or the simulator's wrapper).
        size: ``(width, height)`` to render at, after rotation.
        events: the queue the buttons put their events on.
    """

    buttons: Buttons
    display: Display
    size: tuple[int, int]
    events: queue.Queue[Any]

    def close(self) -> None:
        self.buttons.close()
        self.display.close()


def staff_request() -> StaffRequested:
    """A 请评价 press opens a session with an id made here, outside the pure step."""
    from device.records import new_id
    from device.state import StaffRequested

    return StaffRequested(new_id())


def make_pi_hardware(config: Config, events: queue.Queue[Any],
                     make_staff_event: Callable[[], Any]) -> Hardware:
    """Buttons on the Pi's GPIO (gpiozero picks its pin library) and the OLED."""
    from luma.core.interface.serial import i2c, spi

    from device.drivers.buttons import Buttons
    from device.drivers.display import Display, make_panel
    from device.errors import DisplayError

    d = config.display
    try:
        if d.interface == "i2c":
            bus = i2c(port=d.i2c_port, address=d.i2c_address)
        else:
            bus = spi(port=d.spi_port, device=d.spi_device, gpio_DC=d.gpio_dc, gpio_RST=d.gpio_rst)
    except Exception as e:  # luma raises its own DeviceNotFoundError / DevicePermissionError
        raise DisplayError(f"cannot open the {d.interface} bus for the {d.model} display: {e}") from e
    panel = make_panel(d.model, bus, width=d.width, height=d.height, rotate=d.rotate)
    staff_pin = config.buttons.staff_pin if config.session.source == "staff_button" else None
    buttons = Buttons(config.buttons.pins, events, staff_pin=staff_pin,
                      make_staff_event=make_staff_event, bounce_s=config.buttons.bounce_ms / 1000)
    display = Display(panel)
    return Hardware(buttons, display, panel.size, events)
