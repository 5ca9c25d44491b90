"""The ``evaluator-provision`` command line."""

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from device import __version__
from device.drivers.serial_port import open_serial
from device.errors import ProvisionError, SerialPortError
from provision import EXIT_OK, EXIT_PORT, EXIT_USAGE
from provision.batch import HmacKeys, walk
from provision.profiles import CSV_HELP, check_csv, find_row, load_profile
from provision.run import provision
from provision.session import DeviceSession

EPILOG = """\
a hall's CSV (UTF-8, or GB18030 as Excel saves it), one row per window, a header row naming the columns:
{columns}
Device keys never go in the CSV: each device makes its own Ed25519 key, and its public key goes to the
results file; halls that still use shared keys give them with --hmac-keys (the hall's keys file).

examples:
  evaluator-provision --csv hall.csv --check                       check every row, touch no port
  evaluator-provision --csv hall.csv --next --port /dev/ttyACM0 --results results.csv --pin 2468
                                                                   device after device: plug in, Enter
  evaluator-provision --csv hall.csv --window 12 --port /dev/ttyACM0 one window
  evaluator-provision --profile window12.toml --port /dev/ttyACM0  a profile shaped like config.toml
then at the hall: keys import results.csv

The PIN may also come from EVALUATOR_PIN, the Wi-Fi password from EVALUATOR_WIFI_PASSWORD or
--wifi-password-file (both keep secrets out of the shell history). No PIN, key or password is ever printed.
The console is left locked on every way out (success, refusal, timeout, Ctrl-C).
"""


def _epilog() -> str:
    width = max(len(c) for c in CSV_HELP)
    return EPILOG.format(columns="\n".join(f"  {c:<{width}}  {text}" for c, text in CSV_HELP.items()))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluator-provision", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Provision Window Evaluators over their serial console: one device, or a hall's list.",
        epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--port", help="the console port (e.g. /dev/ttyACM0, or the simulator's pty)")
    parser.add_argument("--baudrate", type=int, default=115200)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", metavar="FILE.toml", help="settings shaped like config.toml")
    source.add_argument("--csv", metavar="HALL.csv", help="a hall's list of windows (see below)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--window", help="with --csv: apply the row of this window_no")
    mode.add_argument("--next", action="store_true",
                      help="with --csv: next-device mode, every window not yet done, one device after another")
    mode.add_argument("--check", action="store_true", help="with --csv: check every row, open no port")
    parser.add_argument("--results", metavar="FILE.csv", help="next-device mode: the results file (read first: "
                        "windows already ok are skipped)")
    parser.add_argument("--key-file", help="one device: read its shared (hmac) device key from this file")
    parser.add_argument("--hmac-keys", metavar="KEYS.toml",
                        help="shared device keys by device id (the hall's keys file, [devices] id = key)")
    parser.add_argument("--make-hmac-keys", action="store_true",
                        help="with --hmac-keys: make a key for each device that has none, and add it to the file")
    parser.add_argument("--wifi-ssid", help="the Wi-Fi network every device joins (else the CSV's wifi_ssid)")
    parser.add_argument("--wifi-password-file", help="a file holding the Wi-Fi password")
    parser.add_argument("--pin", default=os.environ.get("EVALUATOR_PIN"),
                        help="the device's PIN; on a factory-new device it becomes its PIN")
    parser.add_argument("--new-pin", help="change the device's PIN to this")
    parser.add_argument("--expect-device", metavar="ID", help="refuse unless the device's id is ID")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    parser.add_argument("--no-tests", action="store_true", help="skip the display and uplink self-tests")
    parser.add_argument("--restart", action="store_true", help="restart the device if a setting needs it")
    args = parser.parse_args(argv)
    if args.csv and not (args.window or args.next or args.check):
        parser.error("--csv needs --window, --next or --check")
    if (args.window or args.next or args.check) and not args.csv:
        parser.error("--window, --next and --check go with --csv")
    if not args.check and not args.port:
        parser.error("--port is needed (except with --check)")
    if args.next and not args.results:
        parser.error("--next needs --results FILE.csv")
    if args.make_hmac_keys and not args.hmac_keys:
        parser.error("--make-hmac-keys needs --hmac-keys FILE")
    return args


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise ProvisionError(EXIT_USAGE, f"cannot read {what} file {path}: {e.strerror}") from None


def _prompt(text: str) -> str | None:
    try:
        return input(text)
    except EOFError:
        return None


def main(argv: Sequence[str] | None = None, prompt: Callable[[str], str | None] = _prompt) -> int:
    """The ``evaluator-provision`` console script; returns the exit code."""
    args = parse_args(argv)
    try:
        wifi_password = os.environ.get("EVALUATOR_WIFI_PASSWORD", "")
        if args.wifi_password_file:
            wifi_password = _read_secret(args.wifi_password_file, "Wi-Fi password")
        wifi = (args.wifi_ssid, wifi_password) if args.wifi_ssid else None
        if args.csv and (args.check or args.next):
            rows = check_csv(args.csv)  # every problem of every row, before any port is opened
            hmac = HmacKeys(args.hmac_keys, make=args.make_hmac_keys) if args.hmac_keys else None
            missing = hmac.missing(r.device_id for r in rows) if hmac is not None and not hmac.make else []
            if missing:
                raise ProvisionError(EXIT_USAGE, f"{args.hmac_keys} has no key for {', '.join(missing)}")
            if args.check:
                print(f"{args.csv}: {len(rows)} windows, every row as the device would accept it")
                return EXIT_OK
            return walk(rows, port=args.port, results=args.results, prompt=prompt, pin=args.pin,
                        new_pin=args.new_pin, wifi=wifi, wifi_password=wifi_password, hmac_keys=hmac,
                        tests=not args.no_tests, timeout=args.timeout, baudrate=args.baudrate)
        if args.profile:
            values, key = load_profile(args.profile)
        else:
            row = find_row(args.csv, args.window)
            values, key = row.values, None
            if wifi is None and row.wifi_ssid:
                wifi = (row.wifi_ssid, wifi_password)
            if args.hmac_keys:
                key = HmacKeys(args.hmac_keys, make=args.make_hmac_keys).key_for(row.device_id)
        if args.key_file:
            key = _read_secret(args.key_file, "key")
        try:
            port = open_serial(args.port, args.baudrate, timeout=0.2)
        except SerialPortError as e:
            raise ProvisionError(EXIT_PORT, str(e)) from None
        try:
            return provision(DeviceSession(port, args.timeout), values, key, pin=args.pin, new_pin=args.new_pin,
                             expect_device=args.expect_device, tests=not args.no_tests, restart=args.restart,
                             wifi=wifi)
        finally:
            port.close()
    except ProvisionError as e:
        print(f"evaluator-provision: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("evaluator-provision: interrupted; the console was sent Lock; nothing committed unless reported above",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
