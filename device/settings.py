"""What the technician provisions: the settings overlay, the device key file, the PIN.

* :func:`write_atomic` replaces a file so that a power cut leaves either the
  old or the new content, never a mix: a temporary file in the same folder,
  ``fsync``, ``os.replace``, then ``fsync`` of the folder so the rename itself
  is on disk.
* :class:`SettingsStore` keeps the settings overlay, a TOML file of the keys
  provisioned over the console. It is applied after ``config.toml`` and
  after ``--set`` overrides: what a technician committed last is what the
  device runs. :meth:`SettingsStore.commit` writes the overlay and a new
  device key as one unit: both are staged beside their files, a small
  journal naming the renames (never the key) is the commit point, and a
  start after a power cut finishes or forgets the commit
  (:meth:`SettingsStore.recover`), removing every stray temporary file, so
  no copy of a key outlives a commit.
* :class:`PinStore` keeps the console PIN as a salted scrypt hash, with the
  count of failed tries and the lockout, in a JSON file beside the device
  key. The lockout is persisted so a reboot does not reset it.
"""

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from device import config as config_mod
from device import files
from device.errors import ConfigError, SettingsError
from device.files import fsync_dir

logger = logging.getLogger(__name__)

#: The overlay as ``{section: {key: value}}``.
Overlay = dict[str, dict[str, Any]]
StrPath = str | os.PathLike[str]


def write_atomic(path: StrPath, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (bytes) so a power cut leaves old or new.

    Args:
        path: the file to replace; its folder must exist.
        data: the new content.
        mode: permission bits of the new file (set before any byte is written,
            so a secret is never readable by others, not even for a moment).

    Raises:
        SettingsError: naming the file, if any step fails; the old file is then intact.
    """
    try:
        files.write_atomic(path, data, mode)
    except OSError as e:
        raise SettingsError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None


def remove_durably(path: StrPath) -> None:
    """Delete a file (if it exists) and flush its folder."""
    path = os.fspath(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise SettingsError(f"cannot remove {path}: {e.strerror}") from None
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def scrub(path: StrPath) -> bool:
    """Overwrite a file with zeros, flush, and delete it (a temporary copy of a secret); True if it was there."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            size = os.fstat(fd).st_size
            os.pwrite(fd, b"\0" * size, 0)
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise SettingsError(f"cannot remove {path}: {e.strerror}") from None
    return True


def _rename(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``; across filesystems the source (a key) is scrubbed after the copy."""
    files.move(src, dst, remove_source=scrub)


#: What ``write_atomic`` names its temporary files: ``.<name>.<random>.tmp``.
_TEMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{6,}\.tmp$")


def render_overlay(overlay: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of a ``{section: {key: value}}`` overlay, sections in schema order."""
    lines = ["# Settings provisioned over the serial console. Written by the device;",
             "# applied after config.toml and --set. Edit with the console, not by hand.", ""]
    order = list(config_mod.sections())
    for section in sorted(overlay, key=lambda s: (order.index(s) if s in order else len(order), s)):
        values = overlay[section]
        if not values:
            continue
        lines.append(f"[{section}]")
        for key in sorted(values):
            lines.append(f"{key} = {config_mod.format_value(f'{section}.{key}', values[key])}")
        lines.append("")
    return "\n".join(lines)


class SettingsStore:
    """The settings overlay on top of the device's configuration files.

    The overlay is the last layer of the configuration: defaults, the files in
    ``base_paths``, the ``--set`` texts in ``overrides``, then the overlay as a
    dict (:func:`device.config.load`'s ``layers``).

    Args:
        path: the overlay file (e.g. ``DATA/settings.toml``).
        base_paths: the configuration files loaded before it.
        overrides: ``section.key=value`` overrides applied before it.
    """

    def __init__(self, path: StrPath, base_paths: Iterable[StrPath] = (), overrides: Iterable[str] = ()) -> None:
        self.path = os.fspath(path)
        self.base_paths = list(base_paths)
        self.overrides = list(overrides)
        # An interrupted commit is finished (or forgotten) before the settings are first read.
        self._recovered = False

    def read(self) -> Overlay:
        """The overlay as ``{section: {key: value}}``; empty if there is none.

        Raises:
            ConfigError: the file is malformed.
        """
        if not self._recovered:
            self._recovered = True
            self.recover()
        if not os.path.exists(self.path):
            return {}
        data = config_mod.read_toml(self.path)
        bad = [(str(self.path), f"[{s}] must be a table") for s, v in data.items() if not isinstance(v, dict)]
        if bad:
            raise ConfigError(bad)
        return data

    def build(self, overlay: Mapping[str, Mapping[str, Any]]) -> config_mod.Config:
        """The configuration with ``overlay`` in place of the stored one.

        Raises:
            ConfigError: listing every bad key (files, overrides and overlay alike).
        """
        return config_mod.load(self.base_paths, self.overrides, layers=[overlay])

    def load(self) -> config_mod.Config:
        """The configuration the device runs: files, overrides, then the stored overlay."""
        return self.build(self.read())

    def save(self, overlay: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the overlay file atomically (mode 0600: it may name internal hosts)."""
        text = render_overlay(overlay)
        write_atomic(self.path, text.encode("utf-8"), mode=0o600)
        logger.info("settings saved to %s", self.path)

    def clear(self) -> None:
        """Remove the overlay (factory reset)."""
        remove_durably(self.path)

    # --- a commit of settings and key as one unit ---------------------------------

    @property
    def journal(self) -> str:
        """The commit journal: the renames that make a commit, written once everything is staged."""
        return self.path + ".commit"

    def commit(self, overlay: Mapping[str, Mapping[str, Any]] | None, key: tuple[str, bytes] | None = None,
               move: tuple[str, str] | None = None) -> None:
        """Write the overlay, a new device key and/or a moved key file as one unit.

        Each new file is staged beside its place (``<file>.next``, mode 0600)
        and flushed; then the journal naming the renames is written
        atomically: that is the commit point. A power cut before it leaves
        the old files (the staged ones are removed at the next start); after
        it, the next start finishes the renames (:meth:`recover`).

        Args:
            overlay: the new overlay, or None to leave it.
            key: ``(key_file, key bytes)``: a new device key.
            move: ``(old key_file, new key_file)``: the key moves with a changed ``upload.key_file``.

        Raises:
            SettingsError: nothing was committed (staged files are removed),
                or, when it says so, the commit will be finished at the next start.
        """
        if key is None and move is None:
            if overlay is not None:
                self.save(overlay)
            return
        renames: list[tuple[str, str]] = []
        try:
            for target in (key[0] if key is not None else None, move[1] if move is not None else None):
                if target:
                    os.makedirs(os.path.dirname(os.path.abspath(target)), mode=0o700, exist_ok=True)
            if key is not None:
                path = os.path.abspath(key[0])
                files.write_flushed(path + ".next", key[1])
                renames.append((path + ".next", path))
            elif move is not None:
                renames.append((os.path.abspath(move[0]), os.path.abspath(move[1])))
            if overlay is not None:
                files.write_flushed(self.path + ".next", render_overlay(overlay).encode("utf-8"))
                renames.append((self.path + ".next", self.path))
            for folder in {os.path.dirname(dst) for _, dst in renames}:
                fsync_dir(folder)
            write_atomic(self.journal, json.dumps({"renames": renames}).encode("utf-8"))
        except (OSError, SettingsError) as e:
            for src, _ in renames:
                if src.endswith(".next"):
                    scrub(src)
            raise SettingsError(f"nothing changed: {getattr(e, 'strerror', None) or e}") from None
        try:
            self._roll_forward()
        except OSError as e:
            raise SettingsError(f"committed, but not all in place yet ({e.strerror or e}); "
                                "the next start finishes it") from None
        logger.info("settings saved to %s%s", self.path, " with the device key" if key is not None else "")

    def _roll_forward(self) -> None:
        with open(self.journal, encoding="utf-8") as f:
            renames: Sequence[Sequence[str]] = json.load(f)["renames"]
        for src, dst in renames:
            if os.path.exists(src):
                _rename(src, dst)
        remove_durably(self.journal)

    def recover(self) -> list[str]:
        """Finish or forget an interrupted commit, and remove stray temporary files.

        Called before the settings are first read. A journal means the commit
        was made: its renames are finished. Staged ``.next`` files without a
        journal belong to a commit that never happened: they are removed.
        Temporary files of interrupted atomic writes of the settings, the key,
        the PIN and the start record are overwritten and removed, so no copy
        of a key is left anywhere but the key file.

        Returns:
            What was done, one line each (also logged).
        """
        done: list[str] = []
        if os.path.exists(self.journal):
            try:
                self._roll_forward()
                done.append("finished a commit interrupted by a power cut")
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.error("settings commit journal %s unusable (%s); the staged files are removed", self.journal, e)
                scrub(self.journal)
        done += self.scrub_strays()
        for line in done:
            logger.warning("settings: %s", line)
        return done

    def _private_names(self) -> dict[str, set[str]]:
        """``{folder: {file names}}`` of the files whose stray copies are ours to remove."""
        folder = os.path.dirname(os.path.abspath(self.path))
        names = {folder: {os.path.basename(self.path), os.path.basename(self.journal), "start.json",
                          "settings.failed.json", "console.pin"}}
        try:
            key_file = os.path.abspath(self.build(self._read_raw()).upload.key_file)
        except (ConfigError, OSError):
            key_file = ""
        if key_file:
            names.setdefault(os.path.dirname(key_file), set()).update({os.path.basename(key_file), "console.pin"})
        return names

    def scrub_strays(self) -> list[str]:
        """Remove (overwritten first) temporary and staged files of ours; returns what was removed."""
        removed = []
        for folder, names in self._private_names().items():
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            for entry in entries:
                match = _TEMP.match(entry)
                stray = (match is not None and match["name"] in names) or (
                    entry.endswith(".next") and entry.removesuffix(".next") in names)
                if stray and scrub(os.path.join(folder, entry)):
                    removed.append(f"removed the stray file {os.path.join(folder, entry)}")
        return removed

    def _read_raw(self) -> Overlay:
        try:
            return self.read()
        except ConfigError:
            return {}


# --- the PIN ---------------------------------------------------------------

#: scrypt at N=2**14, r=8: 16 MiB and tens of milliseconds per try on a Pi,
#: which together with the lockout makes guessing a short PIN hopeless.
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
PIN_MIN, PIN_MAX = 4, 32


def check_pin_format(pin: str) -> str | None:
    """Why ``pin`` cannot be a PIN, or ``None`` if it can."""
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        return f"a PIN has {PIN_MIN} to {PIN_MAX} characters"
    if any(c.isspace() or not c.isprintable() for c in pin):
        return "a PIN has no spaces or control characters"
    return None


def _hash(pin: str, salt: bytes, params: Mapping[str, int]) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=params["n"], r=params["r"],
                          p=params["p"], dklen=32)


@dataclasses.dataclass(frozen=True)
class PinVerdict:
    """What a PIN try came to.

    Attributes:
        ok: the PIN was right.
        locked: the try was not even checked: the store is locked out.
        retry_after_s: seconds until the next try is checked (0: at once).
        failures: failed tries in a row so far.
    """

    ok: bool
    locked: bool = False
    retry_after_s: float = 0.0
    failures: int = 0


class PinStore:
    """The console PIN, hashed, with a lockout that grows after failures.

    Args:
        path: the PIN file (JSON, mode 0600), kept beside the device key.
        clock: wall seconds (injectable). Wall time, not monotonic, because
            the lockout must survive a reboot; a clock that jumps back is
            handled by never waiting longer than the current delay.
        free_tries: failures allowed before the first delay.
        base_delay_s: the first delay; each further failure doubles it ...
        max_delay_s: ... up to this.
    """

    def __init__(self, path: StrPath, clock: Callable[[], float] = time.time, free_tries: int = 3,
                 base_delay_s: float = 30.0, max_delay_s: float = 3600.0) -> None:
        self.path = os.fspath(path)
        self.clock = clock
        self.free_tries = free_tries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s

    def _read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            # Fail closed: a damaged PIN file keeps the console locked; physical
            # presence (buttons held at boot) or a factory reset recovers it.
            logger.error("PIN file %s is unreadable (%s); console stays locked", self.path, e)
            return {"damaged": True}

    def _write(self, data: Mapping[str, Any]) -> None:
        write_atomic(self.path, json.dumps(data, sort_keys=True).encode("utf-8"), mode=0o600)

    def is_set(self) -> bool:
        """True once a PIN was set (a factory-new device has none)."""
        # Existence alone: a damaged file counts as set, so the console fails closed.
        return os.path.exists(self.path)

    def set(self, pin: str) -> None:
        """Store a new PIN (salted scrypt hash); clears failures.

        Raises:
            ValueError: the PIN's format is not acceptable.
            SettingsError: the file cannot be written.
        """
        problem = check_pin_format(pin)
        if problem:
            raise ValueError(problem)
        salt = secrets.token_bytes(16)
        self._write({"algo": "scrypt", **SCRYPT, "salt": salt.hex(),
                     "hash": _hash(pin, salt, SCRYPT).hex(), "failures": 0, "locked_until": 0.0})
        logger.info("console PIN changed")

    def delay_for(self, failures: int) -> float:
        """The wait after ``failures`` failed tries in a row."""
        if failures < self.free_tries:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.free_tries))

    def retry_after(self, data: Mapping[str, Any] | None = None) -> float:
        """Seconds until a try is checked again (0 if it would be now)."""
        data = self._read() if data is None else data
        if not data:
            return 0.0
        wait = float(data.get("locked_until", 0.0)) - self.clock()
        # A wall clock that jumped back (a Pi boots without a battery clock)
        # must not lock the console for years: never more than the current delay.
        wait = min(wait, self.delay_for(int(data.get("failures", 0))))
        return max(0.0, wait)

    def verify(self, pin: str) -> PinVerdict:
        """Check a PIN try, counting failures and locking out after too many.

        Returns:
            :class:`PinVerdict`.
        """
        data = self._read()
        if data is None:
            return PinVerdict(ok=True)
        failures = int(data.get("failures", 0))
        if data.get("damaged") or "hash" not in data:
            return PinVerdict(ok=False, locked=True, retry_after_s=self.max_delay_s, failures=failures)
        wait = self.retry_after(data)
        if wait > 0:
            return PinVerdict(ok=False, locked=True, retry_after_s=wait, failures=failures)
        params = {k: int(data[k]) for k in ("n", "r", "p")}
        good = hmac.compare_digest(_hash(pin, bytes.fromhex(data["salt"]), params), bytes.fromhex(data["hash"]))
        if good:
            if failures:
                data.update(failures=0, locked_until=0.0)
                self._write(data)
            return PinVerdict(ok=True)
        failures += 1
        delay = self.delay_for(failures)
        data.update(failures=failures, locked_until=self.clock() + delay)
        self._write(data)
        logger.warning("wrong console PIN (%d failed tries in a row)", failures)
        return PinVerdict(ok=False, retry_after_s=delay, failures=failures)

    def tries_left(self) -> int:
        """Failed tries still allowed before the lockout starts."""
        data = self._read() or {}
        return max(0, self.free_tries - int(data.get("failures", 0)))

    def clear(self) -> None:
        """Forget the PIN (factory reset)."""
        remove_durably(self.path)
