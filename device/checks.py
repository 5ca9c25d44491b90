"""Start-up checks: what must hold before the device takes ratings.

The supervisor runs these before it builds the app; what fails becomes a
:class:`Fault` with a hint a technician can act on over the console.
``Commit`` runs the same checks on the configuration it would write
(:func:`check_all`), so a committed value never stops the next start.
Values that come from outside (the hall's assignment) are not refused but
fitted to the screen with fallbacks (:func:`fit_to_screen`) and reported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device import config as config_mod
from device.config import Secret
from device.errors import (
    ConfigError,
    DisplayError,
    FontError,
    LayoutError,
    QRFitError,
    StorageDamaged,
    StorageError,
)
from device.queue.repair import events_in
from device.queue.schema import COMPANIONS
from device.ui import fonts
from device.ui.models import IdleScreen, Indicators, LaterScreen
from device.ui.screens import render

if TYPE_CHECKING:
    from device.config import Config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    """Something wrong that a technician should know of, with what fixes it.

    Attributes:
        code: a short stable name (``config``, ``font``, ``display``, ``pins``, ``storage`` ...).
        message: what is wrong, naming the key, file or part.
        fix: what to do about it.
        key: the configuration key at fault, if one is.
    """

    code: str
    message: str
    fix: str = ""
    key: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message, "fix": self.fix}
        if self.key:
            out["key"] = self.key
        return out


def check_screens(config: Config, size: tuple[int, int]) -> None:
    """Check that what the configuration asks the screen to show can be shown.

    A character missing from the font, a QR URL too long for the panel or a
    name that cannot fit is a configuration error naming the key, found at
    start rather than as a blank box in front of a citizen.

    Raises:
        ConfigError: listing every problem.
        FontError: the font itself is not installed.
    """
    fonts.check_fonts()
    problems: list[tuple[str, str]] = []
    texts = {
        "device.window_no": config.device.window_no,
        "device.window_name": config.device.window_name,
        "staff.name": config.staff.name,
        "staff.no": config.staff.no,
    }
    for level, tags in config.reasons.by_level().items():
        for n, (_code, text) in enumerate(tags):
            texts[f"reasons.{level.value}[{n}]"] = text
    for key, text in texts.items():
        try:
            fonts.check_text(text, key)
        except FontError as e:
            problems.append((key, str(e).removeprefix(f"{key}: ")))
    bad = {key for key, _ in problems}
    shown = {key: "-" if key in bad else text for key, text in texts.items()}
    try:
        # The fullest idle screen: every indicator on, a five-digit backlog.
        render(IdleScreen(shown["device.window_no"], shown["device.window_name"], shown["staff.name"],
                          shown["staff.no"], config.qr.url, Indicators(True, 99999, True, True)), size)
    except QRFitError as e:
        problems.append(("qr.url", str(e)))
    except LayoutError as e:
        problems.append(("staff.name", f"cannot be laid out on a {size[0]}x{size[1]} display: {e}"))
    if problems:
        raise ConfigError(problems)


def check_storage(config: Config) -> None:
    """Check the places the device writes: the outbox's folder, and that no file is used twice.

    The outbox's folder must exist (or be made) and be writable; the device
    key file must be a file of its own (not the outbox, the settings, the
    PIN or another of the device's files), and so must the outbox.

    Raises:
        ConfigError: naming ``outbox.path`` or ``upload.key_file``.
    """
    problems = []
    folder = os.path.dirname(os.path.abspath(config.outbox.path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        problems.append(("outbox.path", f"its folder {folder} cannot be made: {e.strerror}"))
    else:
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(("outbox.path", f"its folder {folder} is not writable"))
        elif os.path.isdir(config.outbox.path):
            problems.append(("outbox.path", f"{config.outbox.path} is a folder, not a file"))
    problems += check_paths(config)
    if problems:
        raise ConfigError(problems)


def device_files(config: Config) -> dict[str, str]:
    """``{real path: what it is}`` of every file the device keeps but its key (the outbox's companions too)."""
    outbox, settings, key = (os.path.realpath(p) for p in (
        config.outbox.path, config.console.settings_path, config.upload.key_file))
    files = {outbox + suffix: "the outbox" for suffix in ("", *COMPANIONS)}
    files[os.path.join(os.path.dirname(outbox), "assignment.json")] = "the hall's assignment"
    folder = os.path.dirname(settings)
    files.update({settings: "the settings file", settings + ".commit": "the settings journal",
                  os.path.join(folder, "start.json"): "the start record",
                  os.path.join(folder, "settings.failed.json"): "the failed settings"})
    files[os.path.join(os.path.dirname(key), "console.pin")] = "the console PIN file"
    return files


def check_paths(config: Config) -> list[tuple[str, str]]:
    """Problems with where the key and the outbox are: each must be a file of its own."""
    problems = []
    files = device_files(config)
    key, outbox = os.path.realpath(config.upload.key_file), os.path.realpath(config.outbox.path)
    if key in files or key.startswith(outbox + "."):
        what = files.get(key, "a file kept aside from the outbox")
        problems.append(("upload.key_file", f"{config.upload.key_file} is {what}; the device key needs a file "
                         "of its own"))
    elif os.path.isdir(key):
        problems.append(("upload.key_file", f"{config.upload.key_file} is a folder, not a file"))
    elif _is_database(key):
        problems.append(("upload.key_file", f"{config.upload.key_file} is a database, not a key file"))
    clash = {path: what for path, what in files.items() if what != "the outbox"}
    clash[key] = "the device key file"
    if outbox in clash:
        problems.append(("outbox.path", f"{config.outbox.path} is {clash[outbox]}; the outbox needs a file of its own"))
    return problems


def _is_database(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def check_new_outbox(old: Config, new: Config) -> list[tuple[str, str]]:
    """Problems with moving the outbox to ``new.outbox.path`` (at a commit that changes it).

    The new place must be empty or hold an empty outbox: the pending events
    move there at the next start (:func:`device.queue.repair.adopt`).
    """
    path = new.outbox.path
    if os.path.realpath(path) == os.path.realpath(old.outbox.path) or not os.path.exists(path):
        return []
    if os.path.getsize(path) and not _is_database(path):
        return [("outbox.path", f"{path} exists and is not an outbox; choose a new file")]
    n = events_in(path)
    if n:
        return [("outbox.path", f"{path} already holds an outbox with {n} events; the outbox can only move "
                 "to an empty place")]
    return []


def check_all(config: Config, size: tuple[int, int] | None = None) -> None:
    """Every check a start runs, on a configuration not yet in use (``Commit``).

    Args:
        config: the configuration to check.
        size: the frame size of the panel it would drive (default: the
            configured model's, at the configured rotation).

    Raises:
        ConfigError: listing every problem.
    """
    problems: list[tuple[str, str]] = []
    try:
        check_screens(config, size or configured_size(config))
    except ConfigError as e:
        problems += e.problems
    except FontError as e:
        # No font at all is the installation's fault, not the values': the start reports it.
        logger.warning("screens not checked: %s", e)
    try:
        check_storage(config)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)


#: The frame size the configured panel would have (when the panel itself is not there): the configuration's own.
configured_size = config_mod.frame_size


#: Shown for a character the font lacks.
FALLBACK_GLYPH = "□"


def fit_to_screen(config: Config, size: tuple[int, int], fallback: Config) -> tuple[Config, list[tuple[str, str]]]:
    """What the screen can show of a configuration from outside (the hall's assignment), with fallbacks.

    A character the font lacks becomes :data:`FALLBACK_GLYPH`; a staff name
    that still cannot be laid out is left out (the staff number alone); a QR
    URL that does not fit gives way to ``fallback``'s (the window's own QR).
    Never raises for the values; returns what was replaced, as problems.

    Returns:
        ``(config to show, [(key, what was done)])``.
    """
    problems: list[tuple[str, str]] = []
    device, staff, reasons = config.device, config.staff, config.reasons

    def shown(key: str, text: str) -> str:
        missing = _missing(text)
        if not missing:
            return text
        problems.append((key, f"{text!r} has characters the font lacks "
                         f"({', '.join(f'U+{ord(c):04X}' for c in sorted(missing))}); shown as {FALLBACK_GLYPH}"))
        return "".join(FALLBACK_GLYPH if c in missing else c for c in text)

    def shown_tags(level: str, items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(" ".join((code, shown(f"reasons.{level}[{n}]", text)))
                     for n, (code, text) in enumerate(item.split(None, 1) for item in items))

    config = dataclasses.replace(
        config,
        device=dataclasses.replace(device, window_no=shown("device.window_no", device.window_no),
                                   window_name=shown("device.window_name", device.window_name)),
        staff=dataclasses.replace(staff, name=shown("staff.name", staff.name), no=shown("staff.no", staff.no)),
        reasons=dataclasses.replace(reasons, dissatisfied=shown_tags("dissatisfied", reasons.dissatisfied),
                                    very_dissatisfied=shown_tags("very_dissatisfied", reasons.very_dissatisfied)))
    for _ in range(3):
        try:
            check_screens(config, size)
            break
        except ConfigError as e:
            keys = {key for key, _ in e.problems}
            if "qr.url" in keys and config.qr.url != fallback.qr.url:
                problems.append(("qr.url", f"too long for the display ({len(config.qr.url)} characters); "
                                 "the window's own QR is shown"))
                config = dataclasses.replace(config, qr=fallback.qr)
            elif "staff.name" in keys and config.staff.name:
                problems.append(("staff.name", f"{config.staff.name!r} cannot be laid out; the staff number "
                                 "is shown alone"))
                config = dataclasses.replace(config, staff=dataclasses.replace(config.staff, name=""))
            else:
                problems += [(key, message) for key, message in e.problems]
                config = fallback
        except FontError:
            break
    return config, problems


def qr_fits(url: str, size: tuple[int, int]) -> bool:
    """Whether a QR code for ``url`` can be shown on the screens that show a session's QR."""
    try:
        render(LaterScreen(qr_url=url), size)
    except (QRFitError, LayoutError):
        return False
    except FontError:
        return True
    return True


def _missing(text: str) -> set[str]:
    """Characters of ``text`` some size of the font lacks (none when the font is not installed)."""
    missing: set[str] = set()
    try:
        for size_px in fonts.SIZES:
            missing.update(fonts.missing_chars(text, size_px))
    except FontError:
        return set()
    return missing


def load_key(path: str) -> Secret:
    """The device key from its file; empty if there is none.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return Secret(f.read().strip())
    except FileNotFoundError:
        return Secret("")
    except OSError as e:
        raise ConfigError([("upload.key_file", f"cannot be read: {e.strerror}")]) from None


#: What a technician does about each kind of start-up failure.
FIX_HINTS = {
    "config": "Set the key to a valid value, then Commit (Get <key> shows it)",
    "font": "install the WenQuanYi Bitmap Song font: apt-get install xfonts-wqy",
    "display": "check the panel's wiring and display.model, display.interface, display.i2c_address; "
               "Test display after a Commit",
    "pins": "check the pin library (apt-get install python3-lgpio, or pip install lgpio) and buttons.pins",
    "storage": "check outbox.path (a writable folder on a disk with free space), then Commit or Restart",
    "storage_damage": "nothing to do at the device: it goes on with a new outbox by itself; report the lost "
                      "count (Status) to the hall, and keep the file kept aside for analysis",
    "internal": "Restart; if it persists, read the log (journalctl -u window-evaluator)",
}


def faults_from(error: BaseException, stage: str) -> list[Fault]:
    """Turn what a start raised into faults a technician can read and act on.

    Args:
        error: the exception.
        stage: what was being built (``config``, ``checks``, ``hardware``, ``app``).
    """
    if isinstance(error, StorageDamaged):
        # A storage fault: the supervisor tries again soon, and the next start opens the new database.
        return [Fault("storage", str(error), FIX_HINTS["storage_damage"], "outbox.path")]
    if isinstance(error, ConfigError):
        return [Fault("config", f"{key}: {message}", FIX_HINTS["config"].replace("the key", key), key)
                for key, message in error.problems]
    if isinstance(error, FontError):
        return [Fault("font", str(error), FIX_HINTS["font"])]
    if isinstance(error, DisplayError):
        return [Fault("display", str(error), FIX_HINTS["display"])]
    if isinstance(error, StorageError):
        return [Fault("storage", str(error), FIX_HINTS["storage"], "outbox.path")]
    name = type(error).__name__
    if stage == "hardware":
        # gpiozero's BadPinFactory, an ImportError of a pin library, a bus that will not open.
        if "Pin" in name or isinstance(error, ImportError):
            return [Fault("pins", f"no pin library could be loaded: {error}", FIX_HINTS["pins"])]
        return [Fault("display", f"{name}: {error}", FIX_HINTS["display"])]
    if isinstance(error, OSError):
        return [Fault("storage", f"{name}: {error}", FIX_HINTS["storage"])]
    return [Fault("internal", f"{stage} failed: {name}: {error}", FIX_HINTS["internal"])]
