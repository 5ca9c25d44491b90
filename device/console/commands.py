"""What every command table is made of, and what a handler is given.

Tasmota style: each feature module of the console keeps its own table,
``COMMANDS = {name: Command(handler, ...)}`` (names in lower case, as the
console matches them case-insensitively), and :func:`table` joins them.
A handler takes the :class:`Context` and the rest of the line, and returns
the answer (one JSON object) or ``None`` when it wrote its answers itself;
it refuses with :class:`~device.errors.CommandRefused`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device.config import MASK, Secret

if TYPE_CHECKING:
    from device.console.auth import Auth
    from device.console.staging import Staging
    from device.control import DeviceControl
    from device.settings import PinStore, SettingsStore

#: One answer line: ``{"ok": true, ...}`` or ``{"ok": false, "error": code, "message": text}``.
Answer = dict[str, Any]


class Needs(enum.Enum):
    """When a command needs authorisation."""

    NOTHING = "nothing"        #: reads, and commands that check for themselves
    ALWAYS = "always"          #: changes and actions
    TO_CHANGE = "to change"    #: the bare name reads, with a value it changes


@dataclass(frozen=True)
class Context:
    """What a command handler may use: the console's parts, never the device's.

    Attributes:
        device: the :class:`~device.control.DeviceControl`: the only way to the device.
        settings: the settings overlay store.
        pins: the PIN store.
        auth: the console's authorisation.
        staging: values staged for the next ``Commit``.
        send: writes one answer line at once (for commands that answer more than once).
        firmware: the version ``Status`` reports.
        button_timeout_s: the default wait per button in ``Test buttons``.
    """

    device: DeviceControl
    settings: SettingsStore
    pins: PinStore
    auth: Auth
    staging: Staging
    send: Callable[[Answer], None]
    firmware: str
    button_timeout_s: float


Handler = Callable[[Context, str], Answer | None]


@dataclass(frozen=True)
class Command:
    """One entry of a command table.

    Attributes:
        handler: ``handler(context, argument) -> answer or None``.
        needs: when authorisation is checked before the handler runs.
        log_argument: the first word of the argument may be logged (a key
            name or a test's name, never a value).
    """

    handler: Handler
    needs: Needs = Needs.NOTHING
    log_argument: bool = False


def table(*tables: Mapping[str, Command]) -> dict[str, Command]:
    """The feature tables joined into one; a name in two tables is a bug."""
    joined: dict[str, Command] = {}
    for t in tables:
        twice = joined.keys() & t.keys()
        if twice:
            raise ValueError(f"console command defined twice: {', '.join(sorted(twice))}")
        joined.update(t)
    return joined


def jsonable(value: Any) -> Any:
    """A value as an answer shows it: tuples as lists, a :class:`Secret` as ``****``."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value
