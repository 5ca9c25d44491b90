"""The supervisor: the console first, then the device under it, rebuilt as needed.

ESPHome's safe mode, for a service hall: whatever fails — a committed
setting that cannot start, a panel that does not answer, a pin library that
will not load, an outbox that cannot be opened — the serial console stays up.
The device then runs in **recovery**: the console answers every command,
``Status`` lists each fault with a fix hint, the panel shows that the device
is under maintenance if it can, and ``Set``/``Commit``/``Discard``/
``FactoryReset`` work. A committed change or a ``Restart`` builds the device
again; the console is never rebuilt.

Last known good (as RAUC and Mender do for whole images): the settings
overlay that last started is remembered. When newly committed settings fail
to start :data:`MAX_FAILED_STARTS` times in a row (across restarts of the
process too), the supervisor goes back to the last settings that started,
keeps the failed ones for the technician, and says so in ``Status``.

Under systemd (:mod:`device.notify`) the supervisor says READY once the
loop's first frame is up or recovery is, keeps ``systemctl status`` told of
its mode, pings the watchdog only while the loop turns and the outbox
answers (:meth:`Supervisor.health`), and leaves 暂停服务 on the panel when
it is stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from device import __version__
from device import config as config_mod
from device.app import App, TransportFactory, http_transport
from device.checks import Fault, check_screens, check_storage, configured_size, faults_from, load_key
from device.clock import Clocks
from device.console import Console
from device.console.commands import Command as ConsoleCommand
from device.control import SupervisorControl
from device.errors import ConfigError, DeviceUnavailable, EvaluatorError, SettingsError
from device.handlers.assignment import assignment_path
from device.handlers.commands import CommitSettings, EraseSettings
from device.loop import Command, Wake
from device.notify import Liveness, Notifier, Watchdog
from device.outputs import led
from device.settings import PinStore, write_atomic
from device.ui.models import BootScreen
from device.ui.screens import render

if TYPE_CHECKING:
    from device.config import Config, Secret
    from device.hardware import Hardware
    from device.settings import SettingsStore

#: ``configured_size`` lives in :mod:`device.checks` (re-exported here for callers of the old name).
__all__ = ["Supervisor", "configured_size"]

logger = logging.getLogger(__name__)

#: Failed starts in a row of newly committed settings before going back to the last good ones.
MAX_FAILED_STARTS = 3
#: In recovery, a start that failed for the hardware's sake is tried again this often.
RETRY_S = 30.0

RUNNING, RECOVERY, STARTING = "running", "recovery", "starting"
#: What the panel says once the device has stopped (SIGTERM, a shutdown).
STOPPED_MESSAGE = "暂停服务"


class Either:
    """Set when either of two events is: the app stops for a shutdown or a rebuild.

    The loop asks :meth:`is_set` once per turn (at least every second), so
    each call is also its sign of life: ``on_poll`` is told of it.
    """

    def __init__(self, a: threading.Event, b: threading.Event,
                 on_poll: Callable[[], None] | None = None) -> None:
        self.a, self.b = a, b
        self.on_poll = on_poll

    def is_set(self) -> bool:
        if self.on_poll is not None:
            self.on_poll()
        return self.a.is_set() or self.b.is_set()


def _digest(overlay: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(overlay, sort_keys=True, default=list).encode()).hexdigest()


class StartRecord:
    """The last settings overlay that started, and the failed starts of a newer one.

    Kept as one small JSON file beside the settings overlay, written atomically.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            logger.warning("start record %s unreadable (%s); starting a new one", self.path, e)
            return {}

    def write(self, data: dict[str, Any]) -> None:
        try:
            write_atomic(self.path, json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        except SettingsError as e:
            logger.warning("start record not kept: %s", e)

    def started(self, overlay: dict[str, Any]) -> None:
        """These settings started: they are the last known good ones now."""
        data = self.read()
        if data.get("good_digest") != _digest(overlay) or data.get("failures"):
            self.write({"good": overlay, "good_digest": _digest(overlay)})

    def failed(self, overlay: dict[str, Any]) -> int:
        """A start with these settings failed; returns the failures in a row for them."""
        data = self.read()
        digest = _digest(overlay)
        failures = data.get("failures", 0) + 1 if data.get("trying") == digest else 1
        data.update(trying=digest, failures=failures)
        self.write(data)
        return failures

    def fallback(self, overlay: dict[str, Any], max_failures: int) -> dict[str, Any] | None:
        """The last good overlay, if ``overlay`` is newer and failed ``max_failures`` times."""
        data = self.read()
        digest = _digest(overlay)
        good = data.get("good")
        if (not isinstance(good, dict) or data.get("good_digest") == digest
                or data.get("trying") != digest or data.get("failures", 0) < max_failures):
            return None
        return good


class Supervisor:
    """Keeps the console up and the device built.

    Args:
        store: the :class:`~device.settings.SettingsStore` (files, overrides, the technician's overlay).
        make_hardware: ``config -> Hardware``; may raise (no panel, no pin library).
        events: the input queue the hardware's buttons feed (kept across rebuilds).
        console_port: a pyserial-like port for the technician's console, or None.
        network: the Wi-Fi backend for Improv.
        clocks: the :class:`~device.clock.Clocks` of every build.
        make_transport: how apps reach the hall server (tests pass their own).
        rebuild_hardware: close and make the hardware again at each rebuild, so that
            committed display and button settings take effect (the simulator keeps its pins).
        retry_s: in recovery for a hardware fault, how often to try again.
        max_failed_starts: failed starts of new settings before the last good ones return.
        on_app: called with each app built (the simulator watches it).
        notifier: tells systemd of READY, STATUS and the watchdog (:mod:`device.notify`); None outside systemd.
        console_commands: the console's command table (default: every feature's).
    """

    def __init__(self, store: SettingsStore, make_hardware: Callable[[Config], Hardware], *,
                 events: queue.Queue[Any] | None = None, console_port: Any = None, network: Any = None,
                 clocks: Clocks | None = None, make_transport: TransportFactory | None = None,
                 rebuild_hardware: bool = True, retry_s: float = RETRY_S,
                 max_failed_starts: int = MAX_FAILED_STARTS,
                 on_app: Callable[[App | None], None] | None = None,
                 notifier: Notifier | None = None,
                 console_commands: Mapping[str, ConsoleCommand] | None = None) -> None:
        self.store = store
        self.make_hardware = make_hardware
        self.events: queue.Queue[Any] = events if events is not None else queue.Queue()
        self.console_port = console_port
        self.network = network
        self.clocks = clocks or Clocks()
        self.make_transport = make_transport
        self.rebuild_hardware = rebuild_hardware
        self.retry_s = retry_s
        self.max_failed_starts = max_failed_starts
        self.on_app = on_app
        self.console_commands = console_commands
        self.starts = StartRecord(os.path.join(os.path.dirname(os.path.abspath(store.path)), "start.json"))
        #: What the device runs (or would run): the console's reads answer from it.
        self.config: Config = self._fallback_config()
        self.mode = STARTING
        #: Faults of the last build (empty while running normally).
        self.faults: tuple[Fault, ...] = ()
        #: A standing note: the settings went back to the last good ones.
        self.reverted: Fault | None = None
        self.app: App | None = None
        self.hardware: Hardware | None = None
        self.console: Any = None
        self._rebuild = threading.Event()
        self._stop = threading.Event()
        self._presence_checked = False
        self.notifier = notifier or Notifier(None)
        self.liveness = Liveness(self.notifier)

    # --- the console's requests ---------------------------------------------------

    def request_rebuild(self) -> None:
        """Build the device again (a Restart, or a Commit in recovery); the console stays."""
        self._rebuild.set()
        self.events.put(Wake())

    def serves(self, kind: type) -> bool:
        """Whether the supervisor itself carries out a console request of this type while no app runs."""
        return kind in (CommitSettings, EraseSettings)

    def committed(self, config: Config) -> None:
        """Settings were committed (on the loop's thread, which is this one): reads answer from them."""
        self.config = config

    def _serve(self, request: Command) -> None:
        """A console request in recovery, on the supervisor's thread (the owner of the settings and keys)."""
        try:
            if isinstance(request, CommitSettings):
                request.write()
                # In recovery a commit is the repair: build the device again with it.
                self.config = request.config
                self.request_rebuild()
                result: Any = []
            elif isinstance(request, EraseSettings):
                request.erase()
                try:
                    os.remove(assignment_path(self.config))
                except FileNotFoundError:
                    pass
                result = None
            else:
                raise DeviceUnavailable(f"{type(request).__name__} needs the running device; it is in {self.mode}")
        except Exception as e:
            request.reply.set_exception(e)
        else:
            request.reply.set_result(result)

    def stop(self) -> None:
        self._stop.set()
        self.request_rebuild()

    # --- running -------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Open the console, then build and run the device until ``stop`` (or :meth:`stop`)."""
        if stop is not None:
            self._stop = stop
        self._open_console()
        watchdog = Watchdog(self.notifier, self.health, describe=self.describe).start()
        try:
            while not self._stop.is_set():
                self._rebuild.clear()
                self.liveness.beat()
                app = self._build()
                self._check_presence()
                if app is None:
                    self._wait_in_recovery()
                else:
                    self.mode, self.app = RUNNING, app
                    if self.on_app is not None:
                        self.on_app(app)
                    try:
                        app.run(Either(self._stop, self._rebuild, self._loop_turned))  # type: ignore[arg-type]
                    finally:
                        self.app = None
                        if self.on_app is not None:
                            self.on_app(None)
                if self._rebuild.is_set() and not self._stop.is_set():
                    logger.info("building the device again with the committed settings")
                    self.mode = STARTING
                    if self.rebuild_hardware:
                        self._close_hardware()
        finally:
            watchdog.stop()
            if self._stop.is_set():
                self._show_message(STOPPED_MESSAGE, keep=True)
            if self.console is not None:
                self.console.stop()
            self._close_hardware()

    def _close_hardware(self) -> None:
        if self.hardware is not None:
            try:
                self.hardware.close()
            except Exception:
                logger.exception("closing the hardware failed")
            self.hardware = None

    def _wait_in_recovery(self) -> None:
        if self.starts.fallback(self._overlay(), self.max_failed_starts) is not None:
            return  # the next build goes back to the last settings that started
        self.mode = RECOVERY
        if self.hardware is not None and self.hardware.led is not None:  # the status LED blinks fast
            self.hardware.led.show(led.FAULT)
        logger.error("recovery: the console answers; faults: %s",
                     "; ".join(f"{f.code}: {f.message}" for f in self.faults))
        self.liveness.tell(self.describe())
        retry = any(f.code in ("display", "pins", "storage", "internal") for f in self.faults)
        waited = 0.0
        while not self._stop.is_set() and not self._rebuild.is_set():
            self.liveness.beat()
            if self._rebuild.wait(0.2):
                break
            waited += 0.2
            if retry and waited >= self.retry_s:
                logger.info("recovery: trying to start again")
                break
            self._drain_inputs()

    def _drain_inputs(self) -> None:
        """In recovery, button presses are not ratings: they are read and dropped; console requests are served."""
        try:
            while True:
                event = self.events.get_nowait()
                if isinstance(event, Command):
                    self._serve(event)
                self.events.task_done()
        except queue.Empty:
            pass

    # --- building --------------------------------------------------------------------

    def _fallback_config(self) -> Config:
        """A configuration to answer from when the committed one cannot be loaded."""
        for load in (self.store.load, lambda: self.store.build({}), config_mod.load):
            try:
                return load()
            except ConfigError:
                continue
        raise AssertionError("the built-in defaults are a valid configuration")

    def _overlay(self) -> dict[str, Any]:
        try:
            return self.store.read()
        except ConfigError as e:
            logger.error("settings overlay unreadable: %s", e)
            return {}

    def _build(self) -> App | None:
        """One try at building the device; ``None`` when it fails (see :attr:`faults`)."""
        overlay = self._overlay()
        good = self.starts.fallback(overlay, self.max_failed_starts)
        if good is not None:
            self._revert(overlay, good)
            overlay = good
        faults: list[Fault] = []
        try:
            config = self.store.load()
        except ConfigError as e:
            faults += faults_from(e, "config")
            config = self._fallback_config()
        self.config = config
        if self.hardware is None:
            try:
                self.hardware = self.make_hardware(config)
            except Exception as e:
                _log_failure("the hardware could not be set up", e)
                faults += faults_from(e, "hardware")
        size = self.hardware.size if self.hardware is not None else configured_size(config)
        for check in (lambda: check_screens(config, size), lambda: check_storage(config)):
            try:
                check()
            except Exception as e:
                faults += faults_from(e, "checks")
        app = None
        if not faults and self.hardware is not None:
            try:
                app = App(config, self.hardware, load_key(config.upload.key_file), clocks=self.clocks,
                          make_transport=self.make_transport or http_transport, on_commit=self.committed)
            except Exception as e:
                _log_failure("the device could not be built", e)
                faults += faults_from(e, "app")
        self.faults = tuple(faults)
        if app is None:
            failures = self.starts.failed(overlay)
            logger.error("start failed (%d in a row with these settings)", failures)
            self._show_message("维护中")  # under maintenance
            return None
        self.starts.started(overlay)
        return app

    def _revert(self, failed: dict[str, Any], good: dict[str, Any]) -> None:
        """Go back to the last settings that started; keep the failed ones for the technician."""
        folder = os.path.dirname(os.path.abspath(self.store.path))
        try:
            write_atomic(os.path.join(folder, "settings.failed.json"),
                         json.dumps(failed, ensure_ascii=False, sort_keys=True, default=list).encode("utf-8"))
            self.store.save(good)
        except SettingsError as e:
            logger.error("cannot go back to the last good settings: %s", e)
            return
        self.reverted = Fault(
            "reverted", f"the settings committed last failed to start {self.max_failed_starts} times; "
            "the device went back to the last settings that started",
            "Status and the log show what failed; settings.failed.json beside the settings keeps them")
        logger.warning("went back to the last settings that started (%s)", self.reverted.message)

    def _show_message(self, message: str, keep: bool = False) -> None:
        """Tell whoever stands at the counter (维护中, 暂停服务), if the panel works.

        ``keep``: the frame stays on the panel when the hardware is closed.
        """
        if self.hardware is None:
            return
        try:
            self.hardware.display.show(render(BootScreen(__version__, message), self.hardware.size))
        except Exception as e:
            logger.warning("the panel cannot show %s (faults: %s): %s", message,
                           " ".join(sorted({f.code for f in self.faults})) or "none", e)
            return
        # luma blanks a panel when it is closed (and again at exit) unless told to keep its frame.
        panel = getattr(self.hardware.display, "device", None)
        if keep and panel is not None and hasattr(panel, "persist"):
            panel.persist = True

    # --- the console --------------------------------------------------------------------

    def _open_console(self) -> None:
        if self.console_port is None:
            return
        pins = PinStore(os.path.join(os.path.dirname(os.path.abspath(self.config.upload.key_file)),
                                     "console.pin"))
        self.console = Console(self.console_port, SupervisorControl(self), self.store, pins, network=self.network,
                               commands=self.console_commands)
        self.console.start()

    def _check_presence(self) -> None:
        """Buttons 1 and 5 held at power-on: a technician is at the device."""
        if self.console is None or self.hardware is None or self._presence_checked:
            return
        self._presence_checked = True
        try:
            held = set(self.hardware.buttons.held())
        except Exception:
            return
        if held >= {1, 5}:
            self.console.grant_presence()

    # --- systemd (device/notify.py) --------------------------------------------------------

    def _loop_turned(self) -> None:
        """The loop took a turn: a sign of life; after its first, the first frame is on the panel."""
        self.liveness.beat()
        self.liveness.tell(self.describe())

    def describe(self) -> str:
        """One line for ``systemctl status``."""
        if self.mode == RECOVERY:
            codes = ", ".join(sorted({f.code for f in self.faults})) or "none"
            return f"recovery (faults: {codes}); the console answers, Status says what to fix"
        return f"{self.mode}: device {self.config.device.id}, window {self.config.device.window_no}"

    def health(self, now: float | None = None) -> str:
        """``""`` while healthy, else why not; systemd's watchdog is pinged only while healthy.

        Healthy: the loop (in recovery, the supervisor) turned lately, and the outbox answers a query.
        """
        age = self.liveness.age(now)
        if age > self.liveness.limit_s:
            return f"{'the device loop' if self.mode == RUNNING else 'the supervisor'} has not turned for {age:.0f} s"
        app = self.app
        if self.mode == RUNNING and app is not None:
            try:
                app.outbox.count("pending")
            except Exception as e:
                if not (self._stop.is_set() or self._rebuild.is_set()):  # else closed on purpose
                    return f"the outbox does not answer: {type(e).__name__}: {e}"
        return ""

    def transport_for(self, config: Config, key: Secret) -> Any:
        """A transport to the hall server as the apps make them (the console's uplink test)."""
        return (self.make_transport or http_transport)(config, key, config.upload.timeout_s)

    def status(self) -> dict[str, Any]:
        """The supervisor's part of ``Status``: mode and faults with their fix hints."""
        faults = [f.as_dict() for f in self.faults]
        if self.reverted is not None:
            faults.append(self.reverted.as_dict())
        return {"mode": self.mode, "faults": faults}


def _log_failure(what: str, error: Exception) -> None:
    """Expected failures (a missing panel, a pin library, a disk) in one line; anything else with its traceback."""
    if isinstance(error, EvaluatorError | ImportError | OSError) or "Pin" in type(error).__name__:
        logger.error("%s: %s: %s", what, type(error).__name__, error)
    else:
        logger.exception(what)
