"""What the Linux kernel of the fake Pi holds: GPIO lines, notification pipes, I²C and SPI buses.

The fake libraries in ``sim/fakepi/libs`` call this module where the real
ones call into C and the kernel. Calls return lgpio's status codes (a
negative number is an error) so the fake ``lgpio`` turns them into
``lgpio.error`` exactly where the real one does; the bus calls raise the
``OSError`` the kernel's ioctl would.

The fake root (``$FAKEPI_ROOT``, laid out by :class:`sim.fakepi.pi.FakePi`)
holds the ``/dev`` nodes that exist (``dev/gpiochip0``, ``dev/i2c-1``,
``dev/spidev0.0``: a node that is missing is a bus that is not enabled),
the device tree, and ``wiring.json``: which I²C addresses answer, and which
GPIO lines are wired to an SPI panel's DC and RST.

As strict as the real kernel where the program could go wrong on a Pi:

- a line the kernel's SPI, I²C or UART driver holds (its bus turned on in
  the fake root) is ``GPIO busy``, and so is a line another process on the
  same fake root holds (claims are shared through ``run/gpio-claims.json``
  under a lock; a dead process's claims are gone, as the kernel frees them);
- a device node whose group the program's user lacks (``wiring.json``'s
  ``groups``) cannot be opened: ``can not open gpiochip``, or
  ``PermissionError`` for ``/dev/i2c-*`` and ``/dev/spidev*``;
- an I²C address a kernel driver owns is ``EBUSY`` to a call that selects the
  address (``I2C_SLAVE``), as smbus2 does without ``force``;
- a bus write takes the time its clock implies (I²C: 9 bit-times a byte, the
  address byte included, at the device tree's ``clock-frequency``; SPI at the
  transfer's speed), and each record keeps when it started and ended;
- ``gpio_read`` of a line nobody holds claims it as an input, as lgpio does;
- two edges of the same level in a row reach the listener when the world
  makes them (:meth:`Kernel.edge`: a pulse shorter than the line's sampling).

Not modelled: lgpio's debounce and watchdog (stored, not applied), active-low
lines, PWM and waves, reads from a bus.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: The environment variable naming the fake root in a child process.
ROOT_ENV = "FAKEPI_ROOT"

# lgpio's line flags and edges (lgpio.h).
SET_ACTIVE_LOW, SET_OPEN_DRAIN, SET_OPEN_SOURCE = 4, 8, 16
SET_PULL_UP, SET_PULL_DOWN, SET_PULL_NONE = 32, 64, 128
RISING_EDGE, FALLING_EDGE, BOTH_EDGES = 1, 2, 3
LINE_FLAGS = SET_ACTIVE_LOW | SET_OPEN_DRAIN | SET_OPEN_SOURCE | SET_PULL_UP | SET_PULL_DOWN | SET_PULL_NONE

# lgpio's status codes used here, and their texts (lgErr.c).
BAD_PATHNAME, BAD_HANDLE, BAD_GPIO_NUMBER = -3, -5, -73
CANNOT_OPEN_CHIP, GPIO_BUSY, GPIO_NOT_ALLOCATED = -78, -79, -80
ERROR_TEXT = {
    BAD_PATHNAME: "bad pathname",
    BAD_HANDLE: "unknown handle",
    BAD_GPIO_NUMBER: "GPIO not 0-53",
    CANNOT_OPEN_CHIP: "can not open gpiochip",
    GPIO_BUSY: "GPIO busy",
    GPIO_NOT_ALLOCATED: "GPIO not allocated",
}

#: Lines on the Pi's gpiochip0.
CHIP_LINES = 54
#: The lines each bus's kernel driver takes once the bus is on (by device-tree alias).
KERNEL_PINS: dict[str, tuple[int, ...]] = {
    "i2c0": (0, 1), "i2c1": (2, 3), "spi0": (7, 8, 9, 10, 11), "spi1": (16, 17, 18, 19, 20, 21),
    "serial0": (14, 15),
}
#: The group that may open each kind of device node (udev's rules on Raspberry Pi OS).
NODE_GROUPS = {"gpiochip": "gpio", "i2c-": "i2c", "spidev": "spi"}
#: Where the processes on one fake root share their line claims.
CLAIMS = os.path.join("run", "gpio-claims.json")
#: The I²C clock when the device tree does not say (Raspberry Pi OS's default).
I2C_DEFAULT_HZ = 100_000
#: One notification in lgpio's pipe: tick (ns), chip, gpio, level, flags, padding.
NOTIFICATION = struct.Struct("QBBBBI")


@dataclass
class Line:
    """One GPIO line: who holds it, how, and what the outside world does to it."""

    chip: int
    gpio: int
    owner: int | None = None
    output: bool = False
    value: int = 0
    flags: int = 0
    edges: int = 0
    notify: int | None = None
    debounce_us: int = 0
    #: The outside world: 0 (a closed contact to ground), 1, or None (nothing drives it).
    drive: int | None = None

    def level(self) -> int:
        if self.output:
            return self.value
        if self.drive is not None:
            return self.drive
        if self.flags & SET_PULL_UP:
            return 1
        if self.flags & SET_PULL_DOWN:
            return 0
        return 1 if self.gpio <= 8 else 0   # the pulls a BCM283x has at reset

    def mode(self, handle: int) -> int:
        """``gpio_get_mode``'s bits; the lgpio ones only for the handle that holds the line."""
        bits = self.flags & LINE_FLAGS
        mine = self.owner == handle
        if self.owner is not None:
            bits |= 1
        if self.output:
            bits |= 2 | (512 if mine else 0)
        else:
            bits |= 65536 | (256 if mine else 0)
        if self.edges:
            bits |= (1024 if mine else 0) | (self.edges & RISING_EDGE) << 17 | (self.edges & FALLING_EDGE) << 17
        return bits


@dataclass(frozen=True)
class BusRecord:
    """Bytes written in one bus transaction.

    Attributes:
        seq: its place in the record, from 0.
        bus: ``"i2c"`` or ``"spi"``.
        port: the bus number (``/dev/i2c-<port>``, ``/dev/spidev<port>.<target>``).
        target: the I²C address, or the SPI chip select.
        data: the bytes (on I²C, the control byte first).
        dc: on SPI, the level of the panel's DC line during the transfer (1: data).
        rst: on SPI, the level of its RST line (0: held in reset).
    """

    seq: int
    bus: str
    port: int
    target: int
    data: bytes
    dc: int | None = None
    rst: int | None = None
    #: ``time.monotonic_ns()`` when the transaction started and when its last bit was on the wire.
    start_ns: int = 0
    end_ns: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "bus": self.bus, "port": self.port, "target": self.target,
                "data": self.data.hex(), "dc": self.dc, "rst": self.rst, "start_ns": self.start_ns,
                "end_ns": self.end_ns}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BusRecord:
        return cls(d["seq"], d["bus"], d["port"], d["target"], bytes.fromhex(d["data"]), d.get("dc"), d.get("rst"),
                   d.get("start_ns", 0), d.get("end_ns", 0))


class Kernel:
    """The fake Pi's kernel state, shared by the fake libraries of one process.

    Args:
        root: the fake root folder.
        wiring: what is connected (default: the root's ``wiring.json``).
    """

    def __init__(self, root: str | os.PathLike[str], wiring: Mapping[str, Any] | None = None) -> None:
        self.root = os.fspath(root)
        self.wiring = dict(wiring) if wiring is not None else _read_json(os.path.join(self.root, "wiring.json"))
        self._lock = threading.RLock()
        self._lines: dict[tuple[int, int], Line] = {}
        self._chips: dict[int, int] = {}          # chip handle -> chip number
        self._pipes: dict[int, int] = {}          # notification handle -> fd of the pipe
        self._next_handle = 0
        self._workdir: str | None = None
        self._records: list[BusRecord] = []
        #: Notifications lost because the pipe was full (lgpio drops them too).
        self.dropped = 0
        #: Lines the kernel's drivers hold: ``{gpio: driver}``.
        self.held = {int(g): str(who) for g, who in self.wiring.get("held", {}).items()}
        #: The groups of this process's user; None: every group.
        groups = self.wiring.get("groups")
        self.groups = None if groups is None else set(groups)
        self.i2c_hz = int(self.wiring.get("i2c_hz", I2C_DEFAULT_HZ))
        #: Level changes of lines the program drives as outputs: ``(tick ns, chip, gpio, level)`` (a buzzer, a LED).
        self._output_edges: list[tuple[int, int, int, int]] = []

    # --- device nodes -------------------------------------------------------------------

    def node(self, path: str) -> str:
        """Where the fake root keeps a device node such as ``/dev/i2c-1``."""
        return os.path.join(self.root, path.lstrip("/"))

    def has_node(self, path: str) -> bool:
        return os.path.exists(self.node(path))

    def may_open(self, path: str) -> bool:
        """Whether this process's user is in the group the node needs (root's group list is whatever it is)."""
        name = os.path.basename(path)
        for prefix, group in NODE_GROUPS.items():
            if name.startswith(prefix):
                return self.groups is None or group in self.groups
        return True

    # --- claims shared by every process on this fake root ------------------------------------

    def _shared(self, change: Any = None) -> dict[str, int]:
        """The claims of every process (``{"chip:gpio": pid}``), dead processes' dropped; ``change`` edits them."""
        path = os.path.join(self.root, CLAIMS)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path, encoding="utf-8") as f:
                    claims = {k: int(v) for k, v in json.load(f).items()}
            except (OSError, ValueError):
                claims = {}
            alive = {k: pid for k, pid in claims.items() if _alive(pid)}
            if change is not None:
                change(alive)
            if alive != claims or change is not None:
                tmp = f"{path}.{os.getpid()}"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(alive, f)
                os.replace(tmp, path)
            return alive

    def _held_elsewhere(self, chip: int, gpio: int) -> bool:
        pid = self._shared().get(f"{chip}:{gpio}")
        return pid is not None and pid != os.getpid()

    def _share_claim(self, chip: int, gpio: int, mine: bool) -> None:
        key = f"{chip}:{gpio}"

        def change(claims: dict[str, int]) -> None:
            if mine:
                claims[key] = os.getpid()
            elif claims.get(key) == os.getpid():
                del claims[key]
        self._shared(change)

    # --- lgpio's work directory and notification pipes ---------------------------------

    def work_dir(self) -> str:
        """lgpio's working directory: ``$LG_WD`` or the launch directory, then ``chdir`` there (lgUtil.c)."""
        with self._lock:
            if self._workdir is None:
                try:
                    launch = os.getcwd()
                except OSError:
                    launch = "/tmp"
                wanted = os.environ.get("LG_WD")
                self._workdir = launch if not wanted else wanted if wanted.startswith("/") else \
                    os.path.join(launch, wanted)
                try:
                    os.chdir(self._workdir)
                except OSError as e:
                    logger.warning("lgpio: can't set working directory (%s)", e.strerror)
            return self._workdir

    @property
    def chosen_work_dir(self) -> str | None:
        """The working directory lgpio chose, or None before it asked (no ``chdir`` as a side effect)."""
        with self._lock:
            return self._workdir

    def notify_open(self) -> int:
        """A notification pipe ``.lgd-nfy<handle>`` in the working directory, as lgNotifyOpen makes it."""
        with self._lock:
            handle = self._new_handle()
            name = os.path.join(self.work_dir(), f".lgd-nfy{handle}")
            try:
                os.unlink(name)
            except OSError:
                pass
            try:
                os.mkfifo(name, 0o664)
            except OSError as e:
                logger.warning("lgpio: can't make %s: %s", name, e.strerror)
            try:
                fd = os.open(name, os.O_RDWR | os.O_NONBLOCK)
            except OSError:
                return BAD_PATHNAME
            self._pipes[handle] = fd
            return handle

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    # --- gpiochip ---------------------------------------------------------------------------

    def gpiochip_open(self, chip: int) -> int:
        if not self.has_node(f"/dev/gpiochip{chip}") or not self.may_open(f"/dev/gpiochip{chip}"):
            return CANNOT_OPEN_CHIP
        with self._lock:
            handle = self._new_handle()
            self._chips[handle] = chip
            return handle

    def gpiochip_close(self, handle: int) -> int:
        with self._lock:
            if handle not in self._chips:
                return BAD_HANDLE
            for line in self._lines.values():
                if line.owner == handle:
                    self._change(line, owner=None, output=False, edges=0, notify=None)
                    self._share_claim(line.chip, line.gpio, mine=False)
            del self._chips[handle]
            return 0

    def _line(self, handle: int, gpio: int) -> Line | int:
        if handle not in self._chips:
            return BAD_HANDLE
        if not 0 <= gpio < CHIP_LINES:
            return BAD_GPIO_NUMBER
        chip = self._chips[handle]
        return self._lines.setdefault((chip, gpio), Line(chip, gpio))

    def _claimable(self, handle: int, gpio: int) -> Line | int:
        line = self._line(handle, gpio)
        if isinstance(line, Line):
            if line.owner not in (None, handle):
                return GPIO_BUSY
            if line.chip == 0 and gpio in self.held:
                return GPIO_BUSY                       # the kernel's SPI, I²C or UART driver has it
            if line.owner is None and self._held_elsewhere(line.chip, gpio):
                return GPIO_BUSY                       # another process has it
        return line

    def _claimed(self, line: Line) -> None:
        self._share_claim(line.chip, line.gpio, mine=True)

    def claim_input(self, handle: int, gpio: int, flags: int) -> int:
        with self._lock:
            line = self._claimable(handle, gpio)
            if isinstance(line, int):
                return line
            self._change(line, owner=handle, output=False, flags=flags & LINE_FLAGS, edges=0, notify=None)
            self._claimed(line)
            return 0

    def claim_output(self, handle: int, gpio: int, level: int, flags: int) -> int:
        with self._lock:
            line = self._claimable(handle, gpio)
            if isinstance(line, int):
                return line
            self._change(line, owner=handle, output=True, value=1 if level else 0, flags=flags & LINE_FLAGS,
                         edges=0, notify=None)
            self._claimed(line)
            return 0

    def claim_alert(self, handle: int, gpio: int, edges: int, flags: int, notify: int) -> int:
        with self._lock:
            line = self._claimable(handle, gpio)
            if isinstance(line, int):
                return line
            if notify not in self._pipes:
                return BAD_HANDLE
            self._change(line, owner=handle, output=False, flags=flags & LINE_FLAGS, edges=edges & BOTH_EDGES,
                         notify=notify)
            self._claimed(line)
            return 0

    def free(self, handle: int, gpio: int) -> int:
        with self._lock:
            line = self._line(handle, gpio)
            if isinstance(line, int):
                return line
            if line.owner != handle:
                return GPIO_NOT_ALLOCATED
            self._change(line, owner=None, output=False, edges=0, notify=None)
            self._share_claim(line.chip, line.gpio, mine=False)
            return 0

    def get_mode(self, handle: int, gpio: int) -> int:
        with self._lock:
            line = self._line(handle, gpio)
            return line if isinstance(line, int) else line.mode(handle)

    def read(self, handle: int, gpio: int) -> int:
        """A line's level; a line nobody holds is claimed as an input first (lgpio's lgGpioRead does)."""
        with self._lock:
            line = self._line(handle, gpio)
            if isinstance(line, int):
                return line
            if line.owner != handle:
                status = self.claim_input(handle, gpio, line.flags)
                if status < 0:
                    return status
            return line.level()

    def write(self, handle: int, gpio: int, level: int) -> int:
        with self._lock:
            line = self._line(handle, gpio)
            if isinstance(line, int):
                return line
            if line.owner != handle or not line.output:
                return GPIO_NOT_ALLOCATED
            self._change(line, value=1 if level else 0)
            return 0

    def set_debounce(self, handle: int, gpio: int, micros: int) -> int:
        with self._lock:
            line = self._line(handle, gpio)
            if isinstance(line, int):
                return line
            line.debounce_us = micros
            return 0

    # --- the outside world -------------------------------------------------------------------

    def drive(self, gpio: int, level: int | None, chip: int = 0, tick: int | None = None) -> None:
        """What is wired to a line does something: 0 (a contact to ground), 1, or None (lets go).

        Args:
            tick: when it happened (``time.monotonic_ns()``; default: now), as the edge's timestamp.
        """
        with self._lock:
            line = self._lines.setdefault((chip, gpio), Line(chip, gpio))
            self._change(line, tick, drive=level)

    def wave(self, gpio: int, steps: list[tuple[int | None, float]], chip: int = 0) -> None:
        """Drive a line through ``(level, microseconds)`` steps.

        Each edge carries the time it was due as its timestamp, as the kernel
        stamps an edge when it happens, however late a busy interpreter gets
        to it: a 200 us spike is 200 us to whoever reads the timestamps. No
        step happens before its time.
        """
        due = time.monotonic_ns()
        for level, micros in steps:
            _wait_until(due)
            self.drive(gpio, level, chip, tick=due)
            due += int(micros * 1000)
        _wait_until(due)

    def edge(self, gpio: int, level: int, chip: int = 0, tick: int | None = None) -> None:
        """An edge to ``level`` reported whatever the line's level: a pulse too short for the line to show.

        Two falling edges in a row reach the listener this way, as they do on a
        Pi when a bounce is shorter than the kernel's sampling of the line.
        """
        with self._lock:
            line = self._lines.setdefault((chip, gpio), Line(chip, gpio))
            self._notify(line, level, tick)

    def level(self, gpio: int, chip: int = 0) -> int:
        with self._lock:
            return self._lines.setdefault((chip, gpio), Line(chip, gpio)).level()

    def output_edges(self, since: int = 0) -> list[tuple[int, int, int, int]]:
        """Level changes of output lines, from the ``since``-th on: ``(tick ns, chip, gpio, level)``."""
        with self._lock:
            return self._output_edges[since:]

    def lines(self) -> list[dict[str, Any]]:
        """Every line anyone touched: who holds it, how, its level."""
        with self._lock:
            return [{"chip": ln.chip, "gpio": ln.gpio, "owner": ln.owner, "output": ln.output,
                     "flags": ln.flags, "edges": ln.edges, "drive": ln.drive, "level": ln.level()}
                    for ln in sorted(self._lines.values(), key=lambda ln: (ln.chip, ln.gpio))]

    def _change(self, line: Line, tick: int | None = None, **fields: Any) -> None:
        """Under the lock: change a line, and tell its listener if its level moved."""
        before = line.level()
        for name, value in fields.items():
            setattr(line, name, value)
        after = line.level()
        if after != before and line.output and len(self._output_edges) < 100_000:
            self._output_edges.append((tick or time.monotonic_ns(), line.chip, line.gpio, after))
        if after != before:
            self._notify(line, after, tick)

    def _notify(self, line: Line, level: int, tick: int | None) -> None:
        """Under the lock: an edge to ``level`` into the line's notification pipe, if it listens for it."""
        if line.edges & (RISING_EDGE if level else FALLING_EDGE):
            fd = self._pipes.get(line.notify) if line.notify is not None else None
            if fd is not None:
                try:
                    os.write(fd, NOTIFICATION.pack(tick or time.monotonic_ns(), line.chip, line.gpio, level, 0, 0))
                except BlockingIOError:
                    self.dropped += 1

    # --- buses --------------------------------------------------------------------------------

    def i2c_open(self, port: int) -> None:
        """Raises what ``open("/dev/i2c-<port>")`` would: FileNotFoundError (I²C not on), PermissionError."""
        path = f"/dev/i2c-{port}"
        if not self.has_node(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not self.may_open(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    def i2c_select(self, port: int, address: int) -> None:
        """``ioctl(I2C_SLAVE)``: ``OSError(EBUSY)`` when a kernel driver owns the address."""
        if address in self.wiring.get("i2c_held", {}).get(str(port), ()):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    def i2c_write(self, port: int, address: int, data: bytes) -> None:
        """One write transaction, taking its time on the wire; ``OSError(EREMOTEIO)`` when nothing answers."""
        start = time.monotonic_ns()
        bits = 9 * (len(data) + 1) + 2                # each byte and the address byte with its ack; start, stop
        end = start + bits * 1_000_000_000 // self.i2c_hz
        if address not in self.wiring.get("i2c", {}).get(str(port), ()):
            _wait_until(start + 11 * 1_000_000_000 // self.i2c_hz)   # the address byte goes out unanswered
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
        _wait_until(end)
        self._record("i2c", port, address, bytes(data), start_ns=start, end_ns=time.monotonic_ns())

    def i2c_answers(self, port: int, address: int) -> bool:
        return address in self.wiring.get("i2c", {}).get(str(port), ())

    def spi_open(self, port: int, cs: int) -> None:
        path = f"/dev/spidev{port}.{cs}"
        if not self.has_node(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not self.may_open(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    def spi_write(self, port: int, cs: int, data: bytes, speed_hz: int = 0) -> None:
        """One transfer at ``speed_hz``; the panel wired there sees the DC and RST lines as they are now."""
        wired = self.wiring.get("spi", {}).get(f"{port}.{cs}", {})
        dc = self.level(wired["dc"]) if "dc" in wired else None
        rst = self.level(wired["rst"]) if "rst" in wired else None
        start = time.monotonic_ns()
        if speed_hz > 0:
            _wait_until(start + 8 * len(data) * 1_000_000_000 // speed_hz)
        self._record("spi", port, cs, bytes(data), dc, rst, start_ns=start, end_ns=time.monotonic_ns())

    def _record(self, bus: str, port: int, target: int, data: bytes, dc: int | None = None,
                rst: int | None = None, *, start_ns: int = 0, end_ns: int = 0) -> None:
        with self._lock:
            self._records.append(BusRecord(len(self._records), bus, port, target, data, dc, rst, start_ns, end_ns))

    def records(self, since: int = 0) -> list[BusRecord]:
        """What was written to the buses, from record ``since`` on."""
        with self._lock:
            return self._records[since:]


def _wait_until(due_ns: int) -> None:
    """Sleep for the bulk, then yield until ``due_ns`` (yielding, so the rest of the program runs meanwhile)."""
    left = due_ns - time.monotonic_ns()
    if left > 2_000_000:
        time.sleep((left - 1_000_000) / 1e9)
    while time.monotonic_ns() < due_ns:
        time.sleep(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


_kernel: Kernel | None = None
_kernel_lock = threading.Lock()


def kernel() -> Kernel:
    """This process's kernel, on the root named by ``$FAKEPI_ROOT``.

    Raises:
        RuntimeError: no fake root (the fake libraries were imported outside a fake Pi).
    """
    global _kernel
    with _kernel_lock:
        if _kernel is None:
            root = os.environ.get(ROOT_ENV)
            if not root:
                raise RuntimeError(f"the fake Pi's libraries need {ROOT_ENV} (see sim.fakepi.pi.FakePi)")
            _kernel = Kernel(root)
        return _kernel
