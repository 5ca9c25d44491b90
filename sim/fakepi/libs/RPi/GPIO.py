"""The fake Pi's ``RPi.GPIO``: RPi.GPIO's API over lgpio, as rpi-lgpio provides it on a Pi.

luma's ``spi`` drives the panel's DC and RST lines through it. As with
rpi-lgpio, it sits on ``lgpio`` (here the fake one), so its lines are claimed
in the same kernel as gpiozero's: a line both want is ``GPIO busy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lgpio

VERSION = "0.6 (fake Pi)"
RPI_INFO = {"P1_REVISION": 3, "TYPE": "Zero 2 W", "MANUFACTURER": "Sony UK", "PROCESSOR": "BCM2837",
            "RAM": "512M", "REVISION": "902120"}

BOARD, BCM = 10, 11
OUT, IN = 0, 1
LOW, HIGH = 0, 1
PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22
RISING, FALLING, BOTH = 31, 32, 33
UNKNOWN, SERIAL, SPI, I2C, HARD_PWM = -1, 40, 41, 42, 43

#: Header pin -> BCM number on the 40-pin header.
_BOARD_TO_BCM = {3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
                 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
                 36: 16, 37: 26, 38: 20, 40: 21}
_PULLS = {PUD_OFF: lgpio.SET_PULL_NONE, PUD_DOWN: lgpio.SET_PULL_DOWN, PUD_UP: lgpio.SET_PULL_UP}
_EDGES = {RISING: lgpio.RISING_EDGE, FALLING: lgpio.FALLING_EDGE, BOTH: lgpio.BOTH_EDGES}
#: Line flags a claim keeps (the pull), as lgpio's mode reports them.
_LINE_FLAGS = lgpio.SET_PULL_UP | lgpio.SET_PULL_DOWN | lgpio.SET_PULL_NONE

_mode: int | None = None
_chip: int | None = None
_outputs: set[int] = set()
_claimed: set[int] = set()
_detects: dict[int, Any] = {}


def setmode(mode: int) -> None:
    global _mode
    if mode not in (BOARD, BCM):
        raise ValueError("An invalid mode was passed to setmode()")
    if _mode is not None and mode != _mode:
        raise ValueError("A different mode has already been set!")
    _mode = mode


def getmode() -> int | None:
    return _mode


def setwarnings(flag: bool) -> None:
    pass


def _gpio(channel: int) -> int:
    if _mode is None:
        raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)")
    if _mode == BOARD:
        if channel not in _BOARD_TO_BCM:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return _BOARD_TO_BCM[channel]
    if not 0 <= channel <= 27:
        raise ValueError("The channel sent is invalid on a Raspberry Pi")
    return channel


def _handle() -> int:
    global _chip
    if _chip is None:
        try:
            _chip = lgpio.gpiochip_open(0)
        except lgpio.error as e:
            raise RuntimeError(f"Cannot open gpiochip0: {e}") from e
    return _chip


def _each(channels: int | Iterable[int]) -> list[int]:
    return [channels] if isinstance(channels, int) else list(channels)


def setup(channel: int | Iterable[int], direction: int, pull_up_down: int = PUD_OFF,
          initial: int | None = None) -> None:
    for ch in _each(channel):
        gpio = _gpio(ch)
        if direction == OUT:
            lgpio.gpio_claim_output(_handle(), gpio, 1 if initial else 0)
            _outputs.add(gpio)
        elif direction == IN:
            lgpio.gpio_claim_input(_handle(), gpio, _PULLS[pull_up_down])
            _outputs.discard(gpio)
        else:
            raise ValueError("An invalid direction was passed to setup()")
        _claimed.add(gpio)


def output(channel: int | Iterable[int], value: int | Iterable[int]) -> None:
    channels = _each(channel)
    values = [value] * len(channels) if isinstance(value, int | bool) else list(value)
    for ch, v in zip(channels, values, strict=True):
        gpio = _gpio(ch)
        if gpio not in _outputs:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        lgpio.gpio_write(_handle(), gpio, 1 if v else 0)


def input(channel: int) -> int:
    return int(lgpio.gpio_read(_handle(), _gpio(channel)))


def gpio_function(channel: int) -> int:
    return OUT if _gpio(channel) in _outputs else IN


def add_event_detect(channel: int, edge: int, callback: Callable[[int], None] | None = None,
                     bouncetime: int | None = None) -> None:
    gpio = _gpio(channel)
    if gpio in _outputs or gpio not in _claimed:
        raise RuntimeError("You must setup() the GPIO channel as an input first")
    if gpio in _detects:
        raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
    handle = _handle()
    lgpio.gpio_claim_alert(handle, gpio, _EDGES[edge], lgpio.gpio_get_mode(handle, gpio) & _LINE_FLAGS)
    _detects[gpio] = lgpio.callback(handle, gpio, _EDGES[edge],
                                    (lambda chip, g, level, tick: callback(channel)) if callback else None)


def remove_event_detect(channel: int) -> None:
    gpio = _gpio(channel)
    detect = _detects.pop(gpio, None)
    if detect is not None:
        detect.cancel()
        handle = _handle()
        lgpio.gpio_claim_input(handle, gpio, lgpio.gpio_get_mode(handle, gpio) & _LINE_FLAGS)


def PWM(channel: int, frequency: float) -> Any:
    raise RuntimeError("PWM is not modelled by the fake Pi")


def cleanup(chanlist: int | Iterable[int] | None = None) -> None:
    global _chip, _mode
    gpios = set(_claimed) if chanlist is None else {_gpio(ch) for ch in _each(chanlist)}
    for gpio in gpios & _claimed:
        detect = _detects.pop(gpio, None)
        if detect is not None:
            detect.cancel()
        lgpio.gpio_free(_handle(), gpio)
        _claimed.discard(gpio)
        _outputs.discard(gpio)
    if chanlist is None and _chip is not None:
        lgpio.gpiochip_close(_chip)
        _chip, _mode = None, None
