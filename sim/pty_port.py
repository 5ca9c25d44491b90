"""The simulator's console port: a pseudo-terminal a technician opens like a serial port.

picocom, the provisioning command and the tests open the slave's
:attr:`PtyPort.path`; the device's console reads and writes the master side
through the same calls it uses on pyserial's ``Serial``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
import termios
import time
import tty
from types import TracebackType

from device.drivers.serial_port import OutputGate
from device.errors import SerialPortError

logger = logging.getLogger(__name__)


class PtyPort:
    """A pseudo-terminal whose slave end a technician opens like a serial port.

    The device reads and writes the master side. The slave is put in raw mode
    (no echo, no line editing, no newline translation) and kept open here, so
    the master never reports EIO between clients.

    Attributes:
        path: the slave's path (``/dev/pts/N``), for picocom or the provisioning command.
        timeout: seconds ``read`` waits for the first byte.
    """

    def __init__(self, timeout: float = 0.1, baudrate: int = 115200) -> None:
        self.timeout: float | None = timeout
        self._master, self._slave = os.openpty()
        # Raw: without it the line discipline echoes our own output back to us.
        tty.setraw(self._slave, termios.TCSANOW)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._closed = False
        #: Output as a UART at ``baudrate`` would send it; dropped at once when nobody reads.
        self.gate = OutputGate(self.path, baudrate)

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read now."""
        try:
            raw = fcntl.ioctl(self._master, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; waits at most :attr:`timeout` for the first one."""
        if self._closed:
            raise SerialPortError(f"console port {self.path} is closed")
        try:
            ready, _, _ = select.select([self._master], [], [], self.timeout)
            if not ready:
                return b""
            return os.read(self._master, size)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:
                # No client and no slave: nothing to read (cannot happen while
                # we hold the slave, but harmless to treat as silence).
                time.sleep(self.timeout or 0.01)
                return b""
            raise SerialPortError(f"cannot read console port {self.path}: {e.strerror}") from None

    def write(self, data: bytes) -> int:
        """Send ``data`` as a UART would; what nobody takes is dropped at once (see :class:`OutputGate`)."""
        if self._closed:
            raise SerialPortError(f"console port {self.path} is closed")
        try:
            return self.gate.write(self._master, data)
        except OSError as e:
            raise SerialPortError(f"cannot write console port {self.path}: {e.strerror}") from None

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        while self.in_waiting:
            try:
                os.read(self._master, 4096)
            except OSError:
                break

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyPort:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
