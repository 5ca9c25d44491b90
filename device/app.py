"""The composition root: configuration, logging, hardware, the loop.

``run()`` is the same for the Pi and the simulator; each entry point only
chooses the hardware. One thread runs the loop below and is the only one
that appends to the outbox; the uploader drains it from its own thread.
"""

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time

import uuid6

from device import __version__, clock
from device import config as config_mod
from device.errors import ConfigError, DisplayError, EvaluatorError, FontError, QRFitError, StorageError
from device.control import Call
from device.queue.hall import AssignmentChanged, HallLink, load_assignment, save_assignment
from device.queue.outbox import Outbox
from device.config import Secret
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from device.state import (
    IDLE, SERVICE, ButtonPressed, ButtonReleased, CommitDetail, CommitFailed, CommitRating, CommitUnrated, PressIgnored, RatingCommitted,
    Rules, State, StaffRequested, StorageChanged, Tick, next_deadline, step)
from device.ui import care
from device.ui.models import BootScreen, Indicators
from device.ui.screens import render
from device.view import Identity, View, view

logger = logging.getLogger(__name__)

#: Longest the loop sleeps with nothing to do (indicators refresh this often).
IDLE_WAKE_S = 1.0
#: The clock's sync status is read at most this often.
CLOCK_CHECK_S = 10.0


def check_screens(config, size):
    """Start-up check that what the configuration asks the screen to show can be shown.

    A character missing from the font, a QR URL too long for the panel or a
    name that cannot fit is a configuration error naming the key, found at
    start rather than as a blank box in front of a citizen.

    Raises:
        ConfigError: listing every problem.
        FontError: the font itself is not installed.
    """
    from device.ui import fonts
    from device.ui.layout import LayoutError
    from device.ui.models import IdleScreen

    fonts.check_fonts()
    problems = []
    texts = {
        "device.window_no": config.device.window_no,
        "device.window_name": config.device.window_name,
        "staff.name": config.staff.name,
        "staff.no": config.staff.no,
    }
    for level, tags in config.reasons.by_level().items():
        for n, (code, text) in enumerate(tags):
            texts[f"reasons.{level.value}[{n}]"] = text
    for key, text in texts.items():
        try:
            fonts.check_text(text, key)
        except FontError as e:
            problems.append((key, str(e).removeprefix(f"{key}: ")))
    bad = {key for key, _ in problems}
    shown = {key: "-" if key in bad else text for key, text in texts.items()}
    try:
        # The fullest idle screen: every indicator on, a five-digit backlog.
        render(IdleScreen(shown["device.window_no"], shown["device.window_name"], shown["staff.name"],
                          shown["staff.no"], config.qr.url, Indicators(True, 99999, True, True)), size)
    except QRFitError as e:
        problems.append(("qr.url", str(e)))
    except LayoutError as e:
        problems.append(("staff.name", f"cannot be laid out on a {size[0]}x{size[1]} display: {e}"))
    if problems:
        raise ConfigError(problems)


def load_key(path):
    """The device key from its file, as a :class:`Secret`; empty if there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            return Secret(f.read().strip())
    except FileNotFoundError:
        return Secret("")
    except OSError as e:
        raise ConfigError([("upload.key_file", f"cannot be read: {e.strerror}")]) from None


def new_session_request():
    """A 请评价 press opens a session with an id made here, outside the pure step."""
    return StaffRequested(str(uuid6.uuid7()))


class App:
    """The device: state machine, outbox, uploader and screen, wired together.

    Args:
        config: :class:`~device.config.Config`.
        hardware: :class:`~device.hardware.Hardware`.
        key: the device key (:class:`Secret`).
        monotonic: seconds, injectable.
        wall: the local wall clock (opening hours), injectable.
        synced: returns whether the wall clock is synchronised.
        transport: overrides the HTTP transport (tests).
    """

    def __init__(self, config, hardware, key, *, monotonic=time.monotonic, wall=clock.wall_now,
                 synced=clock.kernel_clock_synced, transport=None):
        check_screens(config, hardware.size)
        self.hardware = hardware
        #: The configuration as committed (files, overrides, console), before any assignment.
        self.committed_config = config
        self.key = key
        self.restart_requested = False
        self.button_test = None
        self._hold_until = 0.0
        self._stop = None
        self.events = hardware.events
        self.monotonic = monotonic
        self._synced_fn = synced
        self._synced = (0.0, False)
        self._set_config(config)
        self.started = monotonic()
        self.state = State()
        self.outbox = Outbox(config.outbox.path, max_events=config.outbox.max_events,
                             min_free_bytes=config.outbox.min_free_mb * 1024 * 1024)
        self.transport = transport or self._make_transport(config, key, config.upload.timeout_s)
        self.uploader = Uploader(
            self.outbox, self.transport, config.device.id, batch_size=config.upload.batch_size,
            backoff_min_s=config.upload.backoff_min_s, backoff_max_s=config.upload.backoff_max_s,
            heartbeat_s=config.upload.heartbeat_s, retain_days=config.outbox.retain_days,
            synced=self.clock_synced)
        self.has_key = bool(key)
        # The hall server's assignment wins over the configured identity; the
        # last one is kept beside the outbox for a reboot without network.
        self.assignment_path = os.path.join(os.path.dirname(os.path.abspath(config.outbox.path)),
                                            "assignment.json")
        kept = load_assignment(self.assignment_path)
        if kept is not None:
            self.apply_assignment(kept, save=False)
        self.hall_link = HallLink(
            self._make_transport(config, key, HallLink.POLL_WAIT_S + 10), config.device.id, self.events,
            hall_mode=self.rules.source == "hall", etag=kept.etag if kept else "")
        self._uplink_started = False
        self._checkpointed_at = self.started
        d, h = config.display, config.hours
        self.care_config = care.CareConfig(
            shift_every_s=d.shift_every_s, contrast=d.contrast, dim_contrast=d.dim_contrast,
            dim_after_s=d.dim_after_s, open_days=h.open_days, open_from=h.open_from,
            open_until=h.open_until, closed_dates=h.closed_dates)
        self.wall = wall
        self.last_activity = self.started
        self._care = care.CareState(contrast=-1)
        #: Buttons whose press only woke the panel; their release is not a rating either.
        self._waking = set()
        self._model = None
        self._frame = None

    # --- the loop -----------------------------------------------------------

    def run(self, stop):
        """Run until ``stop`` (a threading.Event) is set."""
        self._stop = stop
        self.show(BootScreen(__version__))
        self._start_uplink()
        logger.info("device %s ready: window %s, session source %s", self.config.device.id,
                    self.config.device.window_no, self.rules.source)
        try:
            self.refresh()
            while not stop.is_set():
                try:
                    event = self.events.get(timeout=self._timeout())
                except queue.Empty:
                    event = None
                try:
                    self.handle(Tick() if event is None else event)
                    self.refresh()
                    if event is None:
                        self._housekeeping()
                except Exception:
                    # One bad step (a bus glitch, a bug) must not end rating:
                    # what was committed is on disk; log it and go on.
                    logger.exception("device loop: error handling %r", event)
                finally:
                    if event is not None:
                        # Lets a driver wait (queue.join) until its inputs are handled.
                        self.events.task_done()
        finally:
            self.hall_link.stop(timeout=2)
            self.uploader.stop(timeout=5)
            self.outbox.close()

    #: How often the idle loop copies the outbox's WAL into the database.
    CHECKPOINT_EVERY_S = 30.0

    def _housekeeping(self):
        """Work kept off the press path: done when the loop waited for nothing."""
        now = self.monotonic()
        if self.state.screen == IDLE and now - self._checkpointed_at >= self.CHECKPOINT_EVERY_S:
            self._checkpointed_at = now
            self.outbox.checkpoint()

    def _start_uplink(self):
        if not self.has_key:
            logger.warning("no device key provisioned: ratings are kept but not uploaded")
            return
        if not self._uplink_started:
            self._uplink_started = True
            self.uploader.start()
            self.hall_link.start()

    def _make_transport(self, config, key, timeout):
        u = config.upload
        return HttpTransport(u.server, config.device.id, key, timeout=timeout,
                             verify=u.ca_bundle or u.verify_tls)

    def reconfigure(self, config, key=None):
        """Take a committed configuration (and key) into use; returns keys needing a restart.

        Runs on the loop thread (the console hands it over as a Call).
        """
        from device.control import needs_restart

        check_screens(config, self.hardware.size)
        restart = needs_restart(self.committed_config, config)
        old = self.committed_config
        self.committed_config = config
        kept = load_assignment(self.assignment_path)
        self._set_config(config)
        if kept is not None:
            self.apply_assignment(kept, save=False)
        if key is not None:
            self.key = key
            self.has_key = bool(key)
        if key is not None or old.upload != config.upload or old.device.id != config.device.id:
            # New server or key: new transports; the threads pick them up on their next request.
            self.uploader.transport = self.transport = self._make_transport(
                config, self.key, config.upload.timeout_s)
            self.hall_link.transport = self._make_transport(config, self.key, HallLink.POLL_WAIT_S + 10)
            self.uploader.device_id = self.hall_link.device_id = config.device.id
            self.uploader.status.fault = ""
            if self._stop is not None:
                self._start_uplink()
            self.uploader.wake()
        logger.info("configuration applied%s", f"; restart needed for {', '.join(restart)}" if restart else "")
        self.refresh()
        return restart

    TEST_PATTERN_S = 3.0

    def show_test_pattern(self):
        """A checkerboard (every pixel lit once across two frames' worth) for a few seconds."""
        from PIL import Image

        w, h = self.hardware.size
        pattern = Image.new("1", (w, h))
        pattern.putdata([((x // 4 + y // 4) % 2) * 255 for y in range(h) for x in range(w)])
        self.hardware.display.show(pattern)
        self._hold_until = self.monotonic() + self.TEST_PATTERN_S
        self._model = None

    def set_button_test(self, q):
        """While a queue is set, presses go to it (the console's button test), not to rating."""
        self.button_test = q

    def request_restart(self):
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    def faults(self):
        """What is wrong now, for the console (never secrets): the heartbeat's list."""
        faults = [] if self.has_key else ["no device key"]
        return faults + self.uploader.heartbeat_body()["faults"]

    def pump(self):
        """Handle every input already queued, then redraw (tests and tools)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.handle(event)
            self.events.task_done()
        self.handle(Tick())
        self.refresh()
        self._housekeeping()

    def _timeout(self):
        now = self.monotonic()
        wake = now + IDLE_WAKE_S
        deadline = next_deadline(self.state, self.rules)
        if deadline is not None:
            wake = min(wake, deadline)
        countdown = self.state.session.deadline if self.state.session else (
            self.state.screen_until if self.state.screen == "reasons" else None)
        if countdown is not None:
            # The countdown on the screen changes every whole second.
            wake = min(wake, now + ((countdown - now) % 1.0 or 1.0))
        return max(0.0, wake - now)

    def _set_config(self, config):
        self.config = config
        self.identity = Identity.from_config(config)
        self.reasons = config.reasons.by_level()
        self.reasons_version = config.reasons.version
        self.rules = Rules.from_config(config, self.reasons)

    def apply_assignment(self, assignment, save=True):
        """Show the hall's window, staff, QR and reasons, if the screen can show them."""
        config = assignment.apply_to(self.config)
        try:
            check_screens(config, self.hardware.size)
        except ConfigError as e:
            logger.error("assignment from the hall server not applied: %s", e)
            return False
        self._set_config(config)
        if save:
            try:
                save_assignment(self.assignment_path, assignment)
            except OSError as e:
                logger.warning("assignment applied but not kept across reboots: %s", e)
        logger.info("assignment: window %s, staff %s (%s)", assignment.window_no, assignment.staff_no,
                    assignment.staff_name)
        return True

    def handle(self, event):
        """Step the state machine with one input and carry out its effects."""
        if isinstance(event, AssignmentChanged):
            self.apply_assignment(event.assignment)
            return
        if isinstance(event, Call):
            event.run()
            return
        if self.button_test is not None and isinstance(event, (ButtonPressed, ButtonReleased)):
            # The technician's button test: presses are reported, never rated.
            if isinstance(event, ButtonPressed):
                self.button_test.put(event.button)
            return
        now = self.monotonic()
        if isinstance(event, (ButtonPressed, ButtonReleased)):
            self.last_activity = now
            # A press on a sleeping panel only wakes it: nobody could see what they rated.
            if isinstance(event, ButtonPressed) and self._care.asleep:
                self._waking.add(event.button)
                return
            if event.button in self._waking:
                self._waking.discard(event.button)
                return
        self.state, effects = step(self.state, event, now, self.rules)
        for effect in effects:
            self._execute(effect)

    def _execute(self, effect):
        if isinstance(effect, CommitRating):
            try:
                event = self.outbox.append(self._rating_fields(effect))
            except StorageError as e:
                logger.error("rating not kept: %s", e)
                self.handle(CommitFailed(str(e)))
                return
            logger.info("rating %s kept as seq %d%s", effect.level.value, event["seq"],
                        " (suspect)" if effect.suspect else "")
            # Straight back into the machine: thanks only now that it is on disk.
            self.handle(RatingCommitted(effect.level, event["id"]))
            self.uploader.wake()
        elif isinstance(effect, CommitUnrated):
            try:
                event = self.outbox.append(self._base_fields("unrated", effect.session))
                logger.info("session %s expired unrated; kept as seq %d", effect.session.session_id,
                            event["seq"])
                self.uploader.wake()
            except StorageError as e:
                logger.error("unrated session not kept: %s", e)
        elif isinstance(effect, CommitDetail):
            fields = self._base_fields("detail", effect.session)
            fields.update(rating_id=effect.rating_id, reason_codes=list(effect.reason_codes),
                          reasons_version=self.reasons_version)
            try:
                event = self.outbox.append(fields)
                logger.info("reason %s for rating %s kept as seq %d", ",".join(effect.reason_codes),
                            effect.rating_id, event["seq"])
                self.uploader.wake()
            except StorageError as e:
                logger.error("reason not kept: %s", e)
        elif isinstance(effect, PressIgnored):
            logger.info("press of button %d ignored: %s", effect.button, effect.why)

    def _base_fields(self, event_type, session):
        c = self.config
        fields = {
            "id": str(uuid6.uuid7()),
            "type": event_type,
            "device_id": c.device.id,
            "window_no": c.device.window_no,
            "staff_no": c.staff.no,
            "staff_name": c.staff.name,
            "occurred_at": clock.iso(clock.wall_now()),
            "clock_synced": self.clock_synced(),
            "boot_id": clock.boot_id(),
            "mono_ms": clock.mono_ms(),
        }
        if session is not None:
            fields.update(session_id=session.session_id, ticket=session.ticket,
                          project_no=session.project_no, task_code=session.task_code,
                          task_name=session.task_name)
        return fields

    def _rating_fields(self, effect):
        fields = self._base_fields("rating", effect.session)
        fields.update(level=effect.level.value, satisfaction=effect.level.satisfaction,
                      channel=self.config.device.channel, assess_number=1, suspect=effect.suspect)
        return fields

    def clock_synced(self):
        checked_at, value = self._synced
        now = self.monotonic()
        if not checked_at or now - checked_at > CLOCK_CHECK_S:
            value = bool(self._synced_fn())
            self._synced = (now, value)
        return value

    # --- the screen -----------------------------------------------------------

    def indicators(self, storage):
        """The idle screen's marks; ``storage`` is the outbox's storage state."""
        status = self.uploader.status
        return Indicators(
            offline=status.online is False or bool(status.fault) or not self.has_key,
            backlog=self.outbox.waiting(),
            clock_unset=not self.clock_synced(),
            storage_low=storage != "ok")

    def refresh(self):
        """Redraw when what the screen should show has changed."""
        storage, reason = self.outbox.storage_state()
        full = storage == "full"
        if full != bool(self.state.storage_full):
            self.handle(StorageChanged(full, reason if full else ""))
        # Indicators show on the idle screen only: not worked out on the way to thanks.
        idle = self.state.screen == IDLE and self.state.session is None
        info = View(self.identity, self.indicators(storage) if idle else Indicators(), reasons=self.reasons,
                    service_lines=self.service_lines() if self.state.screen == SERVICE else ())
        now = self.monotonic()
        if self.state.screen != IDLE:
            self.last_activity = now
        # Opening hours mean nothing on a clock that is not set yet: stay awake.
        state = care.care(self.wall(), self.last_activity, now, self.care_config)
        if not self.clock_synced():
            state = care.CareState(state.shift, state.contrast, False)
        self.apply_care(state)
        if now < self._hold_until:
            return  # the display test pattern stays up
        self.show(view(self.state, info, now))

    def apply_care(self, state):
        """OLED care: sleep outside hours, dim when idle, move the frame now and then."""
        old, self._care = self._care, state
        display = self.hardware.display
        if state.asleep != old.asleep:
            display.sleep() if state.asleep else display.wake()
            logger.info("panel %s", "asleep outside opening hours" if state.asleep else "awake")
        if state.contrast != old.contrast:
            display.contrast(state.contrast)
        if state.shift != old.shift and self._frame is not None:
            self._send(self._frame)

    def _send(self, frame):
        try:
            self.hardware.display.show(care.apply_shift(frame, self._care.shift))
        except DisplayError as e:
            # Draw again at the next change; the device goes on taking ratings.
            logger.error("%s", e)
            self._model = None

    def service_lines(self):
        """The technician's screen: identity, addresses, version, backlog; never secrets."""
        c, status = self.config, self.uploader.status
        return (
            f"ID {c.device.id}",
            f"IP {_local_address()}",
            f"固件 {__version__}",
            f"待传 {self.outbox.waiting()}",
            f"上传 {status.last_upload_at[11:19] or '无'}",
        )

    def show(self, model):
        if model == self._model:
            return
        self._model = model
        self._frame = render(model, self.hardware.size)
        self._send(self._frame)
        logger.info("screen: %s", type(model).__name__.removesuffix("Screen").lower())


def _local_address():
    """IPv4 addresses of the network interfaces other than loopback (Linux ioctl)."""
    import fcntl
    import socket
    import struct

    addresses = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:  # SIOCGIFADDR fails for interfaces without an address
                continue
            addresses.append(socket.inet_ntoa(packed[20:24]))
    return " ".join(addresses) or "-"


def parse_args(argv, prog="evaluator", description="Window Evaluator device"):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", action="append", default=[], metavar="PATH",
                        help="a TOML configuration file (may be given more than once)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="SECTION.KEY=VALUE", help="override one configuration key")
    return parser


def setup_logging(level):
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_config_or_exit(args, prog="evaluator"):
    """Load the configuration; on error print every bad key and exit 2."""
    paths = args.config
    if not paths and os.path.exists("/etc/window-evaluator/config.toml"):
        paths = args.config = ["/etc/window-evaluator/config.toml"]
    try:
        return config_mod.load(paths, args.overrides)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(2)


def install_signal_handlers(stop):
    """SIGTERM and SIGINT only set the stop flag; the loop ends cleanly."""
    def handler(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(store, make_hardware, stop, *, console_port=None, network=None, control=None,
          rebuild_hardware=True):
    """Run the device until ``stop``, restarting in-process when the console asks.

    Args:
        store: the :class:`~device.settings.SettingsStore`: files, overrides and the
            technician's committed overlay; loaded again at each restart.
        make_hardware: ``config -> Hardware``, called once.
        stop: a threading.Event.
        console_port: a pyserial-like port for the technician's console, or None.
        network: the Wi-Fi backend for Improv.
        control: the :class:`~device.control.AppControl` to keep pointing at the
            current app (the simulator reads it too).
        rebuild_hardware: close and make the hardware again at each restart, so
            that committed display and button settings take effect.
    """
    from device.console import Console
    from device.control import AppControl
    from device.settings import PinStore

    control = control or AppControl()
    console = hardware = None
    try:
        while True:
            config = store.load()
            if hardware is None:
                hardware = make_hardware(config)
            app = App(config, hardware, load_key(config.upload.key_file))
            control.app = app
            if console is None and console_port is not None:
                pins = PinStore(os.path.join(os.path.dirname(os.path.abspath(config.upload.key_file)),
                                             "console.pin"))
                console = Console(console_port, control, store, pins, network=network)
                if set(hardware.buttons.held()) >= {1, 5}:
                    # Buttons 1 and 5 held at power-on: a technician is at the device.
                    console.grant_presence()
                console.start()
            app.run(stop)
            if not app.restart_requested:
                return
            logger.info("restarting with the committed configuration")
            if rebuild_hardware:
                hardware.close()
                hardware = None
            stop.clear()
    finally:
        if console is not None:
            console.stop()
        if hardware is not None:
            hardware.close()


def main(argv=None):
    """``evaluator``: the device on a Raspberry Pi."""
    args = parse_args(argv).parse_args(argv)
    config = load_config_or_exit(args)
    setup_logging(config.log.level)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        from device.drivers.serial_port import SerialPortError, open_serial
        from device.hardware import make_pi_hardware
        from device.network import NmcliBackend
        from device.settings import SettingsStore

        store = SettingsStore(config.console.settings_path, args.config, args.overrides)
        try:
            port = open_serial(config.console.port, config.console.baudrate)
        except SerialPortError as e:
            logger.warning("no technician console: %s", e)
            port = None
        events = queue.Queue()
        serve(store, lambda c: make_pi_hardware(c, events, new_session_request), stop,
              console_port=port, network=NmcliBackend())
    except ConfigError as e:
        print(f"evaluator: {e}", file=sys.stderr)
        return 2
    except EvaluatorError as e:
        logger.error("%s", e)
        return 1
    return 0
