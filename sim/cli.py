"""``evaluator-sim`` / ``python -m sim``: the whole device on any Linux machine.

The unchanged device code runs on MockFactory pins and a luma ``dummy``
display, talking through a cuttable loopback link to the embedded stand-in
hall server (or to ``--server URL``). Driven by the keyboard on a TTY, by
``--script FILE``, or by script lines on stdin.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import secrets
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from device import __version__
from device import config as config_mod
from device import keys as keys_mod
from device.cli import install_signal_handlers, setup_logging
from device.errors import ConfigError, EvaluatorError
from device.hardware import staff_request
from device.settings import SettingsStore
from device.supervisor import Supervisor
from hall import HallServer
from sim import script as script_mod
from sim.hardware import make_sim_hardware
from sim.network import NetworkLink
from sim.pty_port import PtyPort
from sim.terminal import TerminalScreen, raw_keys
from sim.wifi import FakeNetworkBackend

if TYPE_CHECKING:
    from device.app import App

logger = logging.getLogger("sim")

DEMO_SCRIPT = """\
# The built-in demo: every level once, one of them while the network is down.
press 1
wait 2.2
press 2
wait 2.2
network down
press 3
wait 2.2
press 4
wait 2.2
network up
press 5
wait 2
"""
#: The demo compresses time: a short lockout (and burst window) so it takes seconds.
DEMO_OVERRIDES = ['session.source="free"', "session.min_interval_s=2", "session.thanks_s=1.5",
                  "session.suspect_window_s=5"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluator-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", action="append", default=[], metavar="PATH",
                        help="a TOML configuration file (may be given more than once)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="SECTION.KEY=VALUE", help="override one configuration key")
    parser.add_argument("--script", metavar="FILE",
                        help="run this script, then exit once every event is delivered")
    parser.add_argument("--demo", action="store_true",
                        help="run the built-in scenario and print what the hall server stored")
    parser.add_argument("--frames", metavar="DIR", help="save each new frame as PNG here")
    parser.add_argument("--data", metavar="DIR",
                        help="where the device keeps its database (default: a new temporary folder)")
    parser.add_argument("--server", metavar="URL", help="use this hall server instead of the embedded one")
    parser.add_argument("--device-key", metavar="KEY",
                        help="the shared device key (hmac-sha256; else kept in DATA/device.key)")
    parser.add_argument("--signature", choices=keys_mod.SIGNATURES,
                        help="how the device signs: its own Ed25519 key pair (the default where the embedded "
                             "hall holds public keys, without --device-key) or the shared key")
    parser.add_argument("--hall-public-key", metavar="BASE64",
                        help="with --server and --signature ed25519: the hall's Ed25519 public key")
    parser.add_argument("--report", metavar="FILE",
                        help="at exit, write the stand-in server's stored events as JSON")
    parser.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="after a script, how long to wait for every event to be delivered")
    return parser.parse_args(argv)


def prepare_key(data_dir: str, given: str | None) -> tuple[str, str]:
    """The device key file in the data folder (mode 0600); made up if none is given."""
    path = os.path.join(data_dir, "device.key")
    if given is not None:
        key = given
    elif os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return path, f.read().strip()
    else:
        key = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key)
    return path, key


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.script and args.demo:
        print("evaluator-sim: give --script or --demo, not both", file=sys.stderr)
        return 2
    commands = None
    if args.script or args.demo:
        try:
            if args.demo:
                text = DEMO_SCRIPT
            else:
                with open(args.script, encoding="utf-8") as f:
                    text = f.read()
            commands = script_mod.parse(text)
        except OSError as e:
            print(f"evaluator-sim: cannot read script {args.script}: {e.strerror}", file=sys.stderr)
            return 2
        except script_mod.ScriptError as e:
            print(f"evaluator-sim: bad script {args.script}:\n{e}", file=sys.stderr)
            return 2
    interactive = commands is None and sys.stdin.isatty() and sys.stdout.isatty()

    # Check the user's configuration before anything starts.
    user_overrides = (DEMO_OVERRIDES if args.demo else []) + args.overrides
    try:
        config_mod.load(args.config, user_overrides)
    except ConfigError as e:
        print(f"evaluator-sim: {e}", file=sys.stderr)
        return 2

    data_dir = os.path.abspath(args.data) if args.data else tempfile.mkdtemp(prefix="evaluator-sim-")
    os.makedirs(data_dir, exist_ok=True)
    key_path, key = prepare_key(data_dir, args.device_key)

    # Interactive: the terminal shows the panel; log lines would scroll it away, so they go to a file.
    log_path = os.path.join(data_dir, "sim.log") if interactive else None
    setup_logging("INFO", log_path)

    # The device's own key pair lives in the data folder; the embedded hall registers its public key.
    private_key_file = os.path.join(data_dir, "device-ed25519.pem")
    hall = None
    if args.server:
        target = urllib.parse.urlsplit(args.server)
        scheme = target.scheme
        link = NetworkLink(target.hostname or "", target.port or (443 if scheme == "https" else 80))
    else:
        # The device reaches the hall through the cuttable link, so the link's URL is the one it signs:
        # the hall is told so (a hall that checks @target-uri against the URL it serves).
        scheme = "http"
        link = NetworkLink("127.0.0.1", 0)
        hall = HallServer(os.path.join(data_dir, "hall.db"), default_key=key,
                          public_url=f"http://{link.address[0]}:{link.address[1]}")
        hall.start()
        print(f"stand-in hall server: {hall.url}", flush=True)
        bound = urllib.parse.urlsplit(hall.url)
        link.target = (bound.hostname or "127.0.0.1", bound.port or 80)
    server_url = f"{scheme}://{link.address[0]}:{link.address[1]}"
    try:
        signing = _signing_overrides(args, hall, user_overrides, private_key_file)
    except (ValueError, EvaluatorError) as e:
        print(f"evaluator-sim: {e}", file=sys.stderr)
        link.close()
        if hall is not None:
            hall.close()
        return 2

    overrides = [
        *user_overrides,
        f"outbox.path={json.dumps(os.path.join(data_dir, 'outbox.db'))}",
        f"upload.key_file={json.dumps(key_path)}",
        f"upload.server={json.dumps(server_url)}",
        f"console.settings_path={json.dumps(os.path.join(data_dir, 'settings.toml'))}",
        *signing,
    ]
    store = SettingsStore(os.path.join(data_dir, "settings.toml"), args.config, overrides)
    stop = threading.Event()
    install_signal_handlers(stop)
    terminal = None
    if interactive:
        terminal = TerminalScreen()
    port = PtyPort()
    try:
        config = store.load()
        events: queue.Queue[Any] = queue.Queue()
        hardware, factory = make_sim_hardware(
            config, events, staff_request, frames_dir=args.frames,
            on_frame=terminal.show if terminal else None)
    except EvaluatorError as e:
        print(f"evaluator-sim: {e}", file=sys.stderr)
        _close(link, hall, port)
        return 2 if isinstance(e, ConfigError) else 1
    print(f"device {config.device.id}, window {config.device.window_no}, data in {data_dir}", flush=True)
    print(f"console: {port.path}", flush=True)
    console_note = f"console {port.path} (picocom --echo {port.path})"
    if terminal is not None:
        terminal.set_status(f"{console_note}  network up")

    # The simulated pins and panel stay for the whole run (the script drives
    # these pins); display and button settings apply at the next start.
    supervisor = Supervisor(store, lambda _config: hardware, events=events, console_port=port,
                            network=FakeNetworkBackend(), rebuild_hardware=False)
    control = supervisor
    driver = script_mod.Driver(factory, config, link, stop, hall=hall)
    outcome: dict[str, Any] = {}
    if commands is not None:
        feeder = threading.Thread(
            target=_run_script, args=(commands, driver, control, stop, args.drain_timeout, outcome),
            name="script", daemon=True)
    elif interactive:
        feeder = threading.Thread(target=_run_keys, args=(driver, terminal, link, stop, console_note),
                                  name="keys", daemon=True)
    else:
        feeder = threading.Thread(target=_run_stdin, args=(driver, control, stop, args.drain_timeout, outcome),
                                  name="stdin", daemon=True)
    feeder.start()
    rc = 0
    try:
        supervisor.run(stop)
    except EvaluatorError as e:
        print(f"evaluator-sim: {e}", file=sys.stderr)
        rc = 2 if isinstance(e, ConfigError) else 1
    finally:
        stop.set()
        _close(link, None, port)
        if terminal is not None:
            terminal.close()
            print(f"log: {log_path}")
    if outcome.get("undelivered"):
        print(f"evaluator-sim: {outcome['undelivered']} events not delivered within "
              f"{args.drain_timeout:g} s", file=sys.stderr)
        rc = 1
    if outcome.get("rejected"):
        # A dead letter is a rating the hall will never hold: never "drained".
        print(f"evaluator-sim: {outcome['rejected']} events were given up (dead letters; the hall named "
              f"them rejected)", file=sys.stderr)
        rc = rc or DEAD_LETTERS_RC
    if outcome.get("error"):
        print(f"evaluator-sim: {outcome['error']}", file=sys.stderr)
        rc = 2
    if hall is not None:
        stored = hall.events()
        if args.report:
            with open(args.report, "w", encoding="utf-8") as f:
                json.dump(stored, f, ensure_ascii=False, indent=1)
        if args.demo:
            print_table(stored)
        hall.stop()
    elif args.report:
        print("evaluator-sim: --report needs the embedded hall server", file=sys.stderr)
    return rc


#: The exit status when the run ends with dead letters in the outbox.
DEAD_LETTERS_RC = 3


def _signing_overrides(args: argparse.Namespace, hall: HallServer | None, user_overrides: list[str],
                       private_key_file: str) -> list[str]:
    """``--set`` lines for the signature: ed25519 with the hall's public key, or the shared key.

    With the embedded hall, ed25519 is the default where that hall holds
    device public keys (and no ``--device-key`` asks for the shared key):
    the device's key pair is made in the data folder and its public key
    registered with the hall.
    """
    holds_public_keys = hall is not None
    signature = args.signature
    if signature is None:
        signature = keys_mod.ED25519 if holds_public_keys and args.device_key is None else keys_mod.HMAC_SHA256
    sets = [f"upload.signature={json.dumps(signature)}",
            f"upload.private_key_file={json.dumps(private_key_file)}"]
    if signature == keys_mod.HMAC_SHA256:
        return sets
    if hall is not None:
        device_id = config_mod.load(args.config, user_overrides).device.id
        own = keys_mod.device_keys(private_key_file)
        hall.add_public_key(device_id, own.info().public_key)
        hall_key = hall.hall_public_key
        print(f"device key {own.info().fingerprint} registered with the stand-in hall", flush=True)
    else:
        if not args.hall_public_key:
            raise ValueError("--signature ed25519 with --server needs --hall-public-key")
        hall_key = args.hall_public_key
    return [*sets, f"upload.hall_public_key={json.dumps(hall_key)}"]


def _close(link: NetworkLink, hall: HallServer | None, port: Any) -> None:
    link.close()
    port.close()
    if hall is not None:
        hall.close()


def _current_app(control: Supervisor, stop: threading.Event) -> App | None:
    """The running app, once the device has started (None if it stopped first)."""
    script_mod.sleep_until(lambda: control.app is not None or stop.is_set(), 30)
    return control.app


def _wait_delivered(control: Supervisor, stop: threading.Event, timeout: float,
                    outcome: dict[str, Any] | None = None) -> int:
    """Every queued input handled, then every event delivered (or timeout); dead letters into ``outcome``."""
    app = _current_app(control, stop)
    if app is None:
        return 0
    app.events.join()
    delivered = script_mod.sleep_until(lambda: app.outbox.waiting() == 0 or stop.is_set(), timeout)
    if outcome is not None:
        outcome["rejected"] = app.outbox.count("rejected")
    return 0 if delivered else app.outbox.waiting()


def _run_script(commands: list[script_mod.Command], driver: script_mod.Driver, control: Supervisor,
                stop: threading.Event, drain_timeout: float, outcome: dict[str, Any]) -> None:
    try:
        _current_app(control, stop)
        for command in commands:
            if stop.is_set():
                return
            driver.run(command)
        outcome["undelivered"] = _wait_delivered(control, stop, drain_timeout, outcome)
    except Exception as e:  # the script thread must end the run, never hang it
        logger.exception("script failed")
        outcome["error"] = str(e)
    finally:
        stop.set()


def _run_stdin(driver: script_mod.Driver, control: Supervisor, stop: threading.Event, drain_timeout: float,
               outcome: dict[str, Any]) -> None:
    """Script lines from a pipe; a bad line is reported and skipped."""
    _current_app(control, stop)
    for number, line in enumerate(sys.stdin, start=1):
        if stop.is_set():
            return
        try:
            command = script_mod.parse_line(line, number)
        except script_mod.ScriptError as e:
            print(f"evaluator-sim: {e}", file=sys.stderr, flush=True)
            continue
        if command is not None:
            driver.run(command)
    outcome["undelivered"] = _wait_delivered(control, stop, drain_timeout, outcome)
    stop.set()


def _run_keys(driver: script_mod.Driver, terminal: Any, link: NetworkLink, stop: threading.Event,
              console_note: str = "") -> None:
    keymap = {str(n): n for n in range(1, 6)}
    with raw_keys() as read_key:
        while not stop.is_set():
            key = read_key().lower()
            if key in keymap:
                driver.run(script_mod.Command("press", keymap[key]))
            elif key == "s":
                driver.run(script_mod.Command("staff"))
            elif key == "n":
                link.down() if link.is_up else link.up()
                terminal.set_status(f"{console_note}  network {'up' if link.is_up else 'DOWN'}")
            elif key in ("q", "\x03", "\x04"):
                stop.set()


def print_table(events: list[dict[str, Any]]) -> None:
    """What the hall server stored, as a short table."""
    print()
    print("The stand-in hall server stored:")
    print(f"{'seq':>4}  {'type':<8} {'level':<20} {'satisfaction':>12}  {'window':<6} {'suspect':<7} occurred_at")
    for e in events:
        suspect = "yes" if e.get("suspect") else "-"
        print(f"{e['seq']:>4}  {e['type']:<8} {e.get('level', '-'):<20} {e.get('satisfaction', '-'):>12}  "
              f"{e['window_no']:<6} {suspect:<7} {e['occurred_at']}")
    print(f"{len(events)} events")
