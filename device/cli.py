"""``evaluator`` / ``python -m device``: the device program on a Raspberry Pi.

Parses the arguments, sets up logging (the only place that does), opens the
serial console and hands everything to the :class:`~device.supervisor.Supervisor`,
telling systemd how it goes (:mod:`device.notify`). ``evaluator doctor``
checks an installed device instead (:mod:`device.doctor`).
A configuration that cannot be loaded does not stop the program: the
supervisor starts in recovery with the console up, so a technician can
repair it over the cable.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from device import __version__
from device import config as config_mod
from device.drivers.serial_port import open_serial
from device.errors import ConfigError, SerialPortError
from device.hardware import make_pi_hardware, staff_request
from device.layout import SYSTEM_CONFIG
from device.network import NmcliBackend
from device.notify import Notifier
from device.preflight import start_report
from device.settings import SettingsStore

logger = logging.getLogger(__name__)

__all__ = ["SYSTEM_CONFIG", "check", "install_signal_handlers", "main", "parse_args", "setup_logging"]


def parse_args(argv: Sequence[str] | None, prog: str = "evaluator",
               description: str = "Window Evaluator device") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog="evaluator doctor [--config PATH] [--set ...]: check this device's parts one by one "
               "(panel, pins, font, data, settings, hall server, clock, console) with a fix for each")
    parser.add_argument("--config", action="append", default=[], metavar="PATH",
                        help="a TOML configuration file (may be given more than once)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="SECTION.KEY=VALUE", help="override one configuration key")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration (and the committed settings) as a start would, then exit: "
                             "0 if it would start, 2 naming every bad key")
    return parser


def setup_logging(level: str, path: str | None = None) -> None:
    """Log lines at ``level`` and above to stderr (the journal under systemd), or to the file ``path``."""
    target: dict[str, Any] = {"filename": path} if path else {"stream": sys.stderr}
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", **target)


def install_signal_handlers(stop: threading.Event, notifier: Notifier | None = None) -> None:
    """SIGTERM and SIGINT only set the stop flag (and tell systemd); the loop ends cleanly.

    The loop finishes the input in hand (a rating being committed is
    committed), then the supervisor leaves 暂停服务 on the panel.
    """
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if notifier is not None:
            notifier.stopping("stopping: finishing the input in hand")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """The device: the console first, then the rest under the supervisor."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        from device import doctor  # noqa: PLC0415 -- heavy: the whole program (app, uplink, integrity); the console starts without it

        return doctor.main(argv[1:])
    args = parse_args(argv).parse_args(argv)
    if not args.config and os.path.exists(SYSTEM_CONFIG):
        args.config = [SYSTEM_CONFIG]
    if args.check:
        return check(args.config, args.overrides)
    try:
        config = config_mod.load(args.config, args.overrides)
    except ConfigError as e:
        # Still start: the console comes up on the default port, in recovery,
        # so the device can be repaired over the cable.
        print(f"evaluator: {e}\nevaluator: starting in recovery", file=sys.stderr)
        config = config_mod.load()
    setup_logging(config.log.level)

    notifier = Notifier.from_environment()
    stop = threading.Event()
    install_signal_handlers(stop, notifier)
    store = SettingsStore(config.console.settings_path, args.config, args.overrides)
    try:
        port = open_serial(config.console.port, config.console.baudrate)
    except SerialPortError as e:
        logger.warning("no technician console: %s", e)
        port = None
    from device.supervisor import Supervisor  # noqa: PLC0415 -- heavy: the whole device; --version, --check, doctor never need it

    events: queue.Queue[Any] = queue.Queue()
    Supervisor(store, lambda c: make_pi_hardware(c, events, staff_request), events=events,
               console_port=port, network=NmcliBackend(), notifier=notifier).run(stop)
    return 0


def check(paths: list[str], overrides: list[str]) -> int:
    """``evaluator --check``: what a start would find wrong with the configuration, without starting.

    The same report as the doctor's (:func:`device.preflight.start_report`): exit 2 only for what would
    stop a start; a start that would lack something (no device key yet) is said, and exits 0.
    """
    report = start_report(paths, overrides)
    for line in report.lines():
        print(f"evaluator: {line}", file=sys.stdout if report.would_start else sys.stderr)
    return 0 if report.would_start else 2
