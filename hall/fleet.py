"""The fleet view: every device the hall knows, the silent and the behind first (issue 18.3).

An IT person keeping a hall's devices asks which are silent, which are
behind, which are faulty. Everything here is what the hall already holds:
the registration (hall), the events (window, ``gap`` events), each device's
last heartbeat (firmware, backlog, oldest pending age, faults, damage
counts, clock) and the device public keys the hall registered (fingerprint).

Order: devices silent for longer than ``silent_after_s`` first (longest
silent first), then devices with a backlog (largest first), then the rest by
id. Text, JSON and CSV read the same rows and the same columns.
"""

from __future__ import annotations

import csv
import datetime
import html
import io
import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from hall.columns import Column, text_table
from hall.contract import Event, parse_time
from hall.dating import china_time
from hall.ledger import HallRecords

#: A device without a heartbeat or an event for this long is silent (the device sends one a minute).
SILENT_AFTER_S = 15 * 60.0
STATUS_TEXT = {"silent": "失联", "backlog": "积压", "faults": "故障", "ok": "正常"}


def read_heartbeats(db: sqlite3.Connection) -> dict[str, tuple[datetime.datetime | None, dict[str, Any]]]:
    """Device id -> (when its last heartbeat was received, the heartbeat's body)."""
    if not _has_table(db, "heartbeats"):
        return {}
    found: dict[str, tuple[datetime.datetime | None, dict[str, Any]]] = {}
    for device_id, received_at, body in db.execute("SELECT device_id, received_at, json FROM heartbeats"):
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        found[str(device_id)] = (parse_time(received_at), data if isinstance(data, dict) else {})
    return found


def read_fingerprints(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Device id -> the fingerprints of the public keys the hall holds for it (several during a rotation)."""
    if not _has_table(db, "device_keys"):
        return {}
    found: dict[str, list[str]] = {}
    for device_id, fingerprint in db.execute("SELECT device_id, fingerprint FROM device_keys ORDER BY rowid"):
        found.setdefault(str(device_id), []).append(str(fingerprint))
    return found


def read_last_received(db: sqlite3.Connection) -> dict[str, datetime.datetime]:
    """Device id -> when the hall last stored an event of it."""
    if not _has_table(db, "events"):
        return {}
    found = {}
    for device_id, received_at in db.execute("SELECT device_id, MAX(received_at) FROM events GROUP BY device_id"):
        when = parse_time(received_at)
        if when is not None:
            found[str(device_id)] = when
    return found


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _damage(body: Mapping[str, Any]) -> int:
    """The heartbeat's damage counts, added up (a dict of counts, or one count)."""
    damage = body.get("damage")
    if isinstance(damage, dict):
        return sum(v for v in damage.values() if _int(v) is not None)
    return _int(damage) or 0


def _clock(body: Mapping[str, Any]) -> str:
    if body.get("clock_synced") is True:
        return f"已对时（{body.get('clock_source') or '来源不明'}）"
    if body.get("clock_synced") is False:
        return "未对时"
    return "-"


def build_fleet(events: Iterable[Event], heartbeats: Mapping[str, tuple[datetime.datetime | None, dict[str, Any]]],
                records: HallRecords, fingerprints: Mapping[str, list[str]] | None = None, *,
                last_received: Mapping[str, datetime.datetime] | None = None,
                silent_after_s: float = SILENT_AFTER_S, now: datetime.datetime | None = None) -> list[dict[str, Any]]:
    """One row per device, in the order the fleet view lists them.

    Args:
        events: every stored event (windows and ``gap`` events).
        heartbeats: :func:`read_heartbeats`.
        records: the registry (halls).
        fingerprints: :func:`read_fingerprints`.
        last_received: :func:`read_last_received` (contact other than heartbeats).
        silent_after_s: silent when the last contact is older than this.
        now: the hall's time (now by default).

    Returns:
        Rows with ``device_id``, ``hall``, ``hall_name``, ``window_no``, ``firmware``, ``fingerprints``,
        ``last_heartbeat`` (China time, or None), ``silent_s`` (seconds since the last contact, None
        when never heard), ``status`` (``silent``, ``backlog``, ``faults`` or ``ok``), ``backlog``,
        ``oldest_pending_age_s``, ``rejected``, ``faults``, ``damage``, ``gaps`` (gap events),
        ``lost`` (events the gaps say are gone), ``clock``, ``clock_synced``.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    fingerprints = fingerprints or {}
    last_received = last_received or {}
    windows: dict[str, str] = {}
    gaps: dict[str, list[int]] = {}
    for event in events:
        device = str(event.get("device_id") or "")
        if event.get("window_no"):
            windows[device] = str(event["window_no"])
        if event.get("type") == "gap":
            gaps.setdefault(device, []).append(_int(event.get("count")) or 0)
    devices = set(records.registry.devices) | set(heartbeats) | set(windows) | set(gaps) | set(fingerprints)
    rows = []
    for device in devices:
        received, body = heartbeats.get(device, (None, {}))
        contacts = [t for t in (received, last_received.get(device)) if t is not None]
        silent_s = (now - max(contacts)).total_seconds() if contacts else None
        hall = records.registry.hall_of(device)
        backlog = _int(body.get("backlog")) or 0
        faults = [str(f) for f in body.get("faults") or [] if f] if isinstance(body.get("faults"), list) else []
        if silent_s is None or silent_s > silent_after_s:
            status = "silent"
        elif backlog:
            status = "backlog"
        elif faults:
            status = "faults"
        else:
            status = "ok"
        rows.append({
            "device_id": device, "hall": hall, "hall_name": records.registry.hall(hall).name,
            "window_no": windows.get(device) or str(body.get("window_no") or ""),
            "firmware": str(body.get("firmware") or ""), "fingerprints": list(fingerprints.get(device, [])),
            "last_heartbeat": china_time(received).strftime("%Y-%m-%d %H:%M:%S") if received else None,
            "silent_s": round(silent_s) if silent_s is not None else None,
            "status": status, "status_text": STATUS_TEXT[status],
            "backlog": backlog, "oldest_pending_age_s": _int(body.get("oldest_pending_age_s")),
            "rejected": _int(body.get("rejected")) or 0, "faults": faults, "damage": _damage(body),
            "gaps": len(gaps.get(device, [])), "lost": sum(gaps.get(device, [])),
            "clock": _clock(body), "clock_synced": body.get("clock_synced") if isinstance(
                body.get("clock_synced"), bool) else None,
        })
    order = {"silent": 0, "backlog": 1}

    def key(row: Mapping[str, Any]) -> tuple[int, float, str]:
        rank = order.get(row["status"], 2)
        if rank == 0:
            return 0, -(row["silent_s"] if row["silent_s"] is not None else float("inf")), row["device_id"]
        if rank == 1:
            return 1, -row["backlog"], row["device_id"]
        return 2, 0, row["device_id"]
    return sorted(rows, key=key)


def duration(seconds: Any) -> str:
    """``3 天 4 小时``, ``12 分钟``; ``从未联系`` for None."""
    if seconds is None:
        return "从未联系"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400} 天 {seconds % 86400 // 3600} 小时"
    if seconds >= 3600:
        return f"{seconds // 3600} 小时 {seconds % 3600 // 60} 分钟"
    if seconds >= 60:
        return f"{seconds // 60} 分钟"
    return f"{seconds} 秒"


def _age(seconds: Any) -> str:
    return "" if seconds is None else duration(seconds)


COLUMNS: tuple[Column, ...] = (
    Column("status_text", "状态"), Column("device_id", "设备"), Column("hall", "大厅"), Column("window_no", "窗口"),
    Column("firmware", "固件"), Column("fingerprints", "密钥指纹"), Column("last_heartbeat", "最后心跳"),
    Column("silent_s", "未联系", duration), Column("backlog", "积压"),
    Column("oldest_pending_age_s", "最早待发", _age), Column("rejected", "放弃"),
    Column("faults", "故障", ",".join), Column("damage", "损坏"), Column("gaps", "缺失记录"),
    Column("lost", "缺失条数"), Column("clock", "时钟"),
)


def format_fleet(rows: list[dict[str, Any]]) -> str:
    """The fleet as a text table."""
    silent = sum(row["status"] == "silent" for row in rows)
    behind = sum(row["status"] == "backlog" for row in rows)
    lines = [f"设备一览 {len(rows)} 台：失联 {silent}，积压 {behind}"]
    if rows:
        lines += text_table(COLUMNS, rows)
    return "\n".join(lines) + "\n"


def fleet_csv(rows: list[dict[str, Any]]) -> str:
    """The fleet as CSV text (UTF-8; the caller adds a byte-order mark for a spreadsheet if it wants one)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c.title for c in COLUMNS])
    writer.writerows([c.cell(row) for c in COLUMNS] for row in rows)
    return out.getvalue()


def render_html(rows: list[dict[str, Any]], title: str = "设备一览") -> str:
    """The fleet as a page (no script): silent devices in red, behind ones in amber."""
    colours = {"silent": "#f8d7d3", "backlog": "#fbe7c6", "faults": "#fff3bf"}
    head = "".join(f"<th>{html.escape(c.title)}</th>" for c in COLUMNS)
    body = "".join(
        f'<tr style="background:{colours.get(row["status"], "#fff")}">'
        + "".join(f"<td>{html.escape(c.cell(row))}</td>" for c in COLUMNS) + "</tr>" for row in rows)
    return (f"<!DOCTYPE html><html lang=zh-CN><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font-family:'WenQuanYi Zen Hei',sans-serif;font-size:10pt}"
            "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 5px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(format_fleet(rows).splitlines()[0])}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n")
