"""Profiles: a TOML file shaped like ``config.toml``, or rows of a hall's CSV of windows.

Every value is checked with the device's own rules before the port is
touched: each value as the console reads it (:func:`device.config.parse_value`
for CSV text, :func:`device.config.convert_value` for TOML values), then each
row as a whole as ``Commit`` checks it (:func:`device.config.build`, and
:func:`device.checks.check_screens` for what the screen cannot show). Every
problem of every row is reported at once.

The hall's CSV (UTF-8, with or without a BOM, or GB18030 as Excel saves it
on a Chinese Windows) has a header row; its columns are :data:`CSV_COLUMNS`
(``window_no`` and ``device_id`` required), and any column named
``section.key`` sets that configuration key. Device keys never travel in it.
"""

import csv
import dataclasses
import io
import os
import tomllib
from typing import Any

from device import config as config_mod
from device.checks import check_screens
from device.errors import ConfigError, FontError, ProvisionError
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
#: The profile key that holds the shared device key (never a CSV column: see ``--hmac-keys``).
KEY_COLUMN = "device_key"
#: The CSV column naming the Wi-Fi network a window's device joins (its password is never in the CSV).
WIFI_COLUMN = "wifi_ssid"
#: Columns every row of a hall's CSV must fill.
REQUIRED_COLUMNS = ("window_no", "device_id")
#: What each column means, for ``--help`` and the documentation.
CSV_HELP = {
    "window_no": "the window's number, shown on the screen (required; one row per window)",
    "device_id": "the device's id, A-Z a-z 0-9 . _ -, at most 32 (required; the hall knows the device by it)",
    "window_name": "the window's name under its number",
    "channel": "评价渠道 pf code (5 = 政务大厅其他终端)",
    "staff_no": "工号 of the staff member on duty",
    "staff_name": "the staff member's name",
    "staff_dept": "the department (reported, not shown)",
    "server": "the hall server's URL (https://...)",
    "source": "how a rating opens: staff_button, hall or free",
    "display": "the panel model (ssd1306, sh1106, ...)",
    "qr_url": "the URL of the QR code to rate on a phone",
    "wifi_ssid": "the Wi-Fi network to join (its password: --wifi-password-file or EVALUATOR_WIFI_PASSWORD)",
    "section.key": "any configuration key, e.g. session.rating_window_s",
}

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
    if not problems:
        # The profile as a whole, as Commit checks it (on a device with the default configuration).
        problems = [f"{k}: {m}" for k, m in _row_problems(values)]
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


@dataclasses.dataclass(frozen=True)
class Row:
    """One window of a hall's CSV, checked.

    Attributes:
        line: its line in the file (the header is line 1).
        values: ``{section.key: value}`` to set on the device.
        wifi_ssid: the network to join ("" for none).
    """

    line: int
    values: dict[str, Any]
    wifi_ssid: str = ""

    @property
    def device_id(self) -> str:
        return str(self.values.get("device.id", ""))

    @property
    def window_no(self) -> str:
        return str(self.values.get("device.window_no", ""))


def _row_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The row as ``Commit`` would check it on a device with the default configuration."""
    overlay: dict[str, dict[str, Any]] = {}
    for full_key, value in values.items():
        section, _, key = full_key.partition(".")
        overlay.setdefault(section, {})[key] = value
    config, problems = config_mod.build(overlay)
    if problems:
        return problems
    try:
        check_screens(config, config_mod.frame_size(config))
    except ConfigError as e:
        return list(e.problems)
    except FontError:
        pass  # no font on this laptop: the device checks it at Commit
    return []


def check_csv(path: str | os.PathLike[str], *, need: tuple[str, ...] = REQUIRED_COLUMNS) -> list[Row]:
    """Every row of a hall's CSV, checked with the device's own rules, before any port is opened.

    Raises:
        ProvisionError: listing every problem of every row (and of the file) at once.
    """
    text = _read_csv(path)
    # Not splitlines(): a quoted cell may hold a newline, which must reach the checks (and be refused).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [c.strip() for c in (reader.fieldnames or [])]
    problems: list[str] = []
    if not header:
        raise ProvisionError(EXIT_USAGE, f"{path}: no header row (columns: {', '.join(CSV_HELP)})")
    for column in need:
        if column not in header:
            problems.append(f"{path}: no {column} column")
    if KEY_COLUMN in header:
        problems.append(f"{path}: a {KEY_COLUMN} column: device keys never travel in the hall's list; "
                        "give shared keys with --hmac-keys (or let the device make its Ed25519 key)")
    for column in header:
        if column and column not in CSV_COLUMNS and column not in (KEY_COLUMN, WIFI_COLUMN) and "." not in column:
            problems.append(f"{path}: unknown column {column!r} (see --help for the columns)")
    rows: list[Row] = []
    seen: dict[tuple[str, str], int] = {}
    last = reader.line_num  # the header's last line
    for raw in reader:
        n, last = last + 1, reader.line_num  # where the row starts (a quoted cell may span lines)
        if not any((cell or "").strip() for cell in raw.values() if isinstance(cell, str)):
            continue  # an empty line
        values, wifi, row_problems = _row_values(raw)
        for column in need:
            if not (raw.get(column) or "").strip():
                row_problems.append(f"{column}: empty")
        if not row_problems:
            row_problems += [f"{key}: {message}" for key, message in _row_problems(values)]
        for what, key in (("device_id", "device.id"), ("window_no", "device.window_no")):
            value = str(values.get(key, "")).strip()
            if not value:
                continue
            norm = str(int(value)) if value.isdigit() else value
            if (what, norm) in seen:
                row_problems.append(f"{what}: {value} is also on line {seen[(what, norm)]}")
            else:
                seen[(what, norm)] = n
        problems += [f"line {n} (window {(raw.get('window_no') or '?').strip()}): {p}" for p in row_problems]
        rows.append(Row(n, values, wifi))
    if not rows and not problems:
        problems.append(f"{path}: no rows")
    if problems:
        raise ProvisionError(EXIT_USAGE, f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}, "
                             "nothing was sent to any device:\n  " + "\n  ".join(problems))
    return rows


def _row_values(raw: dict[str | None, Any]) -> tuple[dict[str, Any], str, list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    wifi = ""
    for raw_column, cell in raw.items():
        if raw_column is None:
            problems.append("more cells than columns")
            continue
        if cell is None or not isinstance(cell, str):
            continue
        column, text = raw_column.strip(), cell.strip()
        if not text or column == KEY_COLUMN:
            continue  # an empty cell leaves the device's value alone; a key column is refused once, above
        if column == WIFI_COLUMN:
            if len(text.encode("utf-8")) > 32:
                problems.append(f"{column}: a Wi-Fi network's name has 1 to 32 bytes")
            wifi = text
            continue
        full_key = CSV_COLUMNS.get(column) or (column if "." in column else None)
        if full_key is None:
            continue  # reported once for the file
        converted, problem = _typed(full_key, text, from_text=True)
        if problem:
            problems.append(f"{column}: {problem}")
        else:
            values[full_key] = converted
    return values, wifi, problems


def find_row(path: str | os.PathLike[str], window: str) -> Row:
    """The row of ``window``, the whole file checked first.

    Raises:
        ProvisionError: no such window, or any problem in the file.
    """
    rows = check_csv(path, need=("window_no",))
    matches = [r for r in rows if _same_window(r.window_no, window)]
    if not matches:
        known = ", ".join(sorted({r.window_no for r in rows}))
        raise ProvisionError(EXIT_USAGE, f"window {window} is not in {path} (it lists: {known})")
    return matches[0]
