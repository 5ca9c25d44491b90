"""The console on its port: read, split, dispatch, answer.

:class:`Console` is a :class:`~device.worker.Worker`: its thread reads the
port, hands the bytes to the :class:`~device.console.framing.Splitter`,
dispatches each command line through the joined command tables and each
Improv frame to :class:`~device.console.improv_rpc.ImprovRpc`, and writes the
answers. It reaches the device only through a
:class:`~device.control.DeviceControl`; what it owns (staged values,
authorisation) others read from the :class:`ConsoleStatus` it publishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from device import __version__
from device.config import MASK, Secret
from device.console import actions, commit, improv, selftest, wifi
from device.console import auth as auth_commands
from device.console import keys as keys_commands
from device.console import settings as settings_commands
from device.console.actions import suggest
from device.console.auth import AUTH_IDLE_S, PRESENCE_S, Auth
from device.console.commands import Answer, Command, Context, Needs, table
from device.console.framing import FRAME_TIMEOUT_S, MAX_LINE, Item, Line, Splitter
from device.console.improv_rpc import ImprovRpc
from device.console.selftest import BUTTON_TIMEOUT_S
from device.console.staging import Staging
from device.errors import CommandRefused, ConfigError, DeviceUnavailable
from device.worker import Worker

if TYPE_CHECKING:
    from device.control import DeviceControl
    from device.drivers.serial_port import ConsolePort
    from device.network import WifiBackend
    from device.settings import PinStore, SettingsStore

logger = logging.getLogger(__name__)

#: After a failed read, the console waits this long and opens the port again.
READ_RETRY_S = 1.0
#: Refused input (garbage, half frames) is logged as one summary line this often at most.
REFUSED_LOG_S = 60.0
#: Refusals a flood could repeat: counted into the summary line rather than logged one by one.
REFUSALS_COUNTED = frozenset({"not_authorized", "unknown_key", "invalid_value", "missing_value", "unknown_section",
                              "unknown_command", "confirm_needed"})


def default_commands() -> dict[str, Command]:
    """Every feature's command table, joined."""
    return table(actions.COMMANDS, settings_commands.COMMANDS, auth_commands.COMMANDS, commit.COMMANDS,
                 selftest.COMMANDS, wifi.COMMANDS, keys_commands.COMMANDS)


@dataclasses.dataclass(frozen=True)
class ConsoleStatus:
    """What the console publishes for others to read (never a secret).

    Attributes:
        port: the port's path or URL.
        port_ok: False while reading the port fails (a vanished USB host).
        authorized: whether changes were allowed at the last input.
        staged: the keys staged for the next Commit.
        improv_client: an Improv client has spoken on the port.
        answered: command lines answered since start.
    """

    port: str
    port_ok: bool = True
    authorized: bool = False
    staged: tuple[str, ...] = ()
    improv_client: bool = False
    answered: int = 0


class Console(Worker[ConsoleStatus]):
    """The serial console on one port, in its own thread.

    Args:
        port: a pyserial-like object: ``read(n)``, ``write(data)``, ``timeout``,
            optionally ``in_waiting``, ``close()`` and ``open()`` (pyserial's
            ``Serial``, or the simulator's pty port).
        device: the :class:`~device.control.DeviceControl`: the console's only way to the device.
        settings: the :class:`~device.settings.SettingsStore` of the overlay.
        pins: the :class:`~device.settings.PinStore`.
        network: a Wi-Fi backend for Improv (``None``: Wi-Fi RPCs fail cleanly).
        clock: monotonic seconds (injectable) for timeouts and authorisation.
        firmware: the version reported by ``Status`` and Improv.
        frame_timeout, max_line: see :class:`~device.console.framing.Splitter`.
        auth_idle_s: PIN authorisation lapses after this long without input (None: the
            configuration's ``console.auto_lock_s``, read at every line).
        button_timeout_s: default wait per button in ``Test buttons``.
        commands: the command table (default: every feature's, :func:`default_commands`).
    """

    def __init__(self, port: ConsolePort, device: DeviceControl, settings: SettingsStore, pins: PinStore, *,
                 network: WifiBackend | None = None, clock: Callable[[], float] = time.monotonic,
                 firmware: str = __version__, frame_timeout: float = FRAME_TIMEOUT_S, max_line: int = MAX_LINE,
                 auth_idle_s: float | None = None, button_timeout_s: float = BUTTON_TIMEOUT_S,
                 commands: Mapping[str, Command] | None = None) -> None:
        name = str(getattr(port, "path", None) or getattr(port, "port", None) or "?")
        super().__init__("console", ConsoleStatus(port=name))
        self.port = port
        self.device = device
        self.settings = settings
        self.pins = pins
        self.network = network
        self.firmware = firmware
        self.splitter = Splitter(max_line, frame_timeout)
        self.commands = dict(commands if commands is not None else default_commands())
        self._clock = clock
        self._idle_from_config = auth_idle_s is None
        self.auth = Auth(pins, clock, AUTH_IDLE_S if auth_idle_s is None else auth_idle_s)
        self.staging = Staging(settings, device)
        self.improv = ImprovRpc(device, network, self.auth, self._send_frame, firmware, send_line=self._send,
                                on_refused=self._refuse)
        self.auth.on_change = self.improv.refresh
        self._context = Context(device=device, settings=settings, pins=pins, auth=self.auth, staging=self.staging,
                                send=self._send, firmware=firmware, button_timeout_s=button_timeout_s,
                                commands=self.commands, network=network,
                                network_changed=self.improv.network_changed)
        # The thread and callers of feed()/grant_presence() (tests, the supervisor) take turns.
        self._lock = threading.RLock()
        self._read_errors = 0
        self._reopen_due = False
        self._answered = 0
        self._refused: dict[str, int] = {}
        self._refused_logged = -REFUSED_LOG_S

    @property
    def clock(self) -> Callable[[], float]:
        """Monotonic seconds; replacing it also moves the authorisation's clock."""
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.auth.clock = clock

    # --- running -------------------------------------------------------------

    def start(self) -> Console:
        """Serve the port in a daemon thread until :meth:`stop`."""
        super().start()
        logger.info("console listening on %s", self.status.port)
        return self

    def stop(self, timeout: float | None = 2.0) -> None:
        super().stop(timeout)

    def cycle(self) -> float | None:
        """Read what the port has (waiting at most its timeout) and handle it."""
        if self._reopen_due:
            self._reopen_due = False
            self._reopen()
        try:
            data = self.port.read(1)
            waiting = getattr(self.port, "in_waiting", 0) if data else 0
            if waiting:
                data += self.port.read(waiting)
        except Exception as e:  # a vanished USB host must not end the console
            self._read_errors += 1
            if self._read_errors == 1:
                logger.warning("console port read failed: %s", e)
                self.publish(port_ok=False)
            self._reopen_due = True
            return READ_RETRY_S
        if self._read_errors:
            self._read_errors = 0
            self.publish(port_ok=True)
        self.feed(data)
        return 0

    def _reopen(self) -> None:
        close, open_ = getattr(self.port, "close", None), getattr(self.port, "open", None)
        if close is None or open_ is None:
            return
        try:
            close()
            open_()
            logger.info("console port reopened")
        except Exception as e:
            logger.debug("console port reopen failed: %s", e)

    def feed(self, data: bytes) -> None:
        """Handle bytes from the port (the thread calls this; tests may too)."""
        with self._lock:
            items = self.splitter.feed(data, self._clock())
            for item in items:
                self._handle_item(item)
            self.improv.refresh()
            self._log_refused()
            if items:
                self.publish(authorized=self.auth.authorized(), staged=tuple(self.staging.names()),
                             improv_client=self.improv.client_seen, answered=self._answered)

    def register(self, name: str, command: Command) -> None:
        """Add a command (a test's, a feature's): one entry; the dispatch does not change.

        Raises:
            ValueError: a command of that name is already there.
        """
        key = name.lower()
        with self._lock:
            if key in self.commands:
                raise ValueError(f"console command defined twice: {key}")
            self.commands[key] = command

    def grant_presence(self, duration_s: float = PRESENCE_S) -> None:
        """Physical presence proven (buttons held at boot): changes allowed for a while."""
        with self._lock:
            self.auth.grant_presence(duration_s)

    def authorized(self) -> bool:
        """Whether changes are allowed now."""
        return self.auth.authorized()

    # --- output --------------------------------------------------------------

    def _send(self, obj: Answer) -> None:
        line = json.dumps(obj, ensure_ascii=False, default=_shown) + "\r\n"
        self._write(line.encode("utf-8"))

    def _send_frame(self, frame: bytes | None) -> None:
        if frame is not None:
            self._write(frame + b"\n")

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except Exception as e:
            logger.warning("console port write failed: %s", e)

    def _refuse(self, code: str) -> None:
        """Count refused input for the next summary line (never a line of its own)."""
        self._refused[code] = self._refused.get(code, 0) + 1

    def _log_refused(self) -> None:
        """One summary line per :data:`REFUSED_LOG_S` at most: garbage must not flood the log."""
        now = self._clock()
        if self._refused and now - self._refused_logged >= REFUSED_LOG_S:
            summary = ", ".join(f"{n} {code}" for code, n in sorted(self._refused.items()))
            logger.info("console input refused: %s", summary)
            self._refused.clear()
            self._refused_logged = now

    # --- dispatch ------------------------------------------------------------

    def _handle_item(self, item: Item) -> None:
        try:
            if isinstance(item, Line):
                self._handle_line(item.text)
            elif isinstance(item, improv.Frame):
                self.improv.handle(item)
            else:
                self._refuse(item.code)
                if item.code == "bad_frame":
                    # A whole frame that failed its checksum: Improv's answer for the client, then the
                    # line for a person at a terminal (Improv clients skip lines that are not frames).
                    self.improv.invalid_packet()
                self._send({"ok": False, "error": item.code, "message": item.message})
        except Exception:
            # One bad command must never stop the console (nor leak its text).
            logger.exception("console command failed")
            self._send({"ok": False, "error": "internal_error",
                        "message": "the command failed inside the device; see the device log"})

    def _handle_line(self, text: str) -> None:
        if self._idle_from_config:
            try:
                self.auth.idle_s = float(self.device.current_config().console.auto_lock_s)
            except Exception:  # a device that cannot say keeps the last value
                pass
        self.auth.touch()
        word, _, arg = text.partition(" ")
        name = word.lower()
        arg = arg.strip()
        command = self.commands.get(name)
        self._answered += 1
        if command is None:
            # Never echo the unknown word (it may be a PIN typed on its own), and never log a line
            # per word: counted, and summed up once a minute at most, so a flood cannot fill the disk.
            self._refuse("unknown_command")
            hint = suggest(name, self.commands)
            refusal: Answer = {"ok": False, "error": "unknown_command",
                               "message": (f"unknown command; did you mean {hint}? " if hint else
                                           "unknown command; ") + "send Help for the list"}
            if hint:
                refusal["did_you_mean"] = hint
            self._send(refusal)
            return
        # Log what was asked, never a value: it may be a PIN, a key or a name.
        detail = (" " + arg.split(" ", 1)[0][:64]) if arg and command.log_argument else ""
        changes = command.needs is Needs.ALWAYS or (command.needs is Needs.TO_CHANGE and bool(arg))
        try:
            if changes:
                self.auth.require()
            answer = command.handler(self._context, arg)
        except CommandRefused as r:
            answer = {"ok": False, "error": r.code, "message": str(r), **r.extra}
        except ConfigError as e:
            answer = {"ok": False, "error": "invalid_config", "message": str(e),
                      "problems": [{"key": k, "message": m} for k, m in e.problems]}
        except DeviceUnavailable as e:
            answer = {"ok": False, "error": "unavailable", "message": str(e)}
        if answer is not None and answer.get("ok") is False and answer.get("error") in REFUSALS_COUNTED:
            self._refuse(str(answer["error"]))
            logger.debug("console: %s refused (%s)", name, answer["error"])
        else:
            # Changes are logged (an audit of what a technician did); reads only at debug level.
            logger.log(logging.INFO if changes else logging.DEBUG, "console: %s%s%s", name, detail,
                       " (with a value)" if arg and not detail else "")
        if answer is not None:
            self._send(answer)


def _shown(value: Any) -> Any:
    """JSON for what json cannot write itself: a secret masked, anything else as text."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple):
        return list(value)
    return str(value)
