"""What every command table is made of, and what a handler is given.

Tasmota style: each feature module of the console keeps its own table,
``COMMANDS = {name: Command(handler, ...)}`` (names in lower case, as the
console matches them case-insensitively), and :func:`table` joins them.
A command is one entry: its handler, when it needs authorisation, and its
help (``summary``, ``usage``, ``example``), which ``Help`` and ``Help <name>``
read. Adding a command is adding an entry (to a feature table, or with
:meth:`~device.console.port.Console.register`): the dispatch never changes.
A handler takes the :class:`Context` and the rest of the line, and returns
the answer (one JSON object) or ``None`` when it wrote its answers itself;
it refuses with :class:`~device.errors.CommandRefused`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device.config import MASK, Secret

if TYPE_CHECKING:
    from device.console.auth import Auth
    from device.console.staging import Staging
    from device.control import DeviceControl
    from device.network import WifiBackend
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
        commands: the console's command table (``Help`` reads it).
        network: the Wi-Fi backend (``None``: no Wi-Fi on this device).
        network_changed: tell the Improv side that the Wi-Fi changed (so a client hears the new state).
    """

    device: DeviceControl
    settings: SettingsStore
    pins: PinStore
    auth: Auth
    staging: Staging
    send: Callable[[Answer], None]
    firmware: str
    button_timeout_s: float
    commands: Mapping[str, Command] = dataclasses.field(default_factory=dict)
    network: WifiBackend | None = None
    network_changed: Callable[[], None] | None = None


Handler = Callable[[Context, str], Answer | None]


@dataclass(frozen=True)
class Command:
    """One entry of a command table.

    Attributes:
        handler: ``handler(context, argument) -> answer or None``.
        needs: when authorisation is checked before the handler runs.
        log_argument: the first word of the argument may be logged (a key
            name or a test's name, never a value).
        summary: what it does, in one line (``Help``).
        usage: how it is typed, e.g. ``StaffName [name]`` (``Help <name>``).
        example: a line a technician could send as it is.
        name: how the command is written in help (``StaffName``); the table's key is its lower case.
    """

    handler: Handler
    needs: Needs = Needs.NOTHING
    log_argument: bool = False
    summary: str = ""
    usage: str = ""
    example: str = ""
    name: str = ""

    def help(self, key: str) -> dict[str, Any]:
        """This command's help as ``Help <name>`` answers it."""
        name = self.name or key
        out: dict[str, Any] = {"command": name, "usage": self.usage or name, "summary": self.summary}
        if self.example:
            out["example"] = self.example
        out["authorisation"] = {Needs.NOTHING: "not needed", Needs.ALWAYS: "needed",
                                Needs.TO_CHANGE: "needed to change, not to read"}[self.needs]
        return out


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
