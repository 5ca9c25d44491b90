"""The test's side of the fake Pi: lay out its root, start the program on it, work its hardware.

Typical use (see ``tests/test_fakepi.py``)::

    pi = FakePi(spi={(0, 0): {"dc": 24, "rst": 25}})
    child = pi.start(["--config", "evaluator.toml"], cwd=folder)
    pi.press(5, ms=80)                       # button 1 on GPIO 5
    panel = pi.panel("ssd1306", bus="i2c")   # the bytes on the bus, decoded
    child.stop()
    pi.close()
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from sim.fakepi.control import SOCKET, ControlClient
from sim.fakepi.kernel import KERNEL_PINS, NODE_GROUPS, ROOT_ENV, BusRecord
from sim.fakepi.panels import Panel, decode

LIBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libs")
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The board the fake Pi is by default: its device-tree model and revision code.
ZERO_2_W = ("Raspberry Pi Zero 2 W Rev 1.0", 0x902120)


class FakePi:
    """A fake Raspberry Pi for one child process at a time.

    Args:
        root: the folder for its root (default: a new short-named temporary
            folder, removed by :meth:`close`; the control socket's path must be short).
        board: ``(model, revision)`` for the device tree.
        i2c: ``{port: addresses that answer}``; each port gets ``/dev/i2c-<port>``
            and is turned on in the device tree (its pins held by the kernel's I²C driver).
        spi: ``{(port, cs): {"dc": gpio, "rst": gpio}}``; each gets ``/dev/spidev<port>.<cs>``
            (SPI turned on: GPIO 7–11 held by the kernel's SPI driver for port 0).
        gpiochips: which ``/dev/gpiochip<N>`` exist.
        i2c_hz: the I²C clock in the device tree (``dtparam=i2c_arm_baudrate``;
            Raspberry Pi OS's default is 100 kHz, the installer sets 400 kHz); writes take as long as it implies.
        uart: the UART turned on (``enable_uart=1``): ``/dev/serial0``, GPIO 14/15 held.
        groups: the groups of the program's user (default: every group the nodes need);
            a node whose group is missing cannot be opened (``gpio``, ``i2c``, ``spi``).
        i2c_held: ``{port: addresses}`` a kernel driver owns (an RTC or a HAT's EEPROM): busy to smbus.
        gpio_compatible: ``{chip: compatible}`` in sysfs (``/sys/bus/gpio/devices/gpiochip<N>/of_node``),
            where rpi-lgpio looks for the chip to use (a Pi 5's RP1 is ``raspberrypi,rp1-gpio``).
    """

    def __init__(self, root: str | None = None, *, board: tuple[str, int] = ZERO_2_W,
                 i2c: Mapping[int, Sequence[int]] | None = None,
                 spi: Mapping[tuple[int, int], Mapping[str, int]] | None = None,
                 gpiochips: Sequence[int] = (0,), i2c_hz: int = 400_000, uart: bool = False,
                 groups: Sequence[str] | None = None, i2c_held: Mapping[int, Sequence[int]] | None = None,
                 gpio_compatible: Mapping[int, str] | None = None) -> None:
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="fakepi-")
        self.i2c = dict(i2c) if i2c is not None else {1: (0x3C,)}
        self.spi = dict(spi) if spi is not None else {(0, 0): {"dc": 24, "rst": 25}}
        self.i2c_hz = i2c_hz
        self.uart = uart
        self.groups = list(groups) if groups is not None else list(NODE_GROUPS.values())
        self.i2c_held = {p: list(a) for p, a in (i2c_held or {}).items()}
        self.gpio_compatible = dict(gpio_compatible or {})
        self._layout(board, gpiochips)
        self._client: ControlClient | None = None
        self.child: Child | None = None

    def _layout(self, board: tuple[str, int], gpiochips: Sequence[int]) -> None:
        model, revision = board
        tree = os.path.join(self.root, "proc", "device-tree")
        os.makedirs(os.path.join(tree, "system"), exist_ok=True)
        with open(os.path.join(tree, "model"), "wb") as f:
            f.write(model.encode() + b"\0")
        with open(os.path.join(tree, "compatible"), "wb") as f:
            f.write(b"raspberrypi,model-zero-2-w\0brcm,bcm2837\0")
        with open(os.path.join(tree, "system", "linux,revision"), "wb") as f:
            f.write(revision.to_bytes(4, "big"))
        # The buses as the firmware left them: an alias to each node, its status, the I²C clock.
        buses = {"i2c1": ("soc/i2c@7e804000", 1 in self.i2c), "i2c0": ("soc/i2c@7e205000", 0 in self.i2c),
                 "spi0": ("soc/spi@7e204000", any(p == 0 for p, _ in self.spi)),
                 "serial0": ("soc/serial@7e201000", self.uart)}
        os.makedirs(os.path.join(tree, "aliases"), exist_ok=True)
        for alias, (node, on) in buses.items():
            os.makedirs(os.path.join(tree, node), exist_ok=True)
            with open(os.path.join(tree, "aliases", alias), "wb") as f:
                f.write(b"/" + node.encode() + b"\0")
            with open(os.path.join(tree, node, "status"), "wb") as f:
                f.write(b"okay\0" if on else b"disabled\0")
            if alias.startswith("i2c"):
                with open(os.path.join(tree, node, "clock-frequency"), "wb") as f:
                    f.write(self.i2c_hz.to_bytes(4, "big"))
        for chip in gpiochips:
            of_node = os.path.join(self.root, "sys", "bus", "gpio", "devices", f"gpiochip{chip}", "of_node")
            os.makedirs(of_node, exist_ok=True)
            with open(os.path.join(of_node, "compatible"), "wb") as f:
                f.write(self.gpio_compatible.get(chip, "brcm,bcm2835-gpio").encode() + b"\0")
        dev = os.path.join(self.root, "dev")
        os.makedirs(dev, exist_ok=True)
        nodes = [f"gpiochip{n}" for n in gpiochips] + [f"i2c-{p}" for p in self.i2c] + \
            [f"spidev{p}.{cs}" for p, cs in self.spi] + (["serial0"] if self.uart else [])
        for node in nodes:
            open(os.path.join(dev, node), "w").close()
        # Lines the kernel's drivers hold once their bus is on.
        held: dict[int, str] = {}
        for port in self.i2c:
            held.update({gpio: f"i2c{port}" for gpio in KERNEL_PINS.get(f"i2c{port}", ())})
        for port in {p for p, _ in self.spi}:
            held.update({gpio: f"spi{port}" for gpio in KERNEL_PINS.get(f"spi{port}", ())})
        if self.uart:
            held.update({gpio: "serial0" for gpio in KERNEL_PINS["serial0"]})
        wiring = {"i2c": {str(p): list(addrs) for p, addrs in self.i2c.items()},
                  "spi": {f"{p}.{cs}": dict(w) for (p, cs), w in self.spi.items()},
                  "i2c_hz": self.i2c_hz, "held": {str(g): who for g, who in held.items()},
                  "groups": self.groups, "i2c_held": {str(p): a for p, a in self.i2c_held.items()}}
        with open(os.path.join(self.root, "wiring.json"), "w", encoding="utf-8") as f:
            json.dump(wiring, f)

    # --- a child on the fake Pi -------------------------------------------------------------

    def env(self, base: Mapping[str, str] | None = None, *, pin_factory: str | None = "lgpio",
            project: bool = True) -> dict[str, str]:
        """The environment of a process on this Pi: the fake libraries first on its path.

        Args:
            project: this checkout on the path too; False for a program installed elsewhere (a venv made by the
                .deb), which brings its own ``device`` and ``sim``.
        """
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (LIBS, PROJECT if project else "",
                                                        env.get("PYTHONPATH", "") if project else "") if p)
        env[ROOT_ENV] = self.root
        env.pop("LG_WD", None)
        if pin_factory is None:
            env.pop("GPIOZERO_PIN_FACTORY", None)
        else:
            env["GPIOZERO_PIN_FACTORY"] = pin_factory
        return env

    def start(self, args: Sequence[str], *, cwd: str, env: Mapping[str, str] | None = None,
              module: str = "device", log_path: str | None = None, wrapper: Sequence[str] = (),
              python: str = sys.executable) -> Child:
        """Start ``python -m <module> <args>`` (the production entry point) on this Pi.

        Args:
            wrapper: a command the program runs under (``("strace", "-f", ...)``).
            python: the interpreter (an installed venv's, with :meth:`env` ``project=False``).
        """
        log_path = log_path or os.path.join(self.root, "child.log")
        log = open(log_path, "wb")  # noqa: SIM115 - closed by Child.stop
        proc = subprocess.Popen([*wrapper, python, "-m", module, *args], cwd=cwd, env=dict(env or self.env()),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.child = Child(proc, log, log_path)
        return self.child

    # --- its hardware ----------------------------------------------------------------------------

    def control(self, timeout: float = 20.0) -> ControlClient:
        """The control channel of the running child (waits for it to come up)."""
        if self._client is not None:
            return self._client
        path = os.path.join(self.root, SOCKET)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._client = ControlClient(path)
                return self._client
            except OSError:
                if self.child is not None and self.child.proc.poll() is not None:
                    raise RuntimeError(f"the program exited ({self.child.proc.returncode}):\n"
                                       f"{self.child.log()[-3000:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def drive(self, gpio: int, level: int | None) -> None:
        """The outside world on a line: 0 (to ground), 1, or None (let go)."""
        self.control()("drive", gpio=gpio, level=level)

    def edge(self, gpio: int, level: int) -> None:
        """An edge to ``level`` reported whatever the line's level (a pulse shorter than the kernel saw)."""
        self.control()("edge", gpio=gpio, level=level)

    def wave(self, gpio: int, steps: Sequence[tuple[int | None, float]]) -> None:
        """``(level, microseconds)`` steps on a line, timed in the child."""
        self.control()("wave", gpio=gpio, steps=[list(s) for s in steps])

    def press(self, gpio: int, ms: float = 80.0) -> None:
        """A finger on a button wired from ``gpio`` to ground, for ``ms`` milliseconds."""
        self.wave(gpio, [(0, ms * 1000), (None, 0)])

    def records(self, since: int = 0) -> list[BusRecord]:
        return [BusRecord.from_json(r) for r in self.control()("records", since=since)["records"]]

    def lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = self.control()("lines")["lines"]
        return lines

    def output_edges(self, gpio: int) -> list[tuple[float, int]]:
        """What the program drove on output line ``gpio`` (a buzzer, a LED): ``(monotonic seconds, level)``."""
        edges = self.control()("output_edges")["edges"]
        return [(tick / 1e9, level) for tick, _, g, level in edges if g == gpio]

    def panel(self, model: str, *, bus: str = "i2c", port: int | None = None, target: int | None = None) -> Panel:
        """The panel as the bytes on its bus left it."""
        if port is None:
            port = 1 if bus == "i2c" else 0
        if target is None:
            target = 0x3C if bus == "i2c" else 0
        return decode(model, self.records(), bus=bus, port=port, target=target)

    def close(self, graceful: bool = True) -> None:
        """Stop the child (SIGTERM, or SIGKILL when not ``graceful``) and remove a root made here."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.child is not None:
            self.child.stop(timeout=10.0 if graceful else 0.0)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


class Child:
    """The program running on a fake Pi; its output goes to a log file."""

    def __init__(self, proc: subprocess.Popen[bytes], log_file: IO[bytes], log_path: str) -> None:
        self.proc = proc
        self._log_file = log_file
        self.log_path = log_path

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match[str]:
        """Wait until the log, from character ``after`` on, matches ``pattern``.

        Raises:
            AssertionError: with the log's tail, when the program exited or time ran out.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log(), after)
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"the program exited ({self.proc.returncode}) before "
                                     f"{pattern!r}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, as systemd stops it; SIGKILL if it does not end in ``timeout`` (0: at once)."""
        if self.proc.poll() is None:
            if timeout > 0:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode
