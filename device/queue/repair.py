"""What the outbox finds wrong with its file at open, and how it carries on.

Nothing here is on the press path; it runs when an outbox opens:

* :func:`inspect` compares the database with its witness and with itself:
  events missing at the end (a lost or truncated WAL, a truncated file),
  holes inside (a damaged page), rows whose contents no longer match their
  hash, a chain that does not link, and the head the hall acknowledged.
* :func:`salvage` copies what can still be read out of a damaged database
  (one that fails ``quick_check``, or that SQLite cannot open at all, after
  repairing the fixed fields of its header) into a new one; the damaged file
  is kept aside for analysis by :func:`move_aside`.
* :func:`request_move` and :func:`adopt`: when ``outbox.path`` changes, the
  outbox (events, chain, witness) moves to the new place at the next open,
  so no pending event is left behind in the old file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable
from typing import Any

from device import files, integrity
from device.errors import StorageError
from device.queue import schema
from device.queue.witness import State
from device.records import GENESIS_HASH

logger = logging.getLogger(__name__)

#: The newest events whose hashes and links are checked at every open.
TAIL_CHECK = 256
#: A move of the outbox waits for its next open: the new place names the old one in this file.
MOVE_SUFFIX = "-move-from"
#: Errors that mean the file itself is damaged (not a locked or read-only file).
DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


@dataclasses.dataclass(frozen=True)
class Loss:
    """A run of seqs found missing; ``last_hash`` is "" where the chain cannot tell it."""

    first: int
    last: int
    last_hash: str
    reason: str

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclasses.dataclass
class Findings:
    """What :func:`inspect` found; the outbox records each and counts it."""

    losses: list[Loss] = dataclasses.field(default_factory=list)
    #: ``(seq, why)`` of rows that cannot be trusted: set aside as dead letters.
    damaged: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    #: Seqs whose ``prev_hash`` does not link although their own hash is right.
    broken: list[int] = dataclasses.field(default_factory=list)
    #: ``(seq, the other side's hash, what)`` for what differs from the hall's acknowledged head or the witness.
    rewritten: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)


def now_text() -> str:
    return datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")


def is_damage(error: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged (rather than busy or unwritable)."""
    name = getattr(error, "sqlite_errorname", "")
    text = str(error).lower()
    return name in DAMAGE_CODES or "malformed" in text or "not a database" in text


def quick_check(conn: sqlite3.Connection) -> str:
    """SQLite's ``quick_check``: ``"ok"``, or its first findings in one line."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
    return "; ".join(rows)


# --- inspection ---------------------------------------------------------------------

def _event_runs(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """Runs of consecutive seqs kept in ``events`` (one query, grouped by seq minus rank)."""
    rows = conn.execute(
        "SELECT min(seq), max(seq) FROM (SELECT seq, seq - row_number() OVER (ORDER BY seq) AS g "
        "FROM events) GROUP BY g ORDER BY 1").fetchall()
    return [(int(a), int(b)) for a, b in rows]


def _holes(covered: Iterable[tuple[int, int]], head: int) -> list[tuple[int, int]]:
    holes, expected = [], 1
    for first, last in sorted(covered):
        if first > expected:
            holes.append((expected, first - 1))
        expected = max(expected, last + 1)
    if expected <= head:
        holes.append((expected, head))
    return holes


def _prev_hash_of(conn: sqlite3.Connection, seq: int) -> str:
    row = conn.execute("SELECT body FROM events WHERE seq = ?", [seq]).fetchone()
    if row is None:
        return ""
    try:
        value = json.loads(row[0]).get("prev_hash", "")
    except (ValueError, AttributeError, TypeError):
        return ""
    return value if isinstance(value, str) else ""


def hash_at(conn: sqlite3.Connection, seq: int) -> str | None:
    """The hash this outbox holds for ``seq`` (kept, or the end of a pruned or lost run), or None."""
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
    if row is None:
        for table in ("pruned", "lost"):
            row = conn.execute(f"SELECT last_hash FROM {table} WHERE last = ?", [seq]).fetchone()
            if row is not None and row[0]:
                break
        else:
            return None
    return str(row[0])


def read_row(seq: int, body: Any, digest: Any) -> tuple[dict[str, Any] | None, str]:
    """A stored row as an event (``hash`` included), or ``(None, why)`` when it cannot be trusted.

    ``body`` may be the stored bytes (``CAST(body AS BLOB)``): a flipped byte
    that breaks UTF-8 is then a reason, not an exception.
    """
    if isinstance(digest, bytes):
        digest = digest.decode("ascii", "replace")
    if not isinstance(body, (str, bytes)) or not isinstance(digest, str):
        return None, "damaged: the row cannot be read"
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")
    if hashlib.sha256(raw).hexdigest() != digest:
        return None, "damaged: its contents do not match its hash"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "damaged: its contents are not UTF-8"
    try:
        event = json.loads(text)
    except ValueError:
        return None, "damaged: its contents are not JSON"
    if not isinstance(event, dict) or event.get("seq") != seq:
        return None, "damaged: stored under another seq than its own"
    event["hash"] = digest
    return event, ""


def inspect(conn: sqlite3.Connection, state: State) -> Findings:
    """Compare the database with its witness and with itself (see the module's docstring)."""
    found = Findings()
    head, head_hash = schema.read_head(conn)
    pruned, lost = schema.runs(conn, "pruned"), schema.runs(conn, "lost")
    kept = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    covered = kept + sum(b - a + 1 for a, b, _ in pruned + lost)
    if covered < head:
        runs = _event_runs(conn) + [(a, b) for a, b, _ in pruned + lost]
        for first, last in _holes(runs, head):
            found.losses.append(Loss(first, last, _prev_hash_of(conn, last + 1),
                                     "missing inside the outbox (a damaged or truncated file)"))
    witnessed = state.head
    if witnessed.seq > head:
        found.losses.append(Loss(head + 1, witnessed.seq, witnessed.hash,
                                 "committed but gone from the database (a lost or truncated WAL, "
                                 "a truncated file)"))
    elif witnessed.seq == head and witnessed.seq and witnessed.hash != head_hash:
        found.rewritten.append((head, witnessed.hash, f"the event at seq {head} is not the one committed there"))
    _check_tail(conn, pruned + lost, state.broken_upto, found)
    acked = state.acked
    if acked.seq and state.flagged != acked:
        ours = hash_at(conn, acked.seq)
        if ours is not None and ours != acked.hash:
            found.rewritten.append((acked.seq, acked.hash, f"the event at seq {acked.seq} differs from the one "
                                    "the hall acknowledged (a rewritten history)"))
    return found


def _check_tail(conn: sqlite3.Connection, runs: list[tuple[int, int, str]], counted_upto: int,
                found: Findings) -> None:
    rows = conn.execute("SELECT seq, body, hash, state, error FROM events ORDER BY seq DESC LIMIT ?",
                        [TAIL_CHECK]).fetchall()
    ends = {last: digest for _, last, digest in runs if digest}
    hashes = {seq: digest for seq, _, digest, _, _ in rows}
    bad = set()
    for seq, body, digest, state, error in reversed(rows):
        if state == schema.REJECTED and str(error or "").startswith("damaged:"):
            bad.add(seq)
            continue
        event, why = read_row(seq, body, digest)
        if event is None:
            found.damaged.append((seq, why))
            bad.add(seq)
            continue
        if seq <= counted_upto or seq - 1 in bad:
            continue
        prev = GENESIS_HASH if seq == 1 else hashes.get(seq - 1, ends.get(seq - 1))
        if prev is not None and event.get("prev_hash") != prev:
            found.broken.append(seq)


#: Why seqs left empty by :meth:`~device.queue.outbox.Outbox.reseal` are recorded in ``lost``.
HELD_BY_HALL = integrity.HELD_BY_HALL + " (a restored, cloned or carried-over folder); " \
    "this outbox's undelivered events were sealed again after them"


def record_vacated(conn: sqlite3.Connection, upto: int, hall_seq: int, hall_hash: str) -> None:
    """Record the seqs up to ``upto`` that nothing covers any more as held by the hall (inside a transaction).

    Each hole becomes a ``lost`` run counted as delivered (the hall holds
    those seqs); a hole just before a lost run joins it; the hash of a
    hole's last seq is ``hall_hash`` at ``hall_seq``, else the ``prev_hash``
    of the event after it.
    """
    runs = schema.runs(conn, "pruned") + schema.runs(conn, "lost")
    for first, hole_end in reversed(_holes(_event_runs(conn) + [(a, b) for a, b, _ in runs], upto)):
        last, delivered = hole_end, hole_end - first + 1
        after = conn.execute("SELECT last, last_hash, delivered FROM lost WHERE first = ?", [last + 1]).fetchone()
        if after is not None:
            conn.execute("DELETE FROM lost WHERE first = ?", [last + 1])
            last, digest, delivered = after[0], after[1], delivered + (after[2] or 0)
        else:
            digest = hall_hash if last == hall_seq else _prev_hash_of(conn, last + 1)
        conn.execute("INSERT OR REPLACE INTO lost (first, last, last_hash, delivered, reason, found_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", [first, last, digest, delivered, HELD_BY_HALL, now_text()])


# --- a damaged database: kept aside, salvaged ----------------------------------------------

def move_aside(path: str) -> str:
    """Rename the database (and its ``-wal``/``-shm``) to ``<path>.damaged-<time>``; returns the new name."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    aside = f"{path}.damaged-{stamp}"
    n = 1
    while os.path.exists(aside):
        n += 1
        aside = f"{path}.damaged-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(path + suffix, aside + suffix)
        except FileNotFoundError:
            pass
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return aside


#: The fields of a database header that are the same in every outbox (format 3, WAL, 4 KiB pages).
_HEADER_FIXED = ((0, b"SQLite format 3\x00"), (18, b"\x02\x02\x00\x40\x20\x20"))


def _repaired_copy(aside: str) -> str | None:
    """A copy of ``aside`` with the fixed fields of its header written again, or None."""
    copy = aside + ".repaired"
    try:
        shutil.copyfile(aside, copy)
        os.chmod(copy, 0o600)
        with open(copy, "r+b") as f:
            header = bytearray(f.read(100))
            if len(header) < 100:
                return None
            for offset, value in _HEADER_FIXED:
                header[offset:offset + len(value)] = value
            if int.from_bytes(header[16:18], "big") not in (1, *(2 ** n for n in range(9, 17))):
                header[16:18] = (4096).to_bytes(2, "big")
            f.seek(0)
            f.write(header)
    except OSError as e:
        logger.warning("outbox salvage: no repaired copy of %s: %s", aside, e)
        return None
    return copy


@dataclasses.dataclass
class Salvage:
    """What :func:`salvage` got out of a damaged database."""

    opened: bool = False
    copied: int = 0
    set_aside: int = 0
    header_repaired: bool = False
    #: ``(seq, why, delivered)`` of the rows copied as dead letters.
    damaged: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)


_COLUMNS = "seq, id, type, body, hash, state, attempts, error, delivered_at"


def _open_damaged(path: str) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.text_factory = schema.lenient_text
        # A truncated file: SQLite then reads the pages that are there instead of refusing the file.
        conn.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error:
        return None
    try:
        # Only the schema must be readable: rows are then read one by one if need be.
        conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events'").fetchone()
    except sqlite3.Error:
        conn.close()
        return None
    return conn


def _readable_rows(src: sqlite3.Connection, upto: int) -> list[tuple[Any, ...]]:
    """Every row that can be read: all at once, else one seq at a time (a damaged page skips its rows)."""
    try:
        return src.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
    except sqlite3.Error:
        pass
    try:
        upto = max(upto, int(src.execute("SELECT max(seq) FROM events").fetchone()[0] or 0))
    except sqlite3.Error:
        pass
    rows = []
    for seq in range(1, upto + 1):
        try:
            row = src.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", [seq]).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            rows.append(row)
    return rows


def salvage(aside: str, dst: sqlite3.Connection, known_head: int) -> Salvage:
    """Copy every readable event and run out of the damaged ``aside`` into ``dst`` (in one transaction).

    Rows whose contents do not match their hash are copied as dead letters
    with the reason. What cannot be read at all is left for :func:`inspect`
    to find as missing.
    """
    result = Salvage()
    src = _open_damaged(aside)
    copy = None
    if src is None:
        copy = _repaired_copy(aside)
        src = _open_damaged(copy) if copy else None
        result.header_repaired = src is not None
    if src is None:
        if copy:
            _remove(copy)
        return result
    result.opened = True
    try:
        rows = _readable_rows(src, known_head)
        runs = {}
        for table in ("pruned", "lost"):
            try:
                runs[table] = src.execute(f"SELECT * FROM {table}").fetchall()
                columns = [d[0] for d in src.execute(f"SELECT * FROM {table} LIMIT 0").description]
                runs[table] = [dict(zip(columns, r, strict=True)) for r in runs[table]]
            except sqlite3.Error:
                runs[table] = []
    finally:
        src.close()
        if copy:
            for suffix in ("", "-wal", "-shm"):
                _remove(copy + suffix)
    with schema.immediate(dst, "salvaged outbox"):
        for seq, event_id, kind, body, digest, stored_state, attempts, stored_error, delivered_at in rows:
            event, why = read_row(seq, body, digest)
            state, error = stored_state, stored_error
            if event is None:
                result.damaged.append((seq, why, state == schema.DELIVERED))
                state, error = schema.REJECTED, why
                result.set_aside += 1
            elif state == schema.SENDING:
                state = schema.PENDING
            n = dst.execute(
                "INSERT OR IGNORE INTO events (seq, id, type, body, hash, state, attempts, error, delivered_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, event_id if isinstance(event_id, str) else f"damaged-{seq}", kind if isinstance(kind, str)
                 else "damaged", body if isinstance(body, str) else "", digest if isinstance(digest, str) else "",
                 state if state in schema.STATES else schema.REJECTED, attempts or 0, error, delivered_at]).rowcount
            result.copied += n
        for table, items in runs.items():
            for item in items:
                try:
                    marks = ", ".join("?" * len(item))
                    dst.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(item)}) VALUES ({marks})",
                                list(item.values()))
                except sqlite3.Error:
                    continue
    return result


# --- another device's outbox ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Foreign:
    """An outbox of another device found at our path, kept aside."""

    device_id: str
    aside: str
    undelivered: int


def keep_foreign_aside(path: str, device_id: str) -> Foreign | None:
    """If the outbox at ``path`` was kept by another device, move it (and its companions) aside.

    A data folder carried over from another device (a swapped card) holds
    that device's chain: this device can neither sign its events nor continue
    its seqs. It is kept whole beside the new outbox (``<path>.foreign-<id>-<time>``)
    for a technician to hand over; nothing in it is sent.

    Returns:
        What was kept aside, or None when the outbox is this device's (or new, or unreadable).
    """
    if not os.path.exists(path):
        return None
    try:
        # Read-only: looking must not checkpoint or otherwise change the file before its checks.
        conn = integrity.open_readonly(path)
        try:
            owner = schema.stored_device(conn)
            held = undelivered = 0
            if owner and owner != device_id:   # only then is anything counted (not at every start)
                held = int(conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0])
                undelivered = int(conn.execute("SELECT count(*) FROM events WHERE state IN ('pending', 'sending')")
                                  .fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if not owner or owner == device_id:
        return None
    if held == 0:
        # An outbox that never held an event (a device provisioned under a new id before its first
        # rating): nothing of the other device's to keep apart; it is this device's from now on.
        conn = sqlite3.connect(path)
        try:
            schema.own_device(conn, path, device_id)
        finally:
            conn.close()
        logger.info("outbox %s: an empty outbox of device %r, taken over by %r", path, owner, device_id)
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in owner)[:32]
    aside = f"{path}.foreign-{safe}-{stamp}"
    for suffix in ("", "-wal", "-shm", "-witness", "-damage.log"):
        try:
            os.replace(path + suffix, aside + suffix)
        except FileNotFoundError:
            pass
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    logger.error("outbox %s belongs to device %r, not %r: kept aside as %s", path, owner, device_id, aside)
    return Foreign(owner, aside, undelivered)


# --- a move of the outbox (outbox.path changed) ------------------------------------------

def request_move(old: str, new: str) -> None:
    """Ask the outbox at ``new`` to take over the one at ``old`` when it next opens.

    Written durably now (a commit of ``outbox.path``); the move itself waits
    until the outbox is closed, at the next start.
    """
    old, new = os.path.abspath(old), os.path.abspath(new)
    if old == new:
        return
    os.makedirs(os.path.dirname(new), mode=0o700, exist_ok=True)
    try:
        files.write_atomic(new + MOVE_SUFFIX, old.encode("utf-8"), mode=0o600)
    except OSError as e:
        raise StorageError(f"cannot write {new + MOVE_SUFFIX}: {e.strerror or e}") from None
    logger.info("the outbox will move from %s to %s at the next start", old, new)


def events_in(path: str) -> int:
    """Events kept in the outbox at ``path`` (0 if there is none); read-only."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return 0
    try:
        conn = integrity.open_readonly(path)
        try:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def adopt(path: str) -> str:
    """Carry out a move asked by :func:`request_move`, if there is one; returns what was done ("" if nothing).

    Safe to repeat after a power cut at any step: each file moves only if
    it is still at the old place and not yet at the new one.

    Raises:
        StorageError: the new place already holds another outbox with events.
    """
    marker = path + MOVE_SUFFIX
    try:
        with open(marker, encoding="utf-8") as f:
            old = f.read().strip()
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise StorageError(f"cannot read {marker}: {e.strerror}") from None
    done = ""
    parts = ("", "-witness", "-damage.log")
    if old and os.path.abspath(old) != os.path.abspath(path) and any(os.path.exists(old + p) for p in parts):
        if os.path.exists(old):
            waiting = events_in(path)
            if waiting:
                raise StorageError(f"outbox.path {path} already holds an outbox with {waiting} events; "
                                   f"the outbox at {old} ({events_in(old)} events) was not moved there")
            _checkpoint_closed(old)
            # An empty outbox at the new place (and its WAL) must not meet the moved file.
            for suffix in ("", "-wal", "-shm"):
                _remove(path + suffix)
        for suffix in parts:
            _move_file(old + suffix, path + suffix)
        for suffix in ("-wal", "-shm"):
            _remove(old + suffix)
        _fsync_dir(os.path.dirname(os.path.abspath(old)))
        done = f"moved the outbox from {old}"
        logger.warning("outbox: %s to %s", done, path)
        # Going back to the old place (the last settings that started) brings it back again.
        try:
            request_move(path, old)
        except (OSError, StorageError) as e:
            logger.debug("no way back recorded: %s", e)
    _remove(marker)
    return done


def _checkpoint_closed(path: str) -> None:
    """Fold a closed outbox's WAL into its file, so one file carries everything."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StorageError(f"cannot move the outbox {path}: {e}") from e


def _move_file(src: str, dst: str) -> None:
    if not os.path.exists(src):
        return
    os.makedirs(os.path.dirname(os.path.abspath(dst)), mode=0o700, exist_ok=True)
    files.move(src, dst)


def _remove(path: str) -> None:
    files.remove(path)


def _fsync_dir(folder: str) -> None:
    """Flush a folder, best effort: the damage path goes on even where a folder cannot be flushed."""
    try:
        files.fsync_dir(folder)
    except OSError as e:
        logger.debug("folder %s not flushed: %s", folder, e)


def log_incident(path: str, record: dict[str, Any]) -> None:
    """Append one incident to ``<outbox>-damage.log`` (a JSON line) and flush it; never raises."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        logger.warning("damage log %s not written: %s", path, e)
