"""What the configuration turns on in the Pi's firmware, and the pins the kernel then holds.

The installer (``deploy/install.sh``, the ``.deb``) turns on only what the
configured panel and console use: I²C at 400 kHz for an I²C panel, SPI for
an SPI panel, the UART for a console on ``/dev/serial0``, the USB gadget
for one on ``/dev/ttyGS0``, and turns the others off. Once on, the kernel's
drivers hold their pins (I²C1 GPIO 2/3, SPI0 GPIO 7–11, the UART GPIO
14/15): lgpio answers "GPIO busy" for them. So the configuration refuses a
button (or the panel's DC/RST) on such a pin, naming the key
(:func:`problems`, called by the configuration's checks), and the doctor
reads back from the device tree what is really on and how fast the I²C bus
runs (:func:`i2c_hz`).

Only the standard library and :mod:`device.panels` are imported: the
configuration imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device import panels

if TYPE_CHECKING:
    from device.config import Config

#: BCM pins of each I²C port on the 40-pin header: (SDA, SCL).
I2C_PINS = {0: {0: "I2C0 SDA", 1: "I2C0 SCL"}, 1: {2: "I2C1 SDA", 3: "I2C1 SCL"}}
#: BCM pins the kernel takes for each SPI port once it is enabled (every chip select of the default overlay).
SPI_PINS = {
    0: {7: "SPI0 CE1", 8: "SPI0 CE0", 9: "SPI0 MISO", 10: "SPI0 MOSI", 11: "SPI0 SCLK"},
    1: {16: "SPI1 CE2", 17: "SPI1 CE1", 18: "SPI1 CE0", 19: "SPI1 MISO", 20: "SPI1 MOSI", 21: "SPI1 SCLK"},
}
#: Console ports that are the header's UART (GPIO 14 TXD, 15 RXD) rather than the USB gadget.
UART_PORTS = ("/dev/serial0", "/dev/ttyS0", "/dev/ttyAMA0")
UART_PINS = {14: "UART TXD", 15: "UART RXD"}
#: BCM pins the PCM/I²S block takes once an I²S amplifier's overlay is on (audio.output = "i2s");
#: a MAX98357A is wired to 18, 19 and 21, and the overlay claims 20 as well.
I2S_PINS = {18: "I2S BCLK", 19: "I2S LRCLK", 20: "I2S DIN", 21: "I2S DOUT"}
#: The USB gadget's serial port (dtoverlay=dwc2, g_serial).
GADGET_PORTS = ("/dev/ttyGS0",)

#: The I²C speed the panel budget needs (DESIGN.md "Budgets"); Raspberry Pi OS leaves the bus at 100 kHz.
I2C_FAST_HZ = 400_000
I2C_DEFAULT_HZ = 100_000
#: Where the kernel shows the device tree.
DEVICE_TREE = "/proc/device-tree"
#: The device-tree aliases of each bus the configuration can use.
I2C_ALIAS = "i2c{port}"
SPI_ALIAS = "spi{port}"
UART_ALIAS = "serial0"


@dataclass(frozen=True)
class Buses:
    """What the configuration needs turned on.

    Attributes:
        i2c: the I²C port of an I²C panel, else None.
        spi: the SPI port of an SPI panel, else None.
        uart: the console is on the header's UART.
        gadget: the console is on the USB gadget port.
    """

    i2c: int | None
    spi: int | None
    uart: bool
    gadget: bool


def buses(config: Config) -> Buses:
    """The buses ``config`` uses."""
    d = config.display
    port = config.console.port
    return Buses(i2c=d.i2c_port if d.interface == "i2c" else None,
                 spi=d.spi_port if d.interface == "spi" else None,
                 uart=port in UART_PORTS, gadget=port in GADGET_PORTS)


def held(config: Config) -> dict[int, str]:
    """``{BCM pin: what holds it and which key turned it on}`` once the installer set up ``config``."""
    d = config.display
    on = buses(config)
    taken: dict[int, str] = {}
    if on.i2c is not None:
        taken.update({pin: f'{what} (display.interface = "i2c", display.i2c_port = {on.i2c})'
                      for pin, what in I2C_PINS.get(on.i2c, {}).items()})
    if on.spi is not None:
        taken.update({pin: f'{what} (display.interface = "spi", display.spi_port = {d.spi_port})'
                      for pin, what in SPI_PINS.get(on.spi, {}).items()})
    if on.uart:
        taken.update({pin: f"{what} (console.port = {config.console.port})" for pin, what in UART_PINS.items()})
    if config.audio.output == "i2s":
        taken.update({pin: f'{what} (audio.output = "i2s": the amplifier)' for pin, what in I2S_PINS.items()})
    return taken


def problems(config: Config) -> list[tuple[str, str]]:
    """The panel's interface, and pins the kernel or the panel already holds: ``(key, message)`` each."""
    found = []
    d = config.display
    try:
        model = panels.get(d.model)
    except KeyError:
        model = None     # display.model's own check names it
    if model is not None and d.interface not in model.interfaces:
        other = next(iter(model.interfaces))
        found.append(("display.interface", f"the {d.model} has no {d.interface.upper()} interface: wire it to "
                                           f'{other.upper()} and set display.interface = "{other}"'))
    taken = held(config)
    used = [("buttons.pins", pin) for pin in config.buttons.pins]
    if config.session.source == "staff_button":
        used.append(("buttons.staff_pin", config.buttons.staff_pin))
    if d.interface == "spi":
        used += [("display.gpio_dc", d.gpio_dc), ("display.gpio_rst", d.gpio_rst)]
    # The buzzer and the status LED (-1: not fitted) each need a pin of their own.
    for key, pin in (("audio.buzzer_pin", config.audio.buzzer_pin), ("led.pin", config.led.pin)):
        if pin == -1:
            continue
        found += [(key, f"pin {pin} is also {other}") for other, taken_pin in used if taken_pin == pin]
        used.append((key, pin))
    for key, pin in used:
        if pin in taken:
            found.append((key, f"pin {pin} is {taken[pin]}"))
    if d.interface == "spi" and config.session.source == "staff_button":
        for key in ("gpio_dc", "gpio_rst"):
            if getattr(d, key) == config.buttons.staff_pin:
                found.append((f"display.{key}", f"pin {config.buttons.staff_pin} is also the staff key"))
    return found


def firmware(config: Config) -> list[str]:
    """The ``config.txt`` lines (under ``[all]``) that turn on what ``config`` uses and nothing else."""
    on = buses(config)
    lines = []
    if on.i2c == 1:
        lines += ["dtparam=i2c_arm=on", f"dtparam=i2c_arm_baudrate={I2C_FAST_HZ}"]
    else:
        lines.append("dtparam=i2c_arm=off")
    if on.i2c == 0:
        lines.append(f"dtoverlay=i2c0,baudrate={I2C_FAST_HZ}")
    lines.append("dtparam=spi=on" if on.spi == 0 else "dtparam=spi=off")
    if on.spi == 1:
        lines.append("dtoverlay=spi1-3cs")
    lines.append("enable_uart=1" if on.uart else "enable_uart=0")
    if on.gadget:
        lines.append("dtoverlay=dwc2")
    return lines


def modules(config: Config) -> list[str]:
    """Kernel modules to load at boot (``/etc/modules-load.d``)."""
    on = buses(config)
    return (["i2c-dev"] if on.i2c is not None else []) + (["dwc2", "g_serial"] if on.gadget else [])


# --- what the running kernel has: the device tree ---------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _node(alias: str, tree: str) -> str | None:
    """The device-tree folder an alias (``i2c1``, ``spi0``) names."""
    target = _read(os.path.join(tree, "aliases", alias))
    if not target:
        return None
    return os.path.join(tree, target.rstrip(b"\0").decode(errors="replace").lstrip("/"))


def enabled(alias: str, tree: str = DEVICE_TREE) -> bool | None:
    """Whether the bus behind ``alias`` is turned on (its ``status`` is ``okay``); None when not known."""
    node = _node(alias, tree)
    status = _read(os.path.join(node, "status")) if node else None
    if status is None:
        return None
    return status.rstrip(b"\0") in (b"okay", b"ok")


def i2c_hz(port: int, tree: str = DEVICE_TREE) -> int | None:
    """The I²C port's clock as the kernel set it up (``clock-frequency``); None when not known."""
    node = _node(I2C_ALIAS.format(port=port), tree)
    value = _read(os.path.join(node, "clock-frequency")) if node else None
    if value is None or len(value) != 4:
        return None
    return int.from_bytes(value, "big")
