"""Profiles: a TOML file shaped like ``config.toml``, or one row of a hall's CSV of windows.

Every value is checked against the device's configuration schema before
the port is touched (:func:`device.config.convert_value` for TOML values,
:func:`device.config.parse_value` for CSV text, as the console reads it),
and every bad key is reported at once.
"""

import csv
import os
import tomllib
from typing import Any

from device import config as config_mod
from device.errors import ConfigError, ProvisionError
from provision import EXIT_USAGE

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
#: The profile key and CSV column that hold the device key.
KEY_COLUMN = "device_key"

#: ``{section.key: value}`` and the device key (or None).
Profile = tuple[dict[str, Any], str | None]


def _typed(full_key: str, value: Any, from_text: bool) -> tuple[Any, str | None]:
    """``(value, None)`` checked against the schema, or ``(None, why not)``."""
    try:
        if from_text:
            return config_mod.parse_value(full_key, value), None
        return config_mod.convert_value(full_key, value), None
    except ConfigError as e:
        return None, "; ".join(message for _, message in e.problems)


def load_profile(path: str | os.PathLike[str]) -> Profile:
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
    values: dict[str, Any] = {}
    problems: list[str] = []
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


def _read_csv(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ProvisionError(EXIT_USAGE, f"cannot read {path}: {e.strerror}") from None
    # Excel saves UTF-8 with a BOM, or GB18030 on a Chinese Windows.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ProvisionError(EXIT_USAGE, f"{path} is neither UTF-8 nor GB18030 text")


def _same_window(a: str, b: str) -> bool:
    a, b = a.strip(), b.strip()
    if a == b:
        return True
    return a.isdigit() and b.isdigit() and int(a) == int(b)


def load_csv_row(path: str | os.PathLike[str], window: str) -> Profile:
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
    values: dict[str, Any] = {}
    problems: list[str] = []
    key = None
    for raw_column, cell in matches[0].items():
        if raw_column is None or cell is None:
            continue
        column, text = raw_column.strip(), cell.strip()
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
