"""The outbox's witness: the last committed ``seq`` kept apart from the database, and the damage counts.

SQLite keeps a rating safe against a power cut (WAL, ``synchronous=FULL``),
but not against its own files going missing: a ``-wal`` deleted after a kill,
or truncated by a damaged filesystem, takes the newest events with it, and
the database then looks whole with an older head. Without a record kept
elsewhere nobody notices, and the next rating reuses the lost ``seq``.

The witness is that record: one small file beside the database
(``<outbox>-witness``) holding the ``seq`` and ``hash`` of the last event
committed, the head the hall last acknowledged, and the damage counted so
far (lost, set aside, rewritten, ...), so that the counts survive even a
database that had to be replaced. It is rewritten in place after every
commit with one ``pwrite`` of a single 512-byte sector (no ``fsync`` on the
press path: it survives a killed process at once, being in the page cache),
and flushed to disk with ``fdatasync`` by :meth:`Witness.sync`, which the
outbox calls from the uploader's thread (``claim``, ``checkpoint``), off the
press path. A CRC makes a torn or damaged witness recognisable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import zlib
from typing import Any

from device.records import GENESIS_HASH

logger = logging.getLogger(__name__)

#: The witness is one sector: a power cut writes all of it or none of it on any SD card.
SIZE = 512
MAGIC = b"WE-WITNESS-1 "
#: What each damage count means (also the keys of :meth:`Counts.as_dict`).
KINDS = {
    "lost": "events committed here that are gone and that the hall had not acknowledged",
    "lost_delivered": "events gone from the outbox that the hall had already acknowledged",
    "set_aside": "rows that could not be read, kept as dead letters with the reason",
    "rewritten": "events whose stored contents differ from what the hall acknowledged",
    "reused_seq_prevented": "seq numbers skipped so that none is used twice after a loss",
    "reused_seq": "seq numbers that were used twice (detected too late to prevent)",
    "replaced": "databases that could not be read, kept aside for analysis and started anew",
    "foreign": "outboxes of another device found in the data folder, kept aside and started anew",
    "gaps": "gap events appended to the chain, each telling the hall of sealed events it will not receive",
}


@dataclasses.dataclass
class Counts:
    """Damage found so far, cumulative across restarts (see :data:`KINDS`)."""

    lost: int = 0
    lost_delivered: int = 0
    set_aside: int = 0
    rewritten: int = 0
    reused_seq_prevented: int = 0
    reused_seq: int = 0
    replaced: int = 0
    foreign: int = 0
    gaps: int = 0
    incidents: int = 0
    last: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Counts:
        if not isinstance(data, dict):
            return cls()
        counts = cls()
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if isinstance(value, str if f.name == "last" else int) and not isinstance(value, bool):
                setattr(counts, f.name, value)
        return counts

    def any(self) -> bool:
        return any(getattr(self, kind) for kind in KINDS)


@dataclasses.dataclass(frozen=True)
class Head:
    """A point of the chain: ``seq`` and its ``hash``."""

    seq: int = 0
    hash: str = GENESIS_HASH


@dataclasses.dataclass
class State:
    """What the witness holds."""

    head: Head = dataclasses.field(default_factory=Head)
    acked: Head = dataclasses.field(default_factory=Head)
    counts: Counts = dataclasses.field(default_factory=Counts)
    #: A difference already counted (so it is not counted again at each answer or start):
    #: the seq and the other side's hash.
    flagged: Head = dataclasses.field(default_factory=lambda: Head(0, ""))
    #: Chain breaks up to this seq were counted.
    broken_upto: int = 0


class Witness:
    """The witness file of one outbox.

    Args:
        path: the file (``<outbox>-witness``); made with mode 0600 if missing.

    Attributes:
        found: what the file said when opened: ``"ok"``, ``"missing"`` or ``"damaged"``.
        state: the :class:`State` as last written (or as read at open).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.found = "missing"
        self.state = State()
        self._lock = threading.Lock()
        self._dirty = False
        self._acked_unwritten = False
        self._tail = b""
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(self._fd, 0o600)
            data = os.pread(self._fd, SIZE, 0)
        except OSError:
            os.close(self._fd)
            raise
        if data:
            parsed = _parse(data)
            if parsed is None:
                self.found = "damaged"
                logger.error("outbox witness %s is damaged; it is written again from the database", path)
            else:
                self.found, self.state = "ok", parsed
        self._encode_tail()

    # --- writing --------------------------------------------------------------------

    def note_head(self, seq: int, digest: str) -> None:
        """A new event was committed: record it (one pwrite, no fsync)."""
        self.state.head = Head(seq, digest)
        self._write()

    def note_acked(self, seq: int, digest: str) -> None:
        """The hall acknowledged up to ``seq`` (kept if higher than what is known).

        Kept in memory and written with the next commit's witness (or at close):
        it only tells lost events from delivered ones, so it need not cost a
        write of its own per delivered batch.
        """
        if seq > self.state.acked.seq:
            self.state.acked = Head(seq, digest)
            self._encode_tail()
            self._acked_unwritten = True

    def flag(self, seq: int, digest: str) -> bool:
        """Remember a difference at ``seq``; False if exactly this one was flagged before."""
        if self.state.flagged == Head(seq, digest):
            return False
        self.state.flagged = Head(seq, digest)
        self._encode_tail()
        return True

    def note_broken(self, upto: int) -> None:
        self.state.broken_upto = max(self.state.broken_upto, upto)
        self._encode_tail()

    def set_counts(self, counts: Counts) -> None:
        """New damage counts: written and flushed at once (damage is rare and must not be forgotten)."""
        self.state.counts = dataclasses.replace(counts)
        self._encode_tail()
        self._write()
        self.sync()

    def rewrite(self, state: State) -> None:
        """Replace everything (at open, after checks), flushed at once."""
        self.state = dataclasses.replace(state, counts=dataclasses.replace(state.counts))
        self._encode_tail()
        self._write()
        self.sync()

    def _encode_tail(self) -> None:
        s = self.state
        damage = s.counts.as_dict()
        tail = {"acked": [s.acked.seq, s.acked.hash], "damage": damage,
                "flagged": [s.flagged.seq, s.flagged.hash], "broken_upto": s.broken_upto}
        text = json.dumps(tail, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        while len(text.encode("utf-8")) > SIZE - 200 and damage["last"]:
            damage["last"] = damage["last"][:-20]
            text = json.dumps(tail, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        self._tail = text.encode("utf-8")

    def _write(self) -> None:
        head = self.state.head
        body = b'{"head":[%d,"%s"],"tail":' % (head.seq, head.hash.encode("ascii")) + self._tail + b"}"
        record = MAGIC + b"%08x " % zlib.crc32(body) + body + b"\n"
        record = record.ljust(SIZE - 1, b" ") + b"\n"
        with self._lock:
            try:
                os.pwrite(self._fd, record, 0)
                self._dirty = True
                self._acked_unwritten = False
            except OSError as e:
                logger.warning("outbox witness not written: %s", e)

    def sync(self) -> None:
        """Flush the witness to disk if it changed (off the press path)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self._dirty = True
                logger.warning("outbox witness not flushed: %s", e)

    def close(self) -> None:
        if self._acked_unwritten:
            self._write()
        self.sync()
        with self._lock:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _parse(data: bytes) -> State | None:
    """A witness's :class:`State`, or None when it is torn, damaged or not a witness."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 10:
        return None
    try:
        crc = int(data[len(MAGIC):len(MAGIC) + 8], 16)
        body = data[len(MAGIC) + 9:].rstrip(b" \n")
        if zlib.crc32(body) != crc:
            return None
        obj = json.loads(body)
        head, tail = obj["head"], obj["tail"]
        acked, flagged = tail["acked"], tail.get("flagged", [0, ""])
        return State(Head(int(head[0]), str(head[1])), Head(int(acked[0]), str(acked[1])),
                     Counts.from_dict(tail.get("damage")), Head(int(flagged[0]), str(flagged[1])),
                     int(tail.get("broken_upto", 0)))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def read(path: str) -> tuple[str, State]:
    """Read a witness without changing it (``evaluator-verify``): ``(found, state)``."""
    try:
        with open(path, "rb") as f:
            data = f.read(SIZE)
    except FileNotFoundError:
        return "missing", State()
    parsed = _parse(data)
    return ("damaged", State()) if parsed is None else ("ok", parsed)
