"""The simulator's script language: one command a line.

    press N          press and release rating button N (1 = 非常满意)
    staff            press the staff 请评价 key
    wait SECONDS     let time pass
    network down     cut the link to the hall server
    network up       restore it
    session [TICKET] the stand-in hall server opens a service session (hall mode)
    # comment        ignored, as are blank lines
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory

    from device.config import Config
    from sim.network import NetworkLink

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: How long a scripted finger holds a button down.
HOLD_S = 0.08


class ScriptError(ValueError):
    """A script line that is not a command; names the line."""


@dataclass(frozen=True)
class Command:
    verb: str
    arg: Any = None
    line: int = 0


def parse_line(text: str, number: int = 0) -> Command | None:
    """One script line to a Command, or None for a blank or comment line."""
    words = text.split("#", 1)[0].split()
    if not words:
        return None
    verb, args = words[0].lower(), words[1:]
    where = f"line {number}: " if number else ""
    if verb == "press":
        if len(args) != 1 or args[0] not in "12345" or len(args[0]) != 1:
            raise ScriptError(f"{where}'press' takes a button number 1 to 5, got {' '.join(args)!r}")
        return Command("press", int(args[0]), number)
    if verb == "staff" and not args:
        return Command("staff", None, number)
    if verb == "wait":
        try:
            seconds = float(args[0]) if len(args) == 1 else -1
        except ValueError:
            seconds = -1
        if not 0 <= seconds <= 86400:
            raise ScriptError(f"{where}'wait' takes seconds from 0 to 86400, got {' '.join(args)!r}")
        return Command("wait", seconds, number)
    if verb == "session" and len(args) <= 1:
        return Command("session", args[0] if args else "", number)
    if verb == "network" and len(args) == 1 and args[0].lower() in ("up", "down"):
        return Command("network", args[0].lower(), number)
    raise ScriptError(f"{where}unknown command {text.strip()!r} "
                      "(expected press N, staff, wait SECONDS, network up|down, session [TICKET])")


def parse(text: str) -> list[Command]:
    """A whole script; every bad line is reported at once."""
    commands: list[Command] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            command = parse_line(line, number)
        except ScriptError as e:
            errors.append(str(e))
            continue
        if command is not None:
            commands.append(command)
    if errors:
        raise ScriptError("\n".join(errors))
    return commands


class Driver:
    """Carries out commands on the simulated hardware.

    Args:
        factory: the gpiozero MockFactory the buttons use.
        config: the device configuration (for pin numbers and debounce).
        link: the :class:`~sim.network.NetworkLink`, or None.
        stop: a threading.Event that cuts waits short.
        hall: the embedded :class:`~hall.HallServer`, or None.
    """

    def __init__(self, factory: MockFactory, config: Config, link: NetworkLink | None, stop: threading.Event,
                 hall: Any = None) -> None:
        self.factory = factory
        self.config = config
        self.link = link
        self.stop = stop
        self.hall = hall
        self.sessions = 0

    def tap(self, pin: int) -> None:
        p = self.factory.pin(pin)
        p.drive_low()
        self.stop.wait(HOLD_S)
        p.drive_high()
        # Let the contact rest beyond the debounce time before the next press.
        self.stop.wait(self.config.buttons.bounce_ms / 1000 + 0.02)

    def run(self, command: Command) -> None:
        logger.info("script: %s %s", command.verb, "" if command.arg is None else command.arg)
        if command.verb == "press":
            self.tap(self.config.buttons.pins[command.arg - 1])
        elif command.verb == "staff":
            self.tap(self.config.buttons.staff_pin)
        elif command.verb == "wait":
            self.stop.wait(command.arg)
        elif command.verb == "session":
            if self.hall is None:
                logger.warning("script: 'session' needs the embedded hall server")
                return
            self.sessions += 1
            ticket = command.arg or f"A{self.sessions:03d}"
            self.hall.open_session(self.config.device.id, ticket=ticket, task_name="综合受理",
                                   qr_url=f"{self.config.qr.url.rstrip('/')}/s/{ticket}")
        elif command.verb == "network":
            if self.link is None:
                logger.warning("script: no network link to cut (an external --server without a link)")
            elif command.arg == "down":
                self.link.down()
            else:
                self.link.up()


def sleep_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)
