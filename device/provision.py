"""``evaluator-provision``: set up a device over its serial console from the host.

Applies a profile (a TOML file shaped like ``config.toml``, or one row of a
hall's CSV list of windows) to the device on ``--port``, commits it, reads
every value back, runs the self-tests a technician need not watch (display,
uplink) and prints a report. Exits non-zero with a clear reason when the
device does not answer, is not the expected one, refuses the PIN or rejects
a value. The device key and the PIN are never printed.

Exit codes: 0 done, 2 usage or profile error, 3 port cannot be opened,
4 no answer in time, 5 wrong device, 6 PIN refused or needed, 7 a value
rejected or the commit failed, 8 a value read back differs, 9 a self-test failed.
"""

import argparse
import csv
import json
import os
import sys
import time
import tomllib
import typing

from device import config as config_mod

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PORT = 3
EXIT_TIMEOUT = 4
EXIT_WRONG_DEVICE = 5
EXIT_PIN = 6
EXIT_REJECTED = 7
EXIT_READBACK = 8
EXIT_TEST = 9

#: CSV column names (as a hall keeps its list of windows) -> configuration keys.
#: Columns named ``section.key`` are taken as they are.
CSV_COLUMNS = {
    "device_id": "device.id",
    "window_no": "device.window_no",
    "window_name": "device.window_name",
    "channel": "device.channel",
    "staff_no": "staff.no",
    "staff_name": "staff.name",
    "staff_dept": "staff.dept",
    "server": "upload.server",
    "source": "session.source",
    "session_source": "session.source",
    "display": "display.model",
    "display_model": "display.model",
    "qr_url": "qr.url",
}
KEY_COLUMN = "device_key"
#: How long the console may take to finish a half-typed line or frame.
SYNC_S = 0.6


class ProvisionError(Exception):
    """Ends the run with ``code`` and a message for the technician."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# --- profiles ----------------------------------------------------------------

def _hint(full_key):
    section, _, key = full_key.partition(".")
    cls = config_mod.sections().get(section)
    return typing.get_type_hints(cls).get(key) if cls else None


def _typed(full_key, value, from_text):
    """Check one profile value against the schema; text from a CSV is parsed as TOML where needed."""
    hint = _hint(full_key)
    if hint is None:
        return None, "unknown configuration key"
    if from_text and hint is not str:
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            pass
    ok, converted = config_mod._convert(value, hint)
    if not ok:
        return None, f"must be {config_mod._type_name(hint)}"
    return converted, None


def load_profile(path):
    """``({section.key: value}, device_key or None)`` from a TOML profile.

    The profile has the sections and keys of ``config.toml``; a top-level
    ``device_key`` holds the key (or give ``--key-file``).

    Raises:
        ProvisionError: unreadable file, or every unknown or mistyped key.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ProvisionError(EXIT_USAGE, f"cannot read profile {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProvisionError(EXIT_USAGE, f"profile {path} is not valid TOML: {e}") from None
    key = data.pop(KEY_COLUMN, None)
    if key is not None and not isinstance(key, str):
        raise ProvisionError(EXIT_USAGE, f"profile {path}: {KEY_COLUMN} must be a string")
    values, problems = {}, []
    for section, table in data.items():
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a [section] table")
            continue
        for name, value in table.items():
            full_key = f"{section}.{name}"
            converted, problem = _typed(full_key, value, from_text=False)
            if problem:
                problems.append(f"{full_key}: {problem}")
            else:
                values[full_key] = converted
    if problems:
        raise ProvisionError(EXIT_USAGE, f"profile {path} has bad keys:\n  " + "\n  ".join(problems))
    return values, key or None


def _read_csv(path):
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise ProvisionError(EXIT_USAGE, f"cannot read {path}: {e.strerror}") from None
    # Excel saves UTF-8 with a BOM, or GB18030 on a Chinese Windows.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ProvisionError(EXIT_USAGE, f"{path} is neither UTF-8 nor GB18030 text")


def _same_window(a, b):
    a, b = a.strip(), b.strip()
    if a == b:
        return True
    return a.isdigit() and b.isdigit() and int(a) == int(b)


def load_csv_row(path, window):
    """``({section.key: value}, device_key or None)`` from the row of ``window``.

    Raises:
        ProvisionError: no such window, several rows for it, or bad columns.
    """
    rows = list(csv.DictReader(_read_csv(path).splitlines()))
    if not rows or "window_no" not in rows[0]:
        raise ProvisionError(EXIT_USAGE, f"{path} needs a header row with a window_no column")
    matches = [r for r in rows if _same_window(r.get("window_no") or "", window)]
    if not matches:
        known = ", ".join(sorted({(r.get("window_no") or "").strip() for r in rows}))
        raise ProvisionError(EXIT_USAGE, f"window {window} is not in {path} (it lists: {known})")
    if len(matches) > 1:
        raise ProvisionError(EXIT_USAGE, f"window {window} appears {len(matches)} times in {path}")
    row = matches[0]
    values, problems, key = {}, [], None
    for column, text in row.items():
        if column is None or text is None:
            continue
        column, text = column.strip(), text.strip()
        if not text:
            continue  # an empty cell leaves the device's value alone
        if column == KEY_COLUMN:
            key = text
            continue
        full_key = CSV_COLUMNS.get(column) or (column if "." in column else None)
        if full_key is None:
            problems.append(f"{column}: unknown column")
            continue
        converted, problem = _typed(full_key, text, from_text=True)
        if problem:
            problems.append(f"{column}: {problem}")
        else:
            values[full_key] = converted
    if problems:
        raise ProvisionError(EXIT_USAGE, f"{path}, window {window}:\n  " + "\n  ".join(problems))
    return values, key


# --- talking to the console ------------------------------------------------------

class DeviceSession:
    """Question and answer over the console: one command line, one JSON line back.

    Args:
        port: an open pyserial port.
        timeout: seconds to wait for each answer.
    """

    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout

    def sync(self):
        """End whatever half line the console holds, then forget its answers."""
        self.port.write(b"\r\n")
        time.sleep(SYNC_S)
        self.port.reset_input_buffer()

    def ask(self, line, timeout=None, what=None):
        """Send one command line; return the next JSON object the device writes.

        Raises:
            ProvisionError: no answer within the timeout. ``what`` names the
            command in the message (so a secret argument is never shown).
        """
        self.port.write(line.encode("utf-8") + b"\r\n")
        return self.answer(timeout, what or line.split(" ", 1)[0])

    def answer(self, timeout=None, what="the device"):
        deadline = time.monotonic() + (timeout or self.timeout)
        buf = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProvisionError(EXIT_TIMEOUT, f"no answer to {what} within {timeout or self.timeout:g} s "
                                     "(is this the device's console port, and is the device running?)")
            # The port was opened with a short read timeout, so this returns often.
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            buf += chunk
            while b"\n" in buf:
                raw, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # an Improv frame or noise: not for us
                if isinstance(obj, dict) and "ok" in obj:
                    return obj


def _wire(value):
    """A value as the console's ``Set`` reads it (TOML, so strings keep their quotes)."""
    return config_mod.to_toml_value(tuple(value) if isinstance(value, list) else value)


def _same(expected, got):
    if isinstance(expected, (tuple, list)):
        return isinstance(got, list) and len(got) == len(expected) and all(
            _same(e, g) for e, g in zip(expected, got))
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and float(expected) == float(got)
    return expected == got


def provision(session, values, key, *, pin=None, new_pin=None, expect_device=None, tests=True,
              restart=False, out=print):
    """Apply, commit, read back and test; print the report through ``out``.

    Returns:
        0 when everything passed.

    Raises:
        ProvisionError: the first thing that went wrong, with its exit code.
    """
    session.sync()
    status = session.ask("Status")
    if not status.get("ok") or "device_id" not in status:
        raise ProvisionError(EXIT_TIMEOUT, "the device did not answer Status as a Window Evaluator console")
    found = status["device_id"]
    if expect_device and found != expect_device:
        raise ProvisionError(EXIT_WRONG_DEVICE, f"wrong device: expected {expect_device}, found {found}")
    out(f"device {found}, firmware {status.get('firmware', '?')}")

    if status.get("pin_set") and not status.get("authorized"):
        if not pin:
            raise ProvisionError(EXIT_PIN, "the device has a PIN: give --pin (or set EVALUATOR_PIN)")
        answer = session.ask(f"Auth {pin}", what="Auth")
        if not answer.get("ok"):
            raise ProvisionError(EXIT_PIN, f"PIN refused: {answer.get('message', answer.get('error'))}")

    session.ask("Discard")
    for full_key, value in values.items():
        answer = session.ask(f"Set {full_key} {_wire(value)}", what=f"Set {full_key}")
        if not answer.get("ok"):
            session.ask("Discard")
            if answer.get("error") == "not_authorized":
                raise ProvisionError(EXIT_PIN, f"the device refused the change: {answer.get('message')}")
            raise ProvisionError(EXIT_REJECTED, f"the device rejected {full_key}: {answer.get('message')}")
    if key:
        answer = session.ask(f"DeviceKey {key}", what="DeviceKey")
        if not answer.get("ok"):
            session.ask("Discard")
            raise ProvisionError(EXIT_REJECTED, f"the device rejected the device key: {answer.get('message')}")

    commit = session.ask("Commit")
    if not commit.get("ok"):
        problems = "".join(f"\n  {p['key']}: {p['message']}" for p in commit.get("problems", []))
        session.ask("Discard")
        raise ProvisionError(EXIT_REJECTED, f"commit refused: {commit.get('message')}{problems}")

    mismatches = []
    out("")
    out("read back:")
    for full_key, value in values.items():
        answer = session.ask(f"Get {full_key}")
        got = answer.get("value")
        good = answer.get("ok") and _same(value, got)
        out(f"  {'ok  ' if good else 'DIFF'} {full_key} = {json.dumps(got, ensure_ascii=False)}")
        if not good:
            mismatches.append(f"{full_key}: sent {json.dumps(_wire(value), ensure_ascii=False)}, "
                              f"device has {json.dumps(got, ensure_ascii=False)}")
    if key:
        answer = session.ask("DeviceKey")
        good = bool(answer.get("ok") and answer.get("set"))
        out(f"  {'ok  ' if good else 'DIFF'} device key: {'set' if good else 'NOT set'} (never shown)")
        if not good:
            mismatches.append("device key: the device reports none")

    pin_note = "unchanged"
    if new_pin or (pin and not status.get("pin_set")):
        answer = session.ask(f"Pin {new_pin or pin}", what="Pin")
        if not answer.get("ok"):
            raise ProvisionError(EXIT_REJECTED, f"the device refused the new PIN: {answer.get('message')}")
        pin_note = "changed" if status.get("pin_set") else "set (the device was factory-new)"
    out(f"  PIN: {pin_note}")
    if mismatches:
        raise ProvisionError(EXIT_READBACK, "values read back differ:\n  " + "\n  ".join(mismatches))

    failed = []
    if tests:
        out("")
        out("self-tests:")
        display = session.ask("Test display")
        out(f"  display: {'pattern shown, check the screen' if display.get('ok') else display.get('message')}")
        if not display.get("ok"):
            failed.append("display")
        uplink = session.ask("Test uplink", timeout=max(session.timeout, 30.0))
        if uplink.get("ok"):
            out(f"  uplink: {uplink.get('server', '')} answered {uplink.get('status')} "
                f"in {uplink.get('elapsed_ms', '?')} ms")
        else:
            out(f"  uplink: FAILED: {uplink.get('message', uplink.get('error'))}")
            failed.append("uplink")

    restart_needed = commit.get("restart_needed") or []
    out("")
    if restart_needed:
        if restart:
            session.ask("Restart")
            out(f"restarted the device to apply {', '.join(restart_needed)}")
        else:
            out(f"restart needed to apply {', '.join(restart_needed)} (send Restart, or use --restart)")
    if failed:
        raise ProvisionError(EXIT_TEST, f"settings committed, but self-tests failed: {', '.join(failed)}")
    out(f"provisioned {found}: {len(values)} settings{' and the device key' if key else ''} committed")
    return EXIT_OK


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="evaluator-provision",
        description="Provision a Window Evaluator over its serial console.",
        epilog="The PIN may also come from the EVALUATOR_PIN environment variable "
               "(keeps it out of the shell history). Neither the PIN nor the key is ever printed.")
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


def main(argv=None):
    """The ``evaluator-provision`` console script."""
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
        from device.drivers.serial_port import SerialPortError, open_serial

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
