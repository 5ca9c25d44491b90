"""The fake Pi's ``smbus2``: what luma's ``i2c`` uses (``SMBus``, ``i2c_msg``), on the fake kernel's I²C buses.

Opening a bus whose ``/dev/i2c-<n>`` node the fake root lacks raises
``FileNotFoundError`` (I²C not enabled), without the ``i2c`` group
``PermissionError``; a write to an address where nothing answers raises
``OSError(EREMOTEIO)``, as the kernel's ioctl does; the calls that select the
address first (``I2C_SLAVE``, not ``i2c_rdwr``) raise ``OSError(EBUSY)`` where
a kernel driver owns it, unless ``force``. Writes take their time on the wire.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from types import TracebackType

from sim.fakepi.kernel import Kernel, kernel

I2C_SMBUS_BLOCK_MAX = 32


class i2c_msg:
    """One message of an ``i2c_rdwr`` transaction."""

    def __init__(self, addr: int, flags: int, buf: bytes) -> None:
        self.addr, self.flags, self.buf = addr, flags, bytes(buf)
        self.len = len(self.buf)

    @staticmethod
    def write(address: int, buf: Sequence[int] | bytes | str) -> i2c_msg:
        data = buf.encode("latin-1") if isinstance(buf, str) else bytes(buf)
        return i2c_msg(address, 0, data)

    @staticmethod
    def read(address: int, length: int) -> i2c_msg:
        return i2c_msg(address, 1, bytes(length))

    def __iter__(self) -> Iterator[int]:
        return iter(self.buf)

    def __len__(self) -> int:
        return self.len

    def __bytes__(self) -> bytes:
        return self.buf


class SMBus:
    """``/dev/i2c-<bus>`` of the fake Pi.

    Args:
        bus: the bus number (or ``"/dev/i2c-<n>"``); None: open later with :meth:`open`.
        force: accepted, as smbus2 does.
        kern: the fake kernel (not in smbus2: in-process tests pass their own; default: the process's).
    """

    def __init__(self, bus: int | str | None = None, force: bool = False, *, kern: Kernel | None = None) -> None:
        self.kernel = kern or kernel()
        self.fd: int | None = None
        self.port: int | None = None
        self.force = force
        if bus is not None:
            self.open(bus)

    def __enter__(self) -> SMBus:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self, bus: int | str) -> None:
        port = int(str(bus).rsplit("-", 1)[-1])
        self.kernel.i2c_open(port)
        self.port, self.fd = port, port

    def close(self) -> None:
        self.fd = self.port = None

    def _bus(self) -> int:
        if self.port is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return self.port

    def _write(self, address: int, data: bytes) -> None:
        self.kernel.i2c_write(self._bus(), address, data)

    def _set_address(self, address: int, force: bool | None = None) -> None:
        """``ioctl(I2C_SLAVE)`` (``I2C_SLAVE_FORCE`` with ``force``): EBUSY where a kernel driver owns the address."""
        if not (self.force if force is None else force):
            self.kernel.i2c_select(self._bus(), address)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        if len(data) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._set_address(i2c_addr, force)
        self._write(i2c_addr, bytes([register, *data]))

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._write(i2c_addr, bytes([register, value]))

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._write(i2c_addr, bytes([value]))

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        self._set_address(i2c_addr, force)
        self._write(i2c_addr, b"")

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        """What ``i2cdetect`` does: 0 from a device that answers, ``OSError`` where none does."""
        self._set_address(i2c_addr, force)
        if not self.kernel.i2c_answers(self._bus(), i2c_addr):
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
        return 0

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        for msg in i2c_msgs:
            if msg.flags & 1:
                if not self.kernel.i2c_answers(self._bus(), msg.addr):
                    raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
            else:
                self._write(msg.addr, msg.buf)
