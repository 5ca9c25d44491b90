"""The hall's keys: its own Ed25519 key for answers, and the registry of device *public* keys.

Common interface 1: a public key's text is the standard base64 (padded) of
its raw 32 bytes; its fingerprint is ``"SHA256:"`` + unpadded standard base64
of SHA-256 over those bytes, as OpenSSH prints it.

- The hall's own key (:func:`load_or_make_hall_key`) is a PKCS#8 PEM file,
  mode 0600, made on the first start; only the hall signs with it.
- The registry (:class:`PublicKeys`) lives in the hall's SQLite and holds
  only public keys, several per device while a key is rotated (every one
  listed is accepted). Nobody who reads it can sign as a device.
- :func:`read_results` reads a provisioning results CSV (common interface 2)
  for ``python -m hall keys import FILE``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import datetime
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hall.contract import DEVICE_ID_RULE, is_device_id

#: The algorithm of a device's own key pair (RFC 9421).
ED25519 = "ed25519"
#: The columns of a provisioning results file, in order.
RESULTS_COLUMNS = ("device_id", "window_no", "public_key", "fingerprint", "firmware", "outcome", "time")

SCHEMA = """
CREATE TABLE IF NOT EXISTS device_keys (
    device_id TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    added_at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, public_key));
"""


class KeyProblem(ValueError):
    """A public key, a device id or a results file the hall will not take; the message says why."""


def public_key_text(key: ed25519.Ed25519PublicKey) -> str:
    """Standard base64 (padded) of the raw 32 bytes."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def fingerprint(text: str) -> str:
    """``SHA256:`` + unpadded base64 of SHA-256 over the raw key bytes, as OpenSSH prints it."""
    raw = _raw(text)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def parse_public_key(text: str) -> ed25519.Ed25519PublicKey:
    """The key of a public key text.

    Raises:
        KeyProblem: the text is not standard base64 of 32 bytes.
    """
    return ed25519.Ed25519PublicKey.from_public_bytes(_raw(text))


def _raw(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem("a public key must be standard base64 of its 32 raw bytes") from None
    if len(raw) != 32:
        raise KeyProblem(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return raw


def load_or_make_hall_key(path: str | os.PathLike[str] | None) -> ed25519.Ed25519PrivateKey:
    """The hall's own private key from its PEM file; made there (mode 0600) when missing.

    ``None`` makes a key kept in memory only (a hall on ``":memory:"``).

    Raises:
        OSError: the file cannot be read or written.
        ValueError: the file is not an Ed25519 private key.
    """
    if path is None:
        return ed25519.Ed25519PrivateKey.generate()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # O_EXCL: two halls starting together never overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    return loaded


def default_hall_key_path(db_path: str | os.PathLike[str]) -> str | None:
    """Where a hall on ``db_path`` keeps its key: beside the database (None for ``":memory:"``)."""
    text = os.fspath(db_path)
    return None if text == ":memory:" else text + ".hall-ed25519.pem"


@dataclasses.dataclass(frozen=True)
class DeviceKey:
    """One public key registered for a device."""

    device_id: str
    public_key: str
    fingerprint: str
    added_at: str
    source: str


class PublicKeys:
    """The registry of device public keys, in the hall's SQLite (its own connection).

    Args:
        path: the hall's database file (``":memory:"`` keeps the registry in memory).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.executescript(SCHEMA)
        self._cache: dict[str, tuple[ed25519.Ed25519PublicKey, ...]] = {}
        self._version = -1

    def add(self, device_id: str, text: str, source: str = "") -> DeviceKey:
        """Register one more key for the device (its other keys stay valid).

        Raises:
            KeyProblem: a device id or key the hall cannot take.
        """
        if not is_device_id(device_id):
            raise KeyProblem(f"device id {device_id!r}: {DEVICE_ID_RULE}")
        text = text.strip()
        parse_public_key(text)
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO device_keys VALUES (?, ?, ?, ?, ?)",
                             (device_id, text, fingerprint(text), now, source))
            self._cache.clear()
        return self.find(device_id, text) or DeviceKey(device_id, text, fingerprint(text), now, source)

    def remove(self, device_id: str, key_or_fingerprint: str | None = None) -> int:
        """Remove one key (by its text or fingerprint), or every key of the device; returns how many."""
        with self._lock:
            if key_or_fingerprint is None:
                cursor = self._db.execute("DELETE FROM device_keys WHERE device_id = ?", (device_id,))
            else:
                cursor = self._db.execute(
                    "DELETE FROM device_keys WHERE device_id = ? AND (public_key = ? OR fingerprint = ?)",
                    (device_id, key_or_fingerprint, key_or_fingerprint))
            self._cache.clear()
            return cursor.rowcount

    def find(self, device_id: str, text: str) -> DeviceKey | None:
        for key in self.list(device_id):
            if key.public_key == text:
                return key
        return None

    def list(self, device_id: str | None = None) -> list[DeviceKey]:
        """Registered keys, by device then age."""
        sql = "SELECT device_id, public_key, fingerprint, added_at, source FROM device_keys"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY device_id, added_at, rowid", args).fetchall()
        return [DeviceKey(*row) for row in rows]

    def keys_of(self, device_id: str) -> tuple[ed25519.Ed25519PublicKey, ...]:
        """Every key the device may sign with now (empty: none registered)."""
        with self._lock:
            # Another process (``keys import``) may have changed the table: SQLite's data_version says so.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._cache.clear()
                self._version = version
            cached = self._cache.get(device_id)
            if cached is None:
                rows = self._db.execute("SELECT public_key FROM device_keys WHERE device_id = ? ORDER BY rowid",
                                        (device_id,)).fetchall()
                cached = self._cache[device_id] = tuple(parse_public_key(row[0]) for row in rows)
            return cached

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One ``ok`` row of a provisioning results file."""

    line: int
    device_id: str
    public_key: str
    fingerprint: str


def read_results(path: str | os.PathLike[str]) -> tuple[list[ResultRow], list[str]]:
    """The rows of a provisioning results CSV that the hall imports, and the problems of the others.

    Only rows whose ``outcome`` is ``ok`` are imported; a row whose fingerprint
    does not match its key, or whose id or key is not valid, is named as a
    problem and not imported.

    Raises:
        OSError: the file cannot be read.
        KeyProblem: the header is not the results file's.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        missing = [c for c in RESULTS_COLUMNS if c not in header]
        if missing:
            raise KeyProblem(f"{os.fspath(path)}: not a provisioning results file (missing {', '.join(missing)})")
        rows: list[ResultRow] = []
        problems: list[str] = []
        for number, row in enumerate(reader, start=2):
            outcome = (row.get("outcome") or "").strip()
            device_id = (row.get("device_id") or "").strip()
            if outcome != "ok":
                problems.append(f"line {number}: {device_id or '?'}: outcome {outcome or '(empty)'}, not imported")
                continue
            text = (row.get("public_key") or "").strip()
            problem = _row_problem(device_id, text, (row.get("fingerprint") or "").strip())
            if problem:
                problems.append(f"line {number}: {device_id or '?'}: {problem}, not imported")
                continue
            rows.append(ResultRow(number, device_id, text, fingerprint(text)))
    return rows, problems


def _row_problem(device_id: str, text: str, printed: str) -> str | None:
    if not is_device_id(device_id):
        return DEVICE_ID_RULE
    try:
        parse_public_key(text)
    except (KeyProblem, ValueError) as e:
        return f"public_key: {e}"
    if printed and printed != fingerprint(text):
        return "the fingerprint does not match the public key"
    return None


def import_results(registry: PublicKeys, rows: Iterable[ResultRow], source: str) -> list[DeviceKey]:
    """Register each row's key beside the device's keys held (a rotation keeps the old one valid)."""
    return [registry.add(row.device_id, row.public_key, source) for row in rows]
