"""The device's own Ed25519 key pair, and the hall's public key (uplink contract v3).

The device makes its key pair itself, the first time it needs one; the
private key stays in a PKCS#8 PEM file of mode 0600
(``upload.private_key_file``) and is never printed, logged or sent. What
leaves the device is the public key: standard base64 (with padding) of its
raw 32 bytes, and its fingerprint, ``SHA256:`` + unpadded base64 of SHA-256
over those bytes (as OpenSSH prints it).

Rotation loses no rating and leaves no time in which the device cannot
deliver: :meth:`DeviceKeys.rotate` makes the next key beside the current one
(``<file>.next``) and the device goes on signing with the current key; the
uplink probes the next key on its heartbeats, and only once a request signed
with it got a verified answer (the hall knows it) does
:meth:`DeviceKeys.promote` make it the current key and drop the old one.
The hall accepts both keys during the change.

One :class:`DeviceKeys` per key file serves the whole process
(:func:`device_keys`), so the uploader's and the hall link's transports and
the console see the same keys, and a promotion reaches them all at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device import files
from device.errors import SettingsError

logger = logging.getLogger(__name__)

#: ``upload.signature``: the device's own key pair (RFC 9421 ``ed25519``).
ED25519 = "ed25519"
#: ``upload.signature``: the v2 shared key, one secret known to both ends.
HMAC_SHA256 = "hmac-sha256"
SIGNATURES = (ED25519, HMAC_SHA256)
#: Beside the key file: the next key, until the hall has answered a request signed with it.
NEXT_SUFFIX = ".next"

__all__ = ["ED25519", "HMAC_SHA256", "SIGNATURES", "DeviceKeys", "Ed25519PrivateKey", "Ed25519PublicKey",
           "Ed25519Signing", "KeyInfo", "device_keys", "fingerprint", "parse_public_key", "public_key_text"]


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Standard base64 (with padding) of the raw 32 public-key bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(raw_public(public)).decode("ascii")


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | str) -> str:
    """``SHA256:`` + unpadded standard base64 of SHA-256 over the raw public key (OpenSSH's form)."""
    if isinstance(key, str):
        raw = raw_public(parse_public_key(key))
    else:
        raw = raw_public(key.public_key() if isinstance(key, Ed25519PrivateKey) else key)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its text (base64 of 32 raw bytes); ``ValueError`` when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not standard base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)



@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key pair: never the private part."""

    public_key: str
    fingerprint: str
    algorithm: str = ED25519

    def to_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "public_key": self.public_key, "fingerprint": self.fingerprint}


def _info(key: Ed25519PrivateKey) -> KeyInfo:
    return KeyInfo(public_key_text(key), fingerprint(key))


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load(path: str) -> Ed25519PrivateKey:
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 10)
    except OSError as e:
        raise SettingsError(f"cannot read the device's private key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SettingsError(f"the device's private key {path} is not a PKCS#8 PEM key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"the device's private key {path} is not an Ed25519 key")
    return key


def _write_new(path: str, key: Ed25519PrivateKey) -> bool:
    """Write ``key`` to ``path`` (0600) only if there is none yet; False when one was there first.

    Written to a temporary file, fsynced, then linked into place (``link``
    fails if the name exists), so nobody ever reads half a key and two
    writers never replace each other's key.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_pem(key))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        files.fsync_dir(folder)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class DeviceKeys:
    """The device's key pair in ``path``, and the next one during a rotation.

    Thread-safe: readers take :attr:`current` / :attr:`pending` (swapped
    whole); :meth:`rotate` and :meth:`promote` change them under a lock.

    Args:
        path: the PKCS#8 PEM file (``upload.private_key_file``); made, mode
            0600, when missing.

    Raises:
        SettingsError: the file exists but is not an Ed25519 PKCS#8 key, or
            cannot be read or written.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.next_path = path + NEXT_SUFFIX
        self._lock = threading.Lock()
        self._current = self._load_or_create()
        self._pending = _load(self.next_path) if os.path.exists(self.next_path) else None

    def __repr__(self) -> str:
        return f"DeviceKeys({self.path!r}, {self.info().fingerprint})"

    def _load_or_create(self) -> Ed25519PrivateKey:
        if not os.path.exists(self.path):
            try:
                if _write_new(self.path, Ed25519PrivateKey.generate()):
                    logger.info("made the device's Ed25519 key pair (%s)", self.path)
            except OSError as e:
                raise SettingsError(f"cannot make the device's private key {self.path}: {e.strerror}") from None
        key = _load(self.path)
        mode = os.stat(self.path).st_mode & 0o777
        if mode & 0o077:
            logger.warning("the device's private key %s was readable by others (mode %o); now 0600",
                           self.path, mode)
            os.chmod(self.path, 0o600)
        return key

    @property
    def current(self) -> Ed25519PrivateKey:
        """The key requests are signed with."""
        return self._current

    @property
    def pending(self) -> Ed25519PrivateKey | None:
        """The next key, while a rotation waits for the hall to answer a request signed with it."""
        return self._pending

    def info(self) -> KeyInfo:
        """The current public key and fingerprint."""
        return _info(self._current)

    def pending_info(self) -> KeyInfo | None:
        pending = self._pending
        return _info(pending) if pending is not None else None

    def rotate(self) -> tuple[KeyInfo, KeyInfo]:
        """Make the next key (or keep the one already waiting); the current one signs until it is proved.

        Returns:
            ``(next, current)``: what to register with the hall, and the key it replaces.
        """
        with self._lock:
            if self._pending is None:
                try:
                    _write_new(self.next_path, Ed25519PrivateKey.generate())
                except OSError as e:
                    raise SettingsError(f"cannot make the next key {self.next_path}: {e.strerror}") from None
                self._pending = _load(self.next_path)
                logger.info("key rotation: next key %s made; the current key %s signs until the hall "
                            "answers the next one", _info(self._pending).fingerprint, self.info().fingerprint)
            return _info(self._pending), self.info()

    def promote(self, key: Ed25519PrivateKey) -> bool:
        """The hall answered a request signed with ``key`` (the pending one): it becomes the current key.

        The old key file is replaced atomically; returns False when ``key``
        is no longer the pending key (promoted already).
        """
        with self._lock:
            if self._pending is None or public_key_text(self._pending) != public_key_text(key):
                return False
            old = self.info().fingerprint
            os.replace(self.next_path, self.path)
            files.fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            self._current, self._pending = self._pending, None
            logger.warning("key rotation: the hall answered the new key %s; the old key %s is dropped",
                           self.info().fingerprint, old)
            return True


_registry: dict[str, DeviceKeys] = {}
_registry_lock = threading.Lock()


def device_keys(path: str) -> DeviceKeys:
    """The process's one :class:`DeviceKeys` for ``path`` (made, and the key made, on first use)."""
    real = os.path.abspath(path)
    with _registry_lock:
        keys = _registry.get(real)
        if keys is None:
            keys = _registry[real] = DeviceKeys(real)
        return keys


def forget(path: str) -> None:
    """Drop the process's keys for ``path`` (a factory reset deleted the file; tests)."""
    with _registry_lock:
        _registry.pop(os.path.abspath(path), None)


@dataclass(frozen=True, repr=False)
class Ed25519Signing:
    """What a transport signs and verifies with under ``upload.signature = "ed25519"``.

    Attributes:
        keys: the device's key pair (and the next one during a rotation).
        hall: the hall's public key (``upload.hall_public_key``); None when
            none is configured (then no answer can verify).
    """

    keys: DeviceKeys
    hall: Ed25519PublicKey | None

    def __repr__(self) -> str:
        return f"Ed25519Signing({self.keys.info().fingerprint})"
