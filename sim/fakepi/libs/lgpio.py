"""The fake Pi's ``lgpio``: the calls gpiozero's ``LGPIOFactory`` (and rpi-lgpio) make, on the fake kernel.

Shaped as lgpio 0.2's Python module (``lgpio_extra.py``): handles carry the
chip number in their upper bits, a negative status raises :class:`error`
with lgpio's text, and at import a notification thread opens its pipe
``.lgd-nfy<N>`` in lgpio's working directory (``$LG_WD``, else the current
one, which lgpio then ``chdir``\\ s into). As with the real module, an
import in a directory where no pipe can be made fails with
``FileNotFoundError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sim.fakepi.kernel import CHIP_LINES, ERROR_TEXT, NOTIFICATION, kernel

LGPIO_PY_VERSION = 0x00020200
exceptions = True

OFF = LOW = CLEAR = 0
ON = HIGH = SET = 1
TIMEOUT = 2

SET_ACTIVE_LOW = 4
SET_OPEN_DRAIN = 8
SET_OPEN_SOURCE = 16
SET_PULL_UP = 32
SET_PULL_DOWN = 64
SET_PULL_NONE = 128
# The names before lgpio 0.2.0.0, which gpiozero still knows.
SET_BIAS_PULL_UP, SET_BIAS_PULL_DOWN, SET_BIAS_DISABLE = SET_PULL_UP, SET_PULL_DOWN, SET_PULL_NONE

RISING_EDGE = 1
FALLING_EDGE = 2
BOTH_EDGES = 3

TX_PWM = 0
TX_WAVE = 1

# lgpio's error codes (lgpio.py exports them under these names).
BAD_PATHNAME, BAD_HANDLE, BAD_GPIO_NUMBER = -3, -5, -73
CANNOT_OPEN_CHIP, GPIO_BUSY, GPIO_NOT_ALLOCATED = -78, -79, -80


class error(Exception):
    """lgpio module exception."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


def error_text(errnum: int) -> str:
    return ERROR_TEXT.get(errnum, f"unknown error ({errnum})")


def get_module_version() -> str:
    return "lgpio.py_0.2.2.0 (fake Pi)"


def _u2i(status: int) -> int:
    if status < 0 and exceptions:
        raise error(error_text(status))
    return status


class _CallbackADT:
    def __init__(self, chip: int, gpio: int, edge: int, func: Callable[[int, int, int, int], None]) -> None:
        self.chip, self.gpio, self.edge, self.func = chip, gpio, edge, func


class _CallbackThread(threading.Thread):
    """Reads the notification pipe and calls back, as lgpio's own thread does."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="lgpio-notify")
        self._notify = kernel().notify_open()
        # Relative, as in lgpio: the pipe is in the working directory lgpio chdir()ed into.
        self._file = open(f".lgd-nfy{self._notify}", "rb")  # noqa: SIM115 - kept open for the thread's life
        self.callbacks: list[_CallbackADT] = []
        self.go = True
        self.start()

    def append(self, callb: _CallbackADT) -> None:
        self.callbacks.append(callb)

    def remove(self, callb: _CallbackADT) -> None:
        if callb in self.callbacks:
            self.callbacks.remove(callb)

    def run(self) -> None:
        buf = b""
        while self.go:
            buf += self._file.read(NOTIFICATION.size)
            while len(buf) >= NOTIFICATION.size:
                tick, chip, gpio, level, flags, _ = NOTIFICATION.unpack(buf[:NOTIFICATION.size])
                buf = buf[NOTIFICATION.size:]
                if flags == 0:
                    for cb in list(self.callbacks):
                        if cb.chip == chip and cb.gpio == gpio:
                            cb.func(chip, gpio, level, tick)


_notify_thread = _CallbackThread()


class _callback:
    def __init__(self, chip: int, gpio: int, edge: int = RISING_EDGE,
                 func: Callable[[int, int, int, int], None] | None = None) -> None:
        self.count = 0
        self.callb = _CallbackADT(chip, gpio, edge, func or self._tally)
        _notify_thread.append(self.callb)

    def cancel(self) -> None:
        _notify_thread.remove(self.callb)

    def _tally(self, chip: int, gpio: int, level: int, tick: int) -> None:
        self.count += 1

    def tally(self) -> int:
        return self.count

    def reset_tally(self) -> None:
        self.count = 0


def gpiochip_open(gpiochip: int) -> int:
    handle = kernel().gpiochip_open(gpiochip)
    if handle >= 0:
        handle |= gpiochip << 16
    return _u2i(handle)


def gpiochip_close(handle: int) -> int:
    return _u2i(kernel().gpiochip_close(handle & 0xFFFF))


def gpio_get_chip_info(handle: int) -> tuple[int, int, str, str]:
    """``(status, lines, name, label)`` of the chip, as lgpio's ``gpio_get_chip_info``."""
    return 0, CHIP_LINES, f"gpiochip{handle >> 16}", "pinctrl-bcm2835"


def gpio_get_mode(handle: int, gpio: int) -> int:
    return _u2i(kernel().get_mode(handle & 0xFFFF, gpio))


def gpio_claim_input(handle: int, gpio: int, lFlags: int = 0) -> int:
    return _u2i(kernel().claim_input(handle & 0xFFFF, gpio, lFlags))


def gpio_claim_output(handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> int:
    return _u2i(kernel().claim_output(handle & 0xFFFF, gpio, level, lFlags))


def gpio_free(handle: int, gpio: int) -> int:
    return _u2i(kernel().free(handle & 0xFFFF, gpio))


def gpio_read(handle: int, gpio: int) -> int:
    return _u2i(kernel().read(handle & 0xFFFF, gpio))


def gpio_write(handle: int, gpio: int, level: int) -> int:
    return _u2i(kernel().write(handle & 0xFFFF, gpio, level))


def gpio_set_debounce_micros(handle: int, gpio: int, debounce_micros: int) -> int:
    return _u2i(kernel().set_debounce(handle & 0xFFFF, gpio, debounce_micros))


def gpio_claim_alert(handle: int, gpio: int, eFlags: int, lFlags: int = 0,
                     notify_handle: int | None = None) -> int:
    if notify_handle is None:
        notify_handle = _notify_thread._notify
    return _u2i(kernel().claim_alert(handle & 0xFFFF, gpio, eFlags, lFlags, notify_handle))


def callback(handle: int, gpio: int, edge: int = RISING_EDGE,
             func: Callable[[int, int, int, int], None] | None = None) -> _callback:
    return _callback(handle >> 16, gpio, edge, func)


def tx_pwm(handle: int, gpio: int, pwm_frequency: float, pwm_duty_cycle: float, pulse_offset: int = 0,
           pulse_cycles: int = 0) -> int:
    raise error("PWM is not modelled by the fake Pi")


def __getattr__(name: str) -> Any:
    # A call the fake does not have fails loudly, naming itself, rather than as a bare AttributeError.
    if name.startswith(("spi_", "i2c_", "serial_", "group_", "tx_", "file_", "notify_")):
        raise AttributeError(f"lgpio.{name} is not modelled by the fake Pi (sim/fakepi/libs/lgpio.py)")
    raise AttributeError(name)

