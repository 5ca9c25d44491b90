"""A hall's batch: walk the CSV's windows device after device, and keep a results file.

Next-device mode: for each row not yet done (a results file from an earlier
run is read first, so a run can stop and go on later), the technician plugs
in a device and presses Enter; the row is applied, committed, read back, the
display shows its test pattern, the device's public key is read, and one
line goes to the results file (written and flushed per device, so a power
cut loses nothing):

``device_id,window_no,public_key,fingerprint,firmware,outcome,time``

``outcome`` is ``ok`` or an error code; ``time`` is ISO 8601 with offset.
The hall imports the ``ok`` rows into its registry of public keys with its
``keys import FILE`` command.
"""

import csv
import datetime
import os
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from device.drivers.serial_port import open_serial
from device.errors import ProvisionError, SerialPortError
from device.settings import write_atomic
from provision import (
    EXIT_BATCH,
    EXIT_OK,
    EXIT_PIN,
    EXIT_PORT,
    EXIT_READBACK,
    EXIT_REJECTED,
    EXIT_TEST,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    EXIT_WRONG_DEVICE,
)
from provision.profiles import Row
from provision.run import provision
from provision.session import DeviceSession

#: The results file's columns (the hall's ``keys import`` reads them).
RESULT_COLUMNS = ("device_id", "window_no", "public_key", "fingerprint", "firmware", "outcome", "time")
#: ``outcome`` for each way a device can fail.
OUTCOMES = {EXIT_TIMEOUT: "timeout", EXIT_WRONG_DEVICE: "wrong_device", EXIT_PIN: "pin_refused",
            EXIT_REJECTED: "rejected", EXIT_READBACK: "readback_differs", EXIT_TEST: "self_test_failed",
            EXIT_PORT: "port_error"}
#: How long to wait for a plugged-in device's port to appear.
PLUG_TIMEOUT_S = 30.0


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_results(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{device_id: last outcome}`` of an earlier run's results file (empty if there is none)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return {row["device_id"]: row["outcome"] for row in csv.DictReader(f) if row.get("device_id")}
    except FileNotFoundError:
        return {}
    except (OSError, KeyError, csv.Error) as e:
        raise ProvisionError(EXIT_USAGE, f"cannot read the results file {path}: {e}") from None


def append_result(path: str | os.PathLike[str], result: Mapping[str, Any]) -> None:
    """One line to the results file (with the header if the file is new), flushed to disk."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, RESULT_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({c: result.get(c, "") for c in RESULT_COLUMNS})
        f.flush()
        os.fsync(f.fileno())


class HmacKeys:
    """Shared device keys for halls that still use ``hmac-sha256``: the hall's keys file (``[devices] id = key``).

    Never the CSV: the keys come from this file, or are made per device
    (``make``) and written to it (mode 0600) for the hall to load.
    """

    def __init__(self, path: str | os.PathLike[str], make: bool = False) -> None:
        self.path = os.fspath(path)
        self.make = make
        self.keys: dict[str, str] = {}
        try:
            with open(self.path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            if not make:
                raise ProvisionError(EXIT_USAGE, f"no keys file {self.path}") from None
            data = {}
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ProvisionError(EXIT_USAGE, f"cannot read the keys file {self.path}: {e}") from None
        devices = data.get("devices", {})
        if not isinstance(devices, dict) or not all(isinstance(v, str) for v in devices.values()):
            raise ProvisionError(EXIT_USAGE, f"{self.path}: [devices] must map device ids to keys")
        self.keys = dict(devices)
        self._rest = {k: v for k, v in data.items() if k != "devices"}

    def missing(self, device_ids: Iterable[str]) -> list[str]:
        return [d for d in device_ids if d not in self.keys]

    def key_for(self, device_id: str) -> str:
        """The device's key; a new one (written to the file first) when ``make`` and it has none."""
        if device_id in self.keys:
            return self.keys[device_id]
        if not self.make:
            raise ProvisionError(EXIT_USAGE, f"no key for {device_id} in {self.path}")
        self.keys[device_id] = secrets.token_urlsafe(32)
        lines = [f"{k} = {_toml_text(v)}" for k, v in self._rest.items() if isinstance(v, str)]
        lines += ["", "[devices]"] + [f"{_toml_text(d)} = {_toml_text(k)}" for d, k in sorted(self.keys.items())]
        write_atomic(self.path, ("\n".join(lines).strip() + "\n").encode("utf-8"), mode=0o600)
        return self.keys[device_id]


def _toml_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wait_for_port(path: str, timeout: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether ``path`` exists within ``timeout`` seconds (a device just plugged in takes a moment)."""
    deadline = clock() + timeout
    while not os.path.exists(path):
        if clock() >= deadline:
            return False
        time.sleep(0.2)
    return True


def walk(rows: list[Row], *, port: str, results: str, prompt: Callable[[str], str | None],
         out: Callable[[str], None] = print, pin: str | None = None, new_pin: str | None = None,
         wifi: tuple[str, str] | None = None, wifi_password: str = "", hmac_keys: HmacKeys | None = None,
         tests: bool = True, timeout: float = 10.0, baudrate: int = 115200,
         plug_timeout: float = PLUG_TIMEOUT_S) -> int:
    """Provision the rows not yet done, device after device; returns the exit code.

    Args:
        rows: the hall's CSV, checked (:func:`~provision.profiles.check_csv`).
        port: the console port each device appears on.
        results: the results file (read first: rows already ``ok`` are skipped).
        prompt: asks the technician; returns what was typed (Enter: ``""``; a port path:
            that port; ``s``: skip; ``q``: stop), or None at the end of input.
        wifi: ``(ssid, password)`` for every device (else a row's ``wifi_ssid`` with ``wifi_password``).
        hmac_keys: shared keys, for halls that still use them.
    """
    done = read_results(results)
    todo = [r for r in rows if done.get(r.device_id) != "ok"]
    out(f"{len(rows)} windows in the list, {len(rows) - len(todo)} done already, {len(todo)} to go")
    for n, row in enumerate(todo, start=1):
        answer = prompt(f"[{n}/{len(todo)}] window {row.window_no} ({row.device_id}): plug in its device, "
                        f"then press Enter (or type its port; s: skip; q: stop) ")
        if answer is None or answer.strip().lower() == "q":
            out("stopped; run again with the same results file to go on")
            break
        if answer.strip().lower() == "s":
            out(f"window {row.window_no} skipped")
            continue
        path = answer.strip() or port
        result: dict[str, Any] = {"device_id": row.device_id, "window_no": row.window_no}
        taken = {r.device_id: r.window_no for r in rows if r is not row}
        code = _one(row, path, result, taken, out=out, pin=pin, new_pin=new_pin,
                    wifi=wifi or ((row.wifi_ssid, wifi_password) if row.wifi_ssid else None),
                    hmac_keys=hmac_keys, tests=tests, timeout=timeout, baudrate=baudrate, plug_timeout=plug_timeout)
        result["time"] = now_iso()
        append_result(results, result)
        out(f"window {row.window_no} ({row.device_id}): {result['outcome']}")
        if code == 130:
            return 130
    final = read_results(results)
    left = [r for r in rows if final.get(r.device_id) != "ok"]
    out(f"done: {len(rows) - len(left)} of {len(rows)} windows provisioned; results in {results}")
    if left:
        out("not yet: " + ", ".join(f"{r.window_no} ({r.device_id})" for r in left))
    return EXIT_OK if not left else EXIT_BATCH


def _one(row: Row, path: str, result: dict[str, Any], taken: Mapping[str, str], *, out: Callable[[str], None],
         pin: str | None, new_pin: str | None, wifi: tuple[str, str] | None, hmac_keys: HmacKeys | None, tests: bool,
         timeout: float, baudrate: int, plug_timeout: float) -> int:
    """Provision one device; fill ``result`` (its ``outcome`` always); returns the exit code."""
    if not wait_for_port(path, plug_timeout):
        result["outcome"] = "no_port"
        out(f"no port {path} within {plug_timeout:g} s")
        return EXIT_PORT
    try:
        key = hmac_keys.key_for(row.device_id) if hmac_keys is not None else None
        port = open_serial(path, baudrate, timeout=0.2)
    except SerialPortError as e:
        result["outcome"] = "port_error"
        out(str(e))
        return EXIT_PORT
    except ProvisionError as e:
        result["outcome"] = "no_key"
        out(str(e))
        return e.code
    info: dict[str, Any] = {}
    try:
        code = provision(DeviceSession(port, timeout), row.values, key, pin=pin, new_pin=new_pin, tests=tests,
                         out=out, wifi=wifi, info=info, taken=taken)
    except ProvisionError as e:
        out(f"evaluator-provision: {e}")
        code = e.code
        result["outcome"] = OUTCOMES.get(e.code, f"exit_{e.code}")
    except KeyboardInterrupt:
        code = 130
        result["outcome"] = "interrupted"
    finally:
        port.close()
    result.update({"firmware": info.get("firmware", ""), "public_key": info.get("public_key", ""),
                   "fingerprint": info.get("fingerprint", "")})
    if code == EXIT_OK:
        if info.get("public_key") or key is not None:
            result["outcome"] = "ok"
        else:
            result["outcome"] = "no_public_key"
            out(info.get("public_key_error", "the device showed no public key"))
            code = EXIT_REJECTED
    return code
