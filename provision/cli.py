"""The ``evaluator-provision`` command line."""

import argparse
import os
import sys
from collections.abc import Sequence

from device import __version__
from device.errors import ProvisionError, SerialPortError
from provision import EXIT_PORT, EXIT_USAGE
from provision.profiles import load_csv_row, load_profile
from provision.run import provision
from provision.session import DeviceSession


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluator-provision",
        description="Provision a Window Evaluator over its serial console.",
        epilog="The PIN may also come from the EVALUATOR_PIN environment variable "
               "(keeps it out of the shell history). Neither the PIN nor the key is ever printed.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--port", required=True, help="the console port (e.g. /dev/ttyACM0, or the simulator's pty)")
    parser.add_argument("--baudrate", type=int, default=115200)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", metavar="FILE.toml", help="settings shaped like config.toml")
    source.add_argument("--csv", metavar="HALL.csv", help="a hall's list of windows (needs --window)")
    parser.add_argument("--window", help="the window_no of the CSV row to apply")
    parser.add_argument("--key-file", help="read the device key from this file")
    parser.add_argument("--pin", default=os.environ.get("EVALUATOR_PIN"),
                        help="the device's PIN; on a factory-new device it becomes its PIN")
    parser.add_argument("--new-pin", help="change the device's PIN to this")
    parser.add_argument("--expect-device", metavar="ID", help="refuse unless the device's id is ID")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    parser.add_argument("--no-tests", action="store_true", help="skip the display and uplink self-tests")
    parser.add_argument("--restart", action="store_true", help="restart the device if a setting needs it")
    args = parser.parse_args(argv)
    if args.csv and not args.window:
        parser.error("--csv needs --window")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The ``evaluator-provision`` console script; returns the exit code."""
    args = parse_args(argv)
    try:
        if args.profile:
            values, key = load_profile(args.profile)
        else:
            values, key = load_csv_row(args.csv, args.window)
        if args.key_file:
            try:
                with open(args.key_file, encoding="utf-8") as f:
                    key = f.read().strip()
            except OSError as e:
                raise ProvisionError(EXIT_USAGE, f"cannot read key file {args.key_file}: {e.strerror}") from None
        from device.drivers.serial_port import open_serial

        try:
            port = open_serial(args.port, args.baudrate, timeout=0.2)
        except SerialPortError as e:
            raise ProvisionError(EXIT_PORT, str(e)) from None
        try:
            return provision(DeviceSession(port, args.timeout), values, key, pin=args.pin, new_pin=args.new_pin,
                             expect_device=args.expect_device, tests=not args.no_tests, restart=args.restart)
        finally:
            port.close()
    except ProvisionError as e:
        print(f"evaluator-provision: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("evaluator-provision: interrupted; nothing committed unless reported above", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
