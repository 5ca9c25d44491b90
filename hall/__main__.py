"""``python -m hall``: serve until SIGINT/SIGTERM, or run a supervisor's command.

Serve with ``python -m hall --port 8080 --db hall.db --keys-file keys.toml``;
the hall's keys with ``python -m hall keys …`` (:func:`keys_main`: the
hall's own public key, the device public keys, ``keys import FILE`` of a
provisioning results CSV); the supervisor's commands (``report``, ``export``, ``register``, ``fix``,
``extend``, ``reply``, ``appeal``, ``review``, ``pending``) are in
:mod:`hall.commands`: ``python -m hall report --db hall.db --month 2026-11``.
``--report YYYY-MM`` is the older spelling of the ``report`` command.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from hall import commands, keys, ledger, registry
from hall.auth import load_keys_file
from hall.contract import DEFAULT_MAX_BODY
from hall.handler import Capacity
from hall.push import ProvincePush
from hall.server import HallServer

logger = logging.getLogger(__name__)

DESCRIPTION = "The hall back end: the device uplink contract v3."


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
  e.g. python -m hall report --db hall.db --month 2026-11
keys: python -m hall keys {{hall,list,import,add,remove}} --db hall.db (each with --help)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hall", description=DESCRIPTION, epilog=EPILOG,
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
    parser.add_argument("--public-url", action="append", metavar="URL",
                        help="the URL devices and citizens are given for this hall (repeatable): every request "
                             "must be signed for one of them, and the first is where the phone page (/S/<code>) "
                             "and its SMS links point; default: the URL bound")
    parser.add_argument("--hall-key", help="the hall's Ed25519 private key (PEM, 0600; made when missing); "
                                           "default: beside --db")
    parser.add_argument("--workers", type=int, default=Capacity.workers,
                        help="worker threads at most (a long poll holds one)")
    parser.add_argument("--report", metavar="YYYY-MM",
                        help="print the month's report and exit (the same as the report command)")
    parser.add_argument("--province-url", metavar="URL",
                        help="push every rating, 追评 and unrated service to this provincial endpoint")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, or run a supervisor's command.

    Returns:
        The exit status; argument errors exit with 2 through argparse.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "keys":
        logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        return keys_main(argv[1:])
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

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # only a flag: the main loop below does the shutdown

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    server = HallServer(args.db, device_keys, default_key, host=args.host, port=args.port,
                        assignment=assignment, max_body=args.max_body,
                        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
                        public_url=args.public_url, capacity=Capacity(workers=args.workers),
                        **({"hall_key_file": args.hall_key} if args.hall_key else {}))
    if not device_keys and default_key is None and not server.public_keys():
        logger.warning("no device keys (no shared keys, no public keys in %s): every request will be refused "
                       "with 401; see python -m hall keys --help", args.db)
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
        print(f"devices sign for {', '.join(server.public_urls)}; hall public key {server.hall_public_key} "
              f"({server.hall_fingerprint})", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        if province is not None:
            province.close()
        server.close()
    logger.info("hall server stopped")
    return 0


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hall keys",
        description="The hall's keys: its own Ed25519 public key (what devices are given as "
                    "upload.hall_public_key) and the registry of device public keys (several per device "
                    "during a rotation, every one accepted). No private device key is ever held.",
        epilog="""results file (from the provisioning tool): CSV with the header
  device_id,window_no,public_key,fingerprint,firmware,outcome,time
only rows whose outcome is ok are imported; a device's keys held stay valid (remove the old one
once the device signs with the new).""", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (("hall", "print the hall's public key and its fingerprint"),
                       ("list", "list the registered device public keys"),
                       ("import", "register the keys of a provisioning results CSV"),
                       ("add", "register one device public key"),
                       ("remove", "withdraw a device's key (or all its keys)")):
        one = sub.add_parser(name, help=text, description=text)
        one.add_argument("--db", required=True, help="the hall's SQLite file")
        if name == "hall":
            one.add_argument("--hall-key", help="the hall's key file (default: beside --db)")
        if name == "list":
            one.add_argument("--json", action="store_true")
            one.add_argument("device_id", nargs="?")
        if name == "import":
            one.add_argument("file", help="the provisioning results CSV")
        if name in ("add", "remove"):
            one.add_argument("device_id")
        if name == "add":
            one.add_argument("public_key", help="standard base64 of the 32 raw bytes")
        if name == "remove":
            one.add_argument("key", nargs="?", help="the key or its fingerprint; all the device's when left out")
    return parser


def keys_main(argv: Sequence[str]) -> int:
    """``python -m hall keys …``: 0 done, 1 refused (the reason on stderr), 2 bad arguments."""
    args = _keys_parser().parse_args(list(argv))
    if args.action == "hall":
        path = args.hall_key or keys.default_hall_key_path(args.db)
        try:
            private = keys.load_or_make_hall_key(path)
        except (OSError, ValueError) as e:
            print(f"cannot read the hall's key: {e}", file=sys.stderr)
            return 1
        text = keys.public_key_text(private.public_key())
        print(f"public_key {text}\nfingerprint {keys.fingerprint(text)}")
        return 0
    registry_ = keys.PublicKeys(args.db)
    try:
        if args.action == "list":
            held = registry_.list(args.device_id)
            if args.json:
                print(json.dumps([dataclasses.asdict(k) for k in held], ensure_ascii=False, indent=1))
            else:
                for k in held:
                    print(f"{k.device_id}\t{k.fingerprint}\t{k.public_key}\t{k.added_at}\t{k.source}")
            return 0
        if args.action == "import":
            try:
                rows, problems = keys.read_results(args.file)
            except (OSError, keys.KeyProblem) as e:
                print(f"not imported: {e}", file=sys.stderr)
                return 1
            for key in keys.import_results(registry_, rows, f"results {args.file.rsplit('/', 1)[-1]}"):
                print(f"imported {key.device_id} {key.fingerprint}")
            for problem in problems:
                print(problem, file=sys.stderr)
            print(f"{len(rows)} keys imported, {len(problems)} rows not imported")
            return 0 if rows or not problems else 1
        if args.action == "add":
            try:
                key = registry_.add(args.device_id, args.public_key, "command")
            except keys.KeyProblem as e:
                print(f"refused: {e}", file=sys.stderr)
                return 1
            print(f"added {key.device_id} {key.fingerprint}")
            return 0
        removed = registry_.remove(args.device_id, args.key)
        print(f"removed {removed} key(s) of {args.device_id}")
        return 0 if removed else 1
    finally:
        registry_.close()


if __name__ == "__main__":
    sys.exit(main())
