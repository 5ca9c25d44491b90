"""Panel bus budget: bytes on the bus for each screen transition and a countdown tick, per model,
and the panel's part of press→visible projected on a Raspberry Pi Zero 2 W.

The real drivers (``device.drivers.display.make_panel``: ours for the
page-organised chips, luma's for the greyscale and colour ones) write to a
meter that counts what luma's ``i2c`` (managed: one transaction per command
call and per 4 KiB of data) or ``spi`` would put on the wire. Wire time at
400 kHz I²C (9 bit-times a byte, the address byte and the control byte in
each transaction) or luma's default 8 MHz SPI, plus a fixed cost per
transaction for the kernel's ioctl. The CPU part (the driver turning the
frame into bytes, the frame already rendered: the screen renders each model
once) is measured here and multiplied by :data:`PI_ZERO_2W_FACTOR`.

Goals (issue 12): the panel part of press→visible under 30 ms; a countdown
tick at most 10 % of a full frame. One run, printed; not a test. From the
repository root:

    python bench/bench_bus.py            (--quick: fewer timing rounds)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from luma.core.device import device as LumaDevice
from luma.oled import device as oled

from device.config import DISPLAY_MODELS, SPI_ONLY_MODELS
from device.drivers.display import Display, make_panel
from device.levels import Level
from device.ui import screens
from device.ui.models import PromptScreen, ReasonsScreen, Screen, ThanksScreen
from sim.samples import REASONS, SAMPLES

I2C_HZ = 400_000
SPI_HZ = 8_000_000
#: The kernel's ioctl and the bus driver's set-up per transaction on a Pi Zero 2 W (i2c-bcm2835, spi-bcm2835).
I2C_TRANSACTION_S = 60e-6
SPI_TRANSACTION_S = 25e-6
#: Python on a Pi Zero 2 W (Cortex-A53, 1 GHz) against this machine: pyperformance puts a Pi 3 (the same
#: cores at 1.2 GHz) 8 to 15 times behind a current x86 core; the slower end is taken.
PI_ZERO_2W_FACTOR = 15.0
#: luma writes at most this much in one I²C message (managed) or SPI transfer.
CHUNK = 4096
GOAL_S = 0.030
TICK_GOAL = 0.10

PROMPT = SAMPLES["prompt"]
assert isinstance(PROMPT, PromptScreen)
TICK_FROM = PromptScreen(PROMPT.window_no, PROMPT.staff_name, 28, PROMPT.ticket)
TICK_TO = PromptScreen(PROMPT.window_no, PROMPT.staff_name, 27, PROMPT.ticket)

#: (name, from, to): what the panel changes through, in a day at the counter.
TRANSITIONS: list[tuple[str, Screen, Screen]] = [
    ("boot>idle", SAMPLES["boot"], SAMPLES["idle"]),
    ("idle>prompt", SAMPLES["idle"], TICK_FROM),
    ("tick", TICK_FROM, TICK_TO),
    ("prompt>thanks", TICK_TO, SAMPLES["thanks"]),
    ("idle>thanks", SAMPLES["idle"], SAMPLES["thanks"]),
    ("thanks>idle", SAMPLES["thanks"], SAMPLES["idle"]),
    ("thanks>reasons", ThanksScreen(Level.DISSATISFIED), ReasonsScreen(Level.DISSATISFIED, REASONS, 15)),
    ("reasons tick", ReasonsScreen(Level.DISSATISFIED, REASONS, 15), ReasonsScreen(Level.DISSATISFIED, REASONS, 14)),
]
#: The transitions a press makes visible.
PRESSES = ("prompt>thanks", "idle>thanks")


class WireMeter:
    """A luma serial interface that counts what reaches the wire.

    Args:
        interface: ``"i2c"`` or ``"spi"``.
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.reset()

    def reset(self) -> None:
        self.transactions = 0
        self.wire_bytes = 0
        self.data_bytes = 0

    def _transfer(self, n: int) -> None:
        self.transactions += 1
        # I2C: the address byte and the control byte (0x00 command, 0x40 data) before the payload.
        self.wire_bytes += n + (2 if self.interface == "i2c" else 0)

    def command(self, *cmd: int) -> None:
        self._transfer(len(cmd))

    def data(self, data: list[int] | bytes) -> None:
        self.data_bytes += len(data)
        for i in range(0, len(data), CHUNK):
            self._transfer(min(CHUNK, len(data) - i))

    def cleanup(self) -> None:
        pass

    def seconds(self) -> float:
        """Time on the wire, with the per-transaction cost."""
        if self.interface == "i2c":
            return self.wire_bytes * 9 / I2C_HZ + self.transactions * I2C_TRANSACTION_S
        return self.wire_bytes * 8 / SPI_HZ + self.transactions * SPI_TRANSACTION_S


@dataclass
class Cost:
    data_bytes: int
    wire_s: float
    cpu_s: float

    @property
    def pi_s(self) -> float:
        return self.wire_s + self.cpu_s * PI_ZERO_2W_FACTOR


def transition(model: str, interface: str, before: Screen, after: Screen, rounds: int,
               make: Callable[[WireMeter], LumaDevice] | None = None) -> Cost:
    """What showing ``after`` over ``before`` costs on this model and bus."""
    best = float("inf")
    meter = WireMeter(interface)
    for _ in range(rounds):
        meter = WireMeter(interface)
        panel = make(meter) if make is not None else make_panel(model, meter)
        display = Display(panel, model)
        first = screens.render(before, display.size)
        second = screens.render(after, display.size)
        display.show(first)
        meter.reset()
        start = time.perf_counter()
        display.show(second)
        best = min(best, time.perf_counter() - start)
    return Cost(meter.data_bytes, meter.seconds(), best)


def _stock(cls: type[LumaDevice], meter: WireMeter) -> LumaDevice:
    """luma's own driver, for comparison."""
    return cls(serial_interface=meter)


def full_frame_bytes(model: str) -> int:
    w, h = DISPLAY_MODELS[model]
    bits = {"ssd1351": 16, "ssd1322": 4, "ssd1327": 4}.get(model, 1)
    return w * h * bits // 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="panel bus budget")
    parser.add_argument("--quick", action="store_true", help="one timing round instead of five")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 5
    print(f"panel bus budget: I2C {I2C_HZ // 1000} kHz, SPI {SPI_HZ // 1_000_000} MHz; "
          f"CPU x{PI_ZERO_2W_FACTOR:.0f} for a Pi Zero 2 W")
    print("data bytes a full frame has, and each transition sends; the panel's part of press→visible:")
    names = [name for name, _, _ in TRANSITIONS]
    print(f"  {'model':8s} {'bus':4s} {'full':>6s} " + " ".join(f"{n:>14s}" for n in names)
          + f" {'tick %':>7s} {'press→visible':>14s}")
    failures = []
    for model in sorted(DISPLAY_MODELS):
        for interface in ("i2c", "spi"):
            if interface == "i2c" and model in SPI_ONLY_MODELS:
                continue
            costs = {name: transition(model, interface, a, b, rounds) for name, a, b in TRANSITIONS}
            full = full_frame_bytes(model)
            tick = costs["tick"].data_bytes / full
            press = max(costs[n].pi_s for n in PRESSES)
            verdict = "ok" if press < GOAL_S and tick <= TICK_GOAL else "OVER"
            if verdict != "ok":
                failures.append(f"{model}/{interface}")
            print(f"  {model:8s} {interface:4s} {full:6d} "
                  + " ".join(f"{costs[n].data_bytes:14d}" for n in names)
                  + f" {tick * 100:6.1f}% {press * 1000:9.1f} ms {verdict}")
    print("press→visible = wire time + transactions + driver CPU x factor, for the slower of "
          f"{' and '.join(PRESSES)}; goal < {GOAL_S * 1000:.0f} ms, tick <= {TICK_GOAL:.0%} of a full frame")
    for model, cls in (("ssd1306", oled.ssd1306), ("sh1106", oled.sh1106), ("ssd1309", oled.ssd1309)):
        stock = transition(model, "i2c", TICK_FROM, TICK_TO, 1, make=functools.partial(_stock, cls))
        ours = transition(model, "i2c", TICK_FROM, TICK_TO, 1)
        print(f"  {model}: a countdown tick with luma's own driver sends {stock.data_bytes} data bytes "
              f"({stock.wire_s * 1000:.1f} ms on I2C); with device.drivers.paged {ours.data_bytes} "
              f"({ours.wire_s * 1000:.2f} ms)")
    if failures:
        print("over budget: " + ", ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
