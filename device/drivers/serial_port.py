"""The console's port: a real serial device through pyserial, or a pty for the simulator.

Named ``serial_port`` rather than ``serial`` so it never shadows pyserial.
Both kinds offer what the console uses: ``read(n)`` (waits at most
``timeout`` seconds and returns what has arrived, possibly ``b""``),
``write(data)``, ``in_waiting``, ``timeout`` and ``close()``.
"""

import errno
import fcntl
import logging
import os
import select
import struct
import termios
import time
import tty

from device.errors import EvaluatorError

logger = logging.getLogger(__name__)

#: How long a write may wait for a reader before the output is dropped: the
#: device must never hang because nobody drains the other end of the cable.
WRITE_TIMEOUT_S = 2.0


class SerialPortError(EvaluatorError, OSError):
    """The console port could not be opened or used."""


def open_serial(port, baudrate=115200, timeout=0.1):
    """Open ``port`` (a device path or a pyserial URL such as ``socket://``) at 8N1.

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


class PtyPort:
    """A pseudo-terminal whose slave end a technician opens like a serial port.

    The device reads and writes the master side. The slave is put in raw mode
    (no echo, no line editing, no newline translation) and kept open here, so
    the master never reports EIO between clients.

    Attributes:
        path: the slave's path (``/dev/pts/N``), for picocom or the provisioning command.
        timeout: seconds ``read`` waits for the first byte.
    """

    def __init__(self, timeout=0.1):
        self.timeout = timeout
        self._master, self._slave = os.openpty()
        # Raw: without it the line discipline echoes our own output back to us.
        tty.setraw(self._slave, termios.TCSANOW)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._closed = False

    @property
    def in_waiting(self):
        """Bytes ready to read now."""
        try:
            raw = fcntl.ioctl(self._master, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return struct.unpack("i", raw)[0]

    def read(self, n=1):
        """Up to ``n`` bytes; waits at most :attr:`timeout` for the first one."""
        if self._closed:
            raise SerialPortError(f"console port {self.path} is closed")
        try:
            ready, _, _ = select.select([self._master], [], [], self.timeout)
            if not ready:
                return b""
            return os.read(self._master, n)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:
                # No client and no slave: nothing to read (cannot happen while
                # we hold the slave, but harmless to treat as silence).
                time.sleep(self.timeout or 0.01)
                return b""
            raise SerialPortError(f"cannot read console port {self.path}: {e.strerror}") from None

    def write(self, data):
        """Write everything, or drop the rest if nobody reads for a while."""
        if self._closed:
            raise SerialPortError(f"console port {self.path} is closed")
        view = memoryview(bytes(data))
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while view:
            try:
                view = view[os.write(self._master, view):]
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                raise SerialPortError(f"cannot write console port {self.path}: {e.strerror}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("console output dropped: nobody reads %s", self.path)
                break
            select.select([], [self._master], [], min(left, 0.1))
        return len(data)

    def flush(self):
        pass

    def reset_input_buffer(self):
        while self.in_waiting:
            try:
                os.read(self._master, 4096)
            except OSError:
                break

    def close(self):
        if self._closed:
            return
        self._closed = True
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
