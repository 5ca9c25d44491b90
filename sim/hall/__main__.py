"""``python -m sim.hall``: serve until SIGINT/SIGTERM, or run a supervisor's command.

Serve with ``python -m sim.hall --port 8080 --db hall.db --keys-file keys.toml``;
the supervisor's commands (``report``, ``export``, ``register``, ``fix``,
``extend``, ``reply``, ``appeal``, ``review``, ``pending``) are in
:mod:`sim.hall.commands`: ``python -m sim.hall report --db hall.db --month 2026-11``.
``--report YYYY-MM`` is the older spelling of the ``report`` command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import signal
import sys
import threading
import tomllib
from collections.abc import Sequence
from types import FrameType
from typing import Any

from sim.hall import commands, ledger, registry
from sim.hall.auth import load_keys_file
from sim.hall.contract import DEFAULT_MAX_BODY
from sim.hall.push import ProvincePush
from sim.hall.server import HallServer

logger = logging.getLogger(__name__)

DESCRIPTION = "The stand-in hall server: the device uplink contract v2 on loopback."


def load_halls(path: str) -> dict[str, str]:
    """The keys file's optional ``[halls]`` table: device id = hall id (the device's registration).

    Raises:
        OSError: the file cannot be read.
        ValueError: the table is not of that shape.
    """
    with open(path, "rb") as f:
        halls = tomllib.load(f).get("halls", {})
    if not isinstance(halls, dict) or not all(isinstance(v, str) and v for v in halls.values()):
        raise ValueError(f"{path}: [halls] must map device ids to hall ids")
    return halls


def register_halls(db_path: str, halls: dict[str, str]) -> None:
    """Set up the hall's own tables (and the heartbeat log) and register the keys file's halls."""
    if db_path == ":memory:":
        return
    db = ledger.connect(db_path)
    try:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        for device_id, hall in halls.items():
            registry.register(db, device_id, hall, now)
    finally:
        db.close()


EPILOG = f"""supervisor commands (each with --help): {', '.join(commands.COMMANDS)}
  e.g. python -m sim.hall report --db hall.db --month 2026-11"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim.hall", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="SQLite file for received events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--device-key", help="one key for every device (test use)")
    keys.add_argument("--keys-file", help="TOML: [devices] id = key, optional default_key")
    parser.add_argument("--assignment", help="JSON file served as every device's assignment")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (with --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--report", metavar="YYYY-MM",
                        help="print the month's report and exit (the same as the report command)")
    parser.add_argument("--province-url", metavar="URL",
                        help="push every rating, 追评 and unrated service to this provincial endpoint")
    parser.add_argument("--public-url", metavar="URL",
                        help="where citizens reach the phone page (/S/<code>) and its SMS links; the served URL "
                             "by default (docs/phone-page.md)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, or run a supervisor's command.

    Returns:
        The exit status; argument errors exit with 2 through argparse.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in commands.COMMANDS:
        logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        return commands.main(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.report:
        return commands.main(["report", "--db", args.db, "--month", args.report])

    device_keys: dict[str, str] = {}
    halls: dict[str, str] = {}
    default_key: str | None = args.device_key
    assignment: dict[str, Any] | None = None
    try:
        if args.keys_file:
            device_keys, default_key = load_keys_file(args.keys_file)
            halls = load_halls(args.keys_file)
        if args.assignment:
            with open(args.assignment, encoding="utf-8") as f:
                assignment = json.load(f)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if not device_keys and default_key is None:
        logger.warning("no device keys given: every request will be refused with 401")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # only a flag: the main loop below does the shutdown

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = HallServer(args.db, device_keys, default_key, host=args.host, port=args.port,
                        assignment=assignment, max_body=args.max_body, public_url=args.public_url,
                        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)
    province: ProvincePush | None = None
    try:
        register_halls(args.db, halls)  # after the server made its tables: the heartbeat log hooks on them
        server.start()
        if args.province_url and args.db != ":memory:":
            province = ProvincePush(args.db, args.province_url)  # polls the events table: no hook in the server
            province.start()
            if server.phone is not None:
                server.phone.on_stored = province.wake  # a rating on the phone goes out at once
        print(f"hall server listening on {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        if province is not None:
            province.close()
        server.close()
    logger.info("hall server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
