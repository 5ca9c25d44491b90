"""The console's port: a real serial device (or a ``socket://`` URL) through pyserial.

Named ``serial_port`` rather than ``serial`` so it never shadows pyserial.
The console uses what every port offers (:class:`ConsolePort`): ``read(n)``
(waits at most ``timeout`` seconds and returns what has arrived, possibly
``b""``), ``write(data)``, ``in_waiting``, ``timeout`` and ``close()``. The
simulator's pty port (``sim.pty_port.PtyPort``) offers the same.
"""

import logging
from typing import Any, Protocol

from device.errors import SerialPortError

logger = logging.getLogger(__name__)

#: How long a write may wait for a reader before the output is dropped: the
#: device must never hang because nobody drains the other end of the cable.
WRITE_TIMEOUT_S = 2.0


class ConsolePort(Protocol):
    """What the console needs of its port (pyserial's ``Serial`` has it)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; waits at most :attr:`timeout` for the first one."""

    def write(self, data: bytes) -> int | None:
        """Write ``data`` (dropping it rather than waiting for ever when nobody reads)."""


def open_serial(port: str, baudrate: int = 115200, timeout: float = 0.1) -> Any:
    """Open ``port`` (a device path or a pyserial URL such as ``socket://``) at 8N1.

    Returns:
        a ``serial.Serial``, whose writes give up after :data:`WRITE_TIMEOUT_S`.

    Raises:
        SerialPortError: naming the port, when it is missing, busy or not allowed.
    """
    import serial  # pyserial; imported here so the module loads without it

    try:
        return serial.serial_for_url(
            port, baudrate=baudrate, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE, timeout=timeout, write_timeout=WRITE_TIMEOUT_S)
    except (serial.SerialException, OSError, ValueError) as e:
        raise SerialPortError(f"cannot open console port {port} at {baudrate} baud: {e}") from None
