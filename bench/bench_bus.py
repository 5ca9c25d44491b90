"""Panel bus budget: bytes on the bus for each screen transition and a countdown tick, per model,
and the panel's part of press→visible projected on a Raspberry Pi Zero 2 W at 100 and 400 kHz.

The real drivers (``device.drivers.display.make_panel``: ours for the
page-organised chips, luma's for the greyscale and colour ones) write to a
meter that counts what luma's ``i2c`` (managed: one transaction per command
call and per 4 KiB of data) or ``spi`` would put on the wire. Wire time at
the I²C clock (9 bit-times a byte, the address byte and the control byte in
each transaction) side by side for Raspberry Pi OS's default 100 kHz and the
400 kHz the installer sets (and the speed the doctor reads from this
machine's device tree, when it has one), or luma's default 8 MHz SPI. Two
numbers are **assumptions, printed as such**, not measured here (no Pi in
CI): a fixed cost per transaction for the kernel's ioctl, and the factor
between this machine's CPU and a Pi Zero 2 W's, by which the driver's
measured CPU time (the frame turned into bytes) is multiplied.

Then **measured**: press→visible on the fake Pi (the production program,
``python -m device``, over the fake kernel whose I²C bus takes the time its
clock implies), at both speeds: from the finger on the button to the last
byte of the thank-you frame on the wire, on this machine's CPU.

Goals (issue 12, DESIGN.md "Budgets"): the panel part of press→visible
under 30 ms at the installer's speed; a countdown tick at most 10 % of a full
frame. One run, printed; not a test. From the repository root:

    python bench/bench_bus.py            (--quick: fewer timing rounds; --no-fakepi: skip the measurement)
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

from device import panels, pinmap
from device.drivers.display import Display, make_panel
from device.levels import Level
from device.ui import screens
from device.ui.models import PromptScreen, ReasonsScreen, Screen, ThanksScreen
from sim.samples import REASONS, SAMPLES

#: The I²C speeds shown side by side: Raspberry Pi OS's default, and what the installer sets.
I2C_SPEEDS = (pinmap.I2C_DEFAULT_HZ, pinmap.I2C_FAST_HZ)
SPI_HZ = 8_000_000
#: ASSUMED, not measured: the kernel's ioctl and the bus driver's set-up per transaction on a Pi Zero 2 W
#: (i2c-bcm2835, spi-bcm2835).
I2C_TRANSACTION_S = 60e-6
SPI_TRANSACTION_S = 25e-6
#: ASSUMED, not measured: Python on a Pi Zero 2 W (Cortex-A53, 1 GHz) against this machine: pyperformance puts
#: a Pi 3 (the same cores at 1.2 GHz) 8 to 15 times behind a current x86 core; the slower end is taken.
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

    def seconds(self, i2c_hz: int = pinmap.I2C_FAST_HZ) -> float:
        """Time on the wire, with the per-transaction cost."""
        if self.interface == "i2c":
            return self.wire_bytes * 9 / i2c_hz + self.transactions * I2C_TRANSACTION_S
        return self.wire_bytes * 8 / SPI_HZ + self.transactions * SPI_TRANSACTION_S


@dataclass
class Cost:
    data_bytes: int
    wire_s: dict[int, float]
    cpu_s: float

    def pi_s(self, i2c_hz: int = pinmap.I2C_FAST_HZ) -> float:
        return self.wire_s[i2c_hz] + self.cpu_s * PI_ZERO_2W_FACTOR


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
    speeds = {*I2C_SPEEDS, *(hz for hz in (_doctor_hz(),) if hz)}
    return Cost(meter.data_bytes, {hz: meter.seconds(hz) for hz in speeds}, best)


def _doctor_hz() -> int | None:
    """The I²C clock this machine's device tree says (what ``evaluator doctor`` reads); None off a Pi."""
    return pinmap.i2c_hz(1)


def _stock(cls: type[LumaDevice], meter: WireMeter) -> LumaDevice:
    """luma's own driver, for comparison."""
    return cls(serial_interface=meter)


def full_frame_bytes(model: str) -> int:
    record = panels.get(model)
    w, h = record.size
    return w * h * record.bits_per_pixel // 8


def fake_pi_press_to_visible(i2c_hz: int) -> float:
    """Measured: finger down → last byte of the thank-you frame on the fake Pi's I²C bus (SSD1306), in ms."""
    import logging
    import tempfile

    from hall import HallServer
    from sim.fakepi.pi import FakePi

    logging.getLogger("hall").setLevel(logging.ERROR)     # its one-shared-key warning is for simulator users

    with tempfile.TemporaryDirectory(prefix="bench-bus-") as folder:
        hall = HallServer(os.path.join(folder, "hall.db"), default_key="bench-key")
        hall.start()
        pi = FakePi(i2c_hz=i2c_hz, spi={})
        try:
            key = os.path.join(folder, "device.key")
            with open(key, "w") as f:
                f.write("bench-key")
            config = os.path.join(folder, "evaluator.toml")
            with open(config, "w") as f:
                f.write(f'[device]\nid = "WE-0001"\n[session]\nsource = "free"\nmin_interval_s = 0\n'
                        f'[display]\nshift_every_s = 1e9\n[upload]\nserver = "{hall.url}"\nkey_file = "{key}"\n'
                        f'[outbox]\npath = "{folder}/outbox.db"\n'
                        f'[console]\nport = "{folder}/no-console"\nsettings_path = "{folder}/settings.toml"\n')
            child = pi.start(["--config", config], cwd=folder, log_path=os.path.join(folder, "device.log"))
            child.wait_for(r"screen: idle", timeout=60)
            time.sleep(0.3)
            since = len(pi.records())
            down = time.monotonic_ns()
            mark = len(child.log())
            pi.press(5, ms=80)
            child.wait_for(r"screen: thanks", after=mark)
            time.sleep(0.3)
            frame = [r for r in pi.records(since) if r.start_ns >= down]
            return (max(r.end_ns for r in frame) - down) / 1e6
        finally:
            pi.close(graceful=False)
            hall.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="panel bus budget")
    parser.add_argument("--quick", action="store_true", help="one timing round instead of five")
    parser.add_argument("--no-fakepi", action="store_true", help="skip the measurement on the fake Pi")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 5
    doctor_hz = _doctor_hz()
    speeds = sorted({*I2C_SPEEDS, *((doctor_hz,) if doctor_hz else ())})
    print(f"panel bus budget: I2C at {' and '.join(f'{hz // 1000} kHz' for hz in speeds)}, "
          f"SPI {SPI_HZ // 1_000_000} MHz")
    print("  this machine's device tree: "
          + (f"I2C1 at {doctor_hz // 1000} kHz (as evaluator doctor reads it)" if doctor_hz else
             f"no I2C clock (not a Pi): the installer's {pinmap.I2C_FAST_HZ // 1000} kHz is the one that counts"))
    print(f"  ASSUMED (not measured here): {I2C_TRANSACTION_S * 1e6:.0f} us per I2C transaction, "
          f"{SPI_TRANSACTION_S * 1e6:.0f} us per SPI transfer (the kernel's ioctl on a Pi Zero 2 W); "
          f"driver CPU x{PI_ZERO_2W_FACTOR:.0f} for a Pi Zero 2 W against this machine")
    print("data bytes a full frame has, and each transition sends; the panel's part of press→visible:")
    names = [name for name, _, _ in TRANSITIONS]
    print(f"  {'model':8s} {'bus':4s} {'full':>6s} " + " ".join(f"{n:>14s}" for n in names)
          + f" {'tick %':>7s} " + " ".join(f"{f'@{hz // 1000} kHz':>11s}" for hz in speeds))
    failures = []
    for model in sorted(panels.models()):
        for interface in panels.get(model).interfaces:
            costs = {name: transition(model, interface, a, b, rounds) for name, a, b in TRANSITIONS}
            full = full_frame_bytes(model)
            tick = costs["tick"].data_bytes / full
            press = {hz: max(costs[n].pi_s(hz) for n in PRESSES) for hz in speeds}
            verdict = "ok" if press[pinmap.I2C_FAST_HZ] < GOAL_S and tick <= TICK_GOAL else "OVER"
            if verdict != "ok":
                failures.append(f"{model}/{interface}")
            shown = [f"{press[hz] * 1000:8.1f} ms" if interface == "i2c" or hz == speeds[-1] else f"{'':>11s}"
                     for hz in speeds]
            print(f"  {model:8s} {interface:4s} {full:6d} "
                  + " ".join(f"{costs[n].data_bytes:14d}" for n in names)
                  + f" {tick * 100:6.1f}% " + " ".join(shown) + f" {verdict}")
    print("press→visible = wire time + transactions + driver CPU x factor, for the slower of "
          f"{' and '.join(PRESSES)}; goal < {GOAL_S * 1000:.0f} ms at {pinmap.I2C_FAST_HZ // 1000} kHz (the "
          f"installer's), tick <= {TICK_GOAL:.0%} of a full frame; SPI does not depend on the I2C clock")
    for model, cls in (("ssd1306", oled.ssd1306), ("sh1106", oled.sh1106), ("ssd1309", oled.ssd1309)):
        stock = transition(model, "i2c", TICK_FROM, TICK_TO, 1, make=functools.partial(_stock, cls))
        ours = transition(model, "i2c", TICK_FROM, TICK_TO, 1)
        print(f"  {model}: a countdown tick with luma's own driver sends {stock.data_bytes} data bytes "
              f"({stock.wire_s[pinmap.I2C_FAST_HZ] * 1000:.1f} ms on I2C at 400 kHz); with device.drivers.paged "
              f"{ours.data_bytes} ({ours.wire_s[pinmap.I2C_FAST_HZ] * 1000:.2f} ms)")
    if not args.no_fakepi:
        print("MEASURED on the fake Pi (python -m device, SSD1306 on I2C; this machine's CPU; includes the "
              "40 ms the contact must stay closed, buttons.min_press_ms):")
        for hz in I2C_SPEEDS:
            print(f"  I2C at {hz // 1000:3d} kHz: finger down → thank-you frame on the wire "
                  f"{fake_pi_press_to_visible(hz):6.1f} ms")
    if failures:
        print("over budget at 400 kHz: " + ", ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
