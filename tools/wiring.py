"""The wiring table and diagram, made from the pin configuration so they never drift from it.

    python tools/wiring.py                       # docs/wiring.png and the table in README.md
    python tools/wiring.py --config hall.toml --out wiring-hall.png --readme ""   # a hall's own pins

Reads the configuration as the device does (built-in defaults, then the
files, then ``--set``): the buttons' BCM pins, the staff key (when
``session.source`` is ``staff_button``), the panel's interface and pins and
the console's port. Writes the 40-pin header as a picture with every pin in
use tagged with what goes on it, in one colour per part, and prints the same
as a Markdown table; with ``--readme`` it replaces the table between the
``wiring`` markers there. The PNG carries a digest of the table
(``wiring-digest``), which the tests compare with the configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from PIL import Image, ImageDraw, PngImagePlugin

from device import config as config_mod
from device.config import Config
from device.doctor import HEADER_PIN
from device.levels import Level
from device.pinmap import UART_PORTS

BEGIN, END = "<!-- wiring:begin (tools/wiring.py) -->", "<!-- wiring:end -->"
GROUND = (6, 9, 14, 20, 25, 30, 34, 39)
POWER = {1: "3.3 V", 17: "3.3 V", 2: "5 V", 4: "5 V"}
COLOURS = {"panel": (37, 99, 235), "button": (22, 163, 74), "staff key": (217, 119, 6), "console": (147, 51, 234),
           "amplifier": (190, 24, 93), "buzzer": (8, 145, 178), "LED": (146, 64, 14)}
#: The I²S amplifier's (MAX98357A) pins on the header: its BCLK, LRC and DIN on GPIO 18, 19 and 21.
I2S_WIRES = (("amplifier BCLK", 18), ("amplifier LRC", 19), ("amplifier DIN", 21))


@dataclass(frozen=True)
class Wire:
    """One connection: a part's pin to a pin of the header."""

    part: str       # "panel", "button", "staff key", "console"
    what: str       # e.g. "SDA", "button 1 (非常满意)"
    header: int     # physical pin 1..40
    gpio: int | None = None

    @property
    def source(self) -> str:
        return f"GPIO {self.gpio}" if self.gpio is not None else POWER.get(self.header, "GND")


def _ground_near(pins: Sequence[int], taken: set[int]) -> int:
    """The free ground pin nearest the middle of ``pins`` on the header."""
    middle = sum((p - 1) // 2 for p in pins) / len(pins)
    free = [g for g in GROUND if g not in taken] or list(GROUND)
    return min(free, key=lambda g: (abs((g - 1) // 2 - middle), g))


def connections(config: Config) -> list[Wire]:
    """Every wire the configuration asks for."""
    d = config.display
    wires: list[Wire] = []
    if d.interface == "i2c":
        wires += [Wire("panel", "VCC", 1), Wire("panel", "GND", 9), Wire("panel", "SDA", 3, 2),
                  Wire("panel", "SCL", 5, 3)]
    else:
        cs = 8 if d.spi_device == 0 else 7
        wires += [Wire("panel", "VCC", 17), Wire("panel", "GND", 20), Wire("panel", "DIN (MOSI)", 19, 10),
                  Wire("panel", "CLK (SCLK)", 23, 11), Wire("panel", f"CS (CE{d.spi_device})", HEADER_PIN[cs], cs),
                  Wire("panel", "DC", HEADER_PIN[d.gpio_dc], d.gpio_dc),
                  Wire("panel", "RES (RST)", HEADER_PIN[d.gpio_rst], d.gpio_rst)]
    if config.console.port in UART_PORTS:
        wires += [Wire("console", "USB-serial adapter RXD", 8, 14), Wire("console", "USB-serial adapter TXD", 10, 15),
                  Wire("console", "USB-serial adapter GND", 6)]
    buttons = [(f"button {n} ({Level.from_button(n).text})", pin, "button")
               for n, pin in enumerate(config.buttons.pins, start=1)]
    if config.session.source == "staff_button":
        buttons.append(("staff key (请评价)", config.buttons.staff_pin, "staff key"))
    wires += [Wire(part, what, HEADER_PIN[gpio], gpio) for what, gpio, part in buttons]
    # The buttons' other legs chained together to one ground pin near them.
    ground = _ground_near([HEADER_PIN[gpio] for _, gpio, _ in buttons], {w.header for w in wires})
    wires.append(Wire("button", "the other leg of every button, chained", ground))
    return wires + _output_wires(config, wires)


def _output_wires(config: Config, wires: Sequence[Wire]) -> list[Wire]:
    """The speaker's amplifier, the buzzer and the status LED (access), each with a ground of its own."""
    more: list[Wire] = []

    def ground(part: str, what: str, near: Sequence[int]) -> None:
        more.append(Wire(part, what, _ground_near(near, {w.header for w in [*wires, *more]})))

    a = config.audio
    if a.output == "i2s":
        five = 4 if any(w.header == 2 for w in wires) else 2
        more.append(Wire("amplifier", "amplifier VIN (5 V)", five))
        more += [Wire("amplifier", what, HEADER_PIN[gpio], gpio) for what, gpio in I2S_WIRES]
        ground("amplifier", "amplifier GND (GAIN, SD open)", [HEADER_PIN[g] for _, g in I2S_WIRES])
    if a.buzzer_pin >= 0:
        more.append(Wire("buzzer", "buzzer (passive)" if a.buzzer_tonal else "buzzer +",
                         HEADER_PIN[a.buzzer_pin], a.buzzer_pin))
        ground("buzzer", "buzzer −", [HEADER_PIN[a.buzzer_pin]])
    if config.led.pin >= 0:
        more.append(Wire("LED", "status LED + (330 Ω)", HEADER_PIN[config.led.pin], config.led.pin))
        ground("LED", "status LED −", [HEADER_PIN[config.led.pin]])
    return more


def markdown(config: Config, wires: Sequence[Wire]) -> str:
    """The wiring as a Markdown table, with the console's cable."""
    lines = ["| part | its pin | Pi | header pin |", "|---|---|---|---|"]
    for w in wires:
        lines.append(f"| {w.part} | {w.what} | {w.source} | {w.header} |")
    if config.console.port not in UART_PORTS:
        lines.append(f"| console | USB cable to the laptop | the USB data port ({config.console.port}) | — |")
    if config.audio.output == "usb":
        lines.append(f"| speaker | USB sound card | a USB port (audio.device = {config.audio.device}) | — |")
    return "\n".join(lines) + "\n"


def digest(table: str) -> str:
    return hashlib.sha256(table.encode("utf-8")).hexdigest()[:16]


def draw(config: Config, wires: Sequence[Wire]) -> Image.Image:
    """The 40-pin header, every pin in use tagged with its part's colour and what goes on it."""
    from device.ui.fonts import load_font

    font, title_font = load_font(12), load_font(16)
    width, top, step = 900, 84, 24
    image = Image.new("RGB", (width, top + 20 * step + 52 + 22 * _note_count(config)), "white")
    pen = ImageDraw.Draw(image)
    d = config.display
    pen.text((20, 16), "Window Evaluator: wiring on the Raspberry Pi's 40-pin header", font=title_font, fill="black")
    pen.text((20, 40), f"display.model = {d.model} on {d.interface}; buttons.pins = {list(config.buttons.pins)}; "
             f"console.port = {config.console.port}", font=font, fill=(80, 80, 80))
    by_pin: dict[int, list[Wire]] = {}
    for w in wires:
        by_pin.setdefault(w.header, []).append(w)
    gpio_of = {pin: gpio for gpio, pin in HEADER_PIN.items()}
    left_x, right_x = width // 2 - 16, width // 2 + 16
    pen.rounded_rectangle((left_x - 16, top - 16, right_x + 16, top + 19 * step + 16), 6, fill=(30, 30, 30))
    for pin in range(1, 41):
        row, right = (pin - 1) // 2, pin % 2 == 0
        x, y = (right_x if right else left_x), top + row * step
        used = by_pin.get(pin, [])
        kind = POWER.get(pin) or ("GND" if pin in GROUND else f"GPIO {gpio_of.get(pin, '?')}")
        dot = COLOURS[used[0].part] if used else (200, 60, 60) if pin in POWER else (90, 90, 90) \
            if pin in GROUND else (190, 190, 190)
        pen.ellipse((x - 7, y - 7, x + 7, y + 7), fill=dot, outline="white")
        number = f"{pin}"
        label = f"{number:>2}  {kind}" if right else f"{kind}  {number:>2}"
        tags = "; ".join(w.what for w in used)
        text_x = x + 20 if right else x - 20
        anchor = "lm" if right else "rm"
        pen.text((text_x, y), label, font=font, fill="black" if used else (150, 150, 150), anchor=anchor)
        if used:
            tag_width = int(pen.textlength(tags, font=font)) + 12
            box_x = text_x + 78 if right else text_x - 78 - tag_width
            pen.rounded_rectangle((box_x, y - 9, box_x + tag_width, y + 9), 4, fill=COLOURS[used[0].part])
            pen.text((box_x + 6, y), tags, font=font, fill="white", anchor="lm")
    notes = ["Buttons: one leg to its GPIO pin, the other legs chained to one GND pin; the Pi's pull-ups are on, "
             "no resistors needed.",
             "Panel: 3.3 V only (never 5 V). " + ("The USB console needs no wires: the cable goes in the USB data "
                                                  "port." if config.console.port not in UART_PORTS else
                                                  "The console's adapter crosses TX and RX; 3.3 V logic only.")]
    if config.audio.output == "i2s":
        notes.append("Amplifier (MAX98357A): the speaker on its + and − terminals; GPIO 18-21 are then the I2S "
                     "sound, no buttons (dtoverlay=max98357a).")
    elif config.audio.output == "usb":
        notes.append(f"Speaker: a USB sound card, no pins (audio.device = {config.audio.device}).")
    if config.audio.buzzer_pin >= 0 or config.led.pin >= 0:
        notes.append("Buzzer: a 3.3 V one drawing under 10 mA on its GPIO, a larger one through an NPN transistor; "
                     "LED: through a 330 Ω resistor.")
    for n, note in enumerate(notes):
        pen.text((20, top + 20 * step + 20 + n * 22), note, font=font, fill=(60, 60, 60))
    return image


def _note_count(config: Config) -> int:
    """Lines of notes under the header (two, and one for each fitted output)."""
    return 2 + (config.audio.output in ("i2s", "usb")) + (config.audio.buzzer_pin >= 0 or config.led.pin >= 0)


def write_png(config: Config, path: str) -> str:
    """Draw and save the diagram; returns the digest it carries."""
    wires = connections(config)
    tag = digest(markdown(config, wires))
    info = PngImagePlugin.PngInfo()
    info.add_text("wiring-digest", tag)
    draw(config, wires).save(path, pnginfo=info, optimize=True)
    return tag


def update_readme(path: str, table: str) -> bool:
    """Replace the table between the markers; False when the markers are not there."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _m: f"{BEGIN}\n{table}{END}", text)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    parser = argparse.ArgumentParser(prog="wiring.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=[], metavar="PATH", help="a TOML configuration file")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default=os.path.join(root, "docs", "wiring.png"), help="the PNG to write")
    parser.add_argument("--readme", default=os.path.join(root, "README.md"),
                        help="the README whose wiring table to replace ('' for none)")
    args = parser.parse_args(argv)
    config = config_mod.load(args.config, args.overrides)
    table = markdown(config, connections(config))
    print(table, end="")
    print(f"{args.out}: digest {write_png(config, args.out)}")
    if args.readme and not update_readme(args.readme, table):
        print(f"{args.readme}: no {BEGIN} marker; table not written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
