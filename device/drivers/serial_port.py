"""The console's port: a real serial device (or a ``socket://`` URL) through pyserial.

Named ``serial_port`` rather than ``serial`` so it never shadows pyserial.
The console uses what every port offers (:class:`ConsolePort`): ``read(n)``
(waits at most ``timeout`` seconds and returns what has arrived, possibly
``b""``), ``write(data)``, ``in_waiting``, ``timeout`` and ``close()``. The
simulator's pty port (``sim.pty_port.PtyPort``) offers the same.

Output goes out as a UART would send it (:class:`OutputGate`): as fast as
the other end takes it, and dropped at once when nobody reads, so a client
that never reads can never stall the console.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any, Protocol

import serial

from device.errors import SerialPortError

logger = logging.getLogger(__name__)

#: Dropped output is logged as one summary line this often at most.
DROP_LOG_S = 60.0


class ConsolePort(Protocol):
    """What the console needs of its port (pyserial's ``Serial`` has it)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; waits at most :attr:`timeout` for the first one."""

    def write(self, data: bytes) -> int | None:
        """Write ``data`` (dropping it rather than waiting when nobody reads)."""


class OutputGate:
    """Writes to a non-blocking descriptor the way a UART sends: never waiting on a reader who is not there.

    While the other end takes bytes, a write waits for room as long as a
    UART at ``baudrate`` would need to send them. When no byte is taken
    within the time of one slice, the rest is dropped, and every later write
    finding the buffer still full is dropped at once, without waiting. What
    was dropped is counted and logged as one summary line per
    :data:`DROP_LOG_S` at most.

    Args:
        name: the port's name, for the log.
        baudrate: the line's speed in bits per second (8N1: ten bits a byte).
        clock: monotonic seconds (injectable).
    """

    #: Bytes per wait: how much room a reader must make for the next wait to start.
    SLICE = 256

    def __init__(self, name: str, baudrate: int = 115200, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.byte_s = 10.0 / max(1, baudrate)
        self.clock = clock
        #: Bytes dropped since start.
        self.dropped = 0
        self._stalled = False
        self._unlogged = 0
        self._logged_at = float("-inf")

    def write(self, fd: int, data: bytes) -> int:
        """Send ``data`` on ``fd`` (non-blocking), dropping what nobody takes; returns ``len(data)``.

        Raises:
            OSError: the descriptor failed (not merely full).
        """
        view = memoryview(bytes(data))
        while view:
            try:
                view = view[os.write(fd, view):]
                self._stalled = False
                continue
            except (BlockingIOError, InterruptedError):
                pass
            if self._stalled:
                break  # nobody has read since the last drop: drop at once
            wait = max(0.005, min(len(view), self.SLICE) * self.byte_s)
            _, ready, _ = select.select([], [fd], [], wait)
            if not ready:
                self._stalled = True
                break
        if view:
            self._drop(len(view))
        return len(data)

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._unlogged += n
        now = self.clock()
        if now - self._logged_at >= DROP_LOG_S:
            logger.warning("console output dropped: %d bytes, nobody reads %s", self._unlogged, self.name)
            self._unlogged = 0
            self._logged_at = now


class SerialConsolePort:
    """pyserial's port with writes through an :class:`OutputGate` (everything else as pyserial has it)."""

    def __init__(self, serial_port: Any, baudrate: int) -> None:
        self.serial = serial_port
        self.port = getattr(serial_port, "port", None) or getattr(serial_port, "name", "?")
        self.gate = OutputGate(str(self.port), baudrate)
        try:
            os.set_blocking(serial_port.fileno(), False)
        except Exception:  # no descriptor (a URL handler): pyserial's write with its short timeout
            pass

    @property
    def timeout(self) -> float | None:
        timeout: float | None = self.serial.timeout
        return timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.serial.timeout = value

    @property
    def in_waiting(self) -> int:
        return int(self.serial.in_waiting)

    def read(self, size: int = 1) -> bytes:
        return bytes(self.serial.read(size))

    def write(self, data: bytes) -> int:
        try:
            fd = self.serial.fileno()
        except Exception:  # a URL handler without a descriptor: pyserial's own write, with its short timeout
            try:
                return int(self.serial.write(data) or 0)
            except serial.SerialTimeoutException:
                self.gate._drop(len(data))
                return len(data)
        return self.gate.write(fd, data)

    def close(self) -> None:
        self.serial.close()

    def open(self) -> None:
        self.serial.open()

    def __getattr__(self, name: str) -> Any:
        # Everything else (reset_input_buffer, flush, ...) as pyserial has it.
        return getattr(self.serial, name)


def open_serial(port: str, baudrate: int = 115200, timeout: float = 0.1) -> SerialConsolePort:
    """Open ``port`` (a device path or a pyserial URL such as ``socket://``) at 8N1.

    Returns:
        the port, whose writes never wait on a reader who is not there.

    Raises:
        SerialPortError: naming the port, when it is missing, busy or not allowed.
    """
    try:
        handle = serial.serial_for_url(
            port, baudrate=baudrate, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE, timeout=timeout,
            # Only for URL handlers without a descriptor; the rest writes through the gate.
            write_timeout=0.05)
    except (serial.SerialException, OSError, ValueError) as e:
        raise SerialPortError(f"cannot open console port {port} at {baudrate} baud: {e}") from None
    return SerialConsolePort(handle, baudrate)
