"""The fake Pi's ``spidev``: what luma's ``spi`` uses, on the fake kernel's SPI buses.

Opening ``/dev/spidev<port>.<cs>`` fails with ``FileNotFoundError`` when the
fake root lacks the node (SPI not enabled). Each transfer is recorded with
the level of the DC and RST lines wired to the panel, as the panel sees them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from sim.fakepi.kernel import Kernel, kernel

#: spidev's buffer (``/sys/module/spidev/parameters/bufsiz``): larger transfers are refused.
BUFSIZ = 4096


class SpiDev:
    """One SPI device node; :meth:`open` it first.

    Args:
        bus, client: open ``/dev/spidev<bus>.<client>`` now.
        kern: the fake kernel (not in spidev: in-process tests pass their own; default: the process's).
    """

    def __init__(self, bus: int | None = None, client: int | None = None, *, kern: Kernel | None = None) -> None:
        self.kernel = kern or kernel()
        self.max_speed_hz = 500_000
        self.mode = 0
        self.bits_per_word = 8
        self.cshigh = self.lsbfirst = self.threewire = self.loop = self.no_cs = False
        self._where: tuple[int, int] | None = None
        if bus is not None and client is not None:
            self.open(bus, client)

    def open(self, bus: int, device: int) -> None:
        self.kernel.spi_open(bus, device)
        self._where = (bus, device)

    def close(self) -> None:
        self._where = None

    def fileno(self) -> int:
        return -1 if self._where is None else 1000 + self._where[0] * 16 + self._where[1]

    def _send(self, values: Sequence[int] | bytes, speed_hz: int = 0) -> None:
        if self._where is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        data = bytes(values)
        if len(data) > BUFSIZ:
            raise OverflowError(f"Argument list size exceeds {BUFSIZ} bytes.")
        self.kernel.spi_write(self._where[0], self._where[1], data, speed_hz or self.max_speed_hz)

    def writebytes(self, values: Sequence[int]) -> None:
        self._send(values)

    def writebytes2(self, values: Sequence[int] | bytes) -> None:
        data = bytes(values)
        for i in range(0, len(data), BUFSIZ):
            self._send(data[i:i + BUFSIZ])

    def xfer(self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0, bits_per_word: int = 0) -> list[int]:
        self._send(values, speed_hz)
        return [0] * len(values)

    xfer2 = xfer
    xfer3 = xfer

    def readbytes(self, length: int) -> list[int]:
        return [0] * length
