"""The month's report as CSV files, one per table, for a spreadsheet.

UTF-8 with a byte-order mark, so a spreadsheet opened by double-click shows
the Chinese headers right. Every table's columns come from
:mod:`hall.columns` (the same entries the text and the 通报 read). Files,
for month ``YYYY-MM``: ``haochaping-YYYY-MM-windows.csv`` (every window, then
each hall's total, then the district's), ``-departments.csv``, ``-staff.csv``,
``-reasons.csv`` and ``-matters.csv`` (差评 by reason code and by matter),
``-bad.csv`` (this month's 差评 and those carried over), ``-appeals.csv``,
``-suspect.csv`` and ``-flagged.csv`` (events out of every figure).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hall import columns
from hall.columns import Column


def window_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every window, each hall's total after its windows, and the district's total last."""
    rows: list[dict[str, Any]] = []
    for hall in data["halls"]:
        for window in hall["windows"]:
            rows.append({"hall": hall["hall"], "name": hall["name"], **window})
        rows.append({"hall": hall["hall"], "name": hall["name"], **hall["totals"], "window_no": "合计",
                     "ignored_presses": None, "noise_pulses": None, "open_bad": None})
    if data["halls"]:
        rows.append({"hall": "区县合计", "name": "", **data["district"], "window_no": "",
                     "ignored_presses": None, "noise_pulses": None})
    return rows


def bad_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This month's 差评, then the earlier months' carried over, with their source."""
    return [{**item, "source": source}
            for source, key in (("本月", "bad"), ("以前月份", "carried_over")) for item in data[key]]


def _write(path: Path, table: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([column.title for column in table])
        writer.writerows(columns.cells(table, rows))
    return path


def write_csv(data: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write the report's tables into ``directory`` (made if missing); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"haochaping-{data['month']}"
    tables: list[tuple[str, Sequence[Column], Iterable[Mapping[str, Any]]]] = [
        ("windows", columns.WINDOWS, window_rows(data)),
        ("departments", columns.DEPARTMENTS, data["departments"]),
        ("bad", columns.BAD, bad_rows(data)),
        ("appeals", columns.APPEALS, data["appeals"]),
        ("suspect", columns.SUSPECT, data["suspect"]),
        ("staff", columns.STAFF, data["staff"]),
        ("reasons", columns.REASONS, data["bad_by_reason"]),
        ("matters", columns.MATTERS, data["bad_by_matter"]),
        ("flagged", columns.FLAGGED, data["flagged"]),
    ]
    return [_write(directory / f"{stem}-{name}.csv", table, rows) for name, table, rows in tables]
