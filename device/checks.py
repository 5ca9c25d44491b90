"""Start-up checks: what must hold before the device takes ratings.

The supervisor runs these before it builds the app; what fails becomes a
:class:`Fault` with a hint a technician can act on over the console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device.config import Secret
from device.errors import ConfigError, FontError, QRFitError

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
    from device.errors import LayoutError
    from device.ui import fonts
    from device.ui.models import IdleScreen, Indicators
    from device.ui.screens import render

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
    """Check that the outbox's folder exists (or can be made) and can be written.

    Raises:
        ConfigError: naming ``outbox.path``.
    """
    import os

    folder = os.path.dirname(os.path.abspath(config.outbox.path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError([("outbox.path", f"its folder {folder} cannot be made: {e.strerror}")]) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError([("outbox.path", f"its folder {folder} is not writable")])


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
    "internal": "Restart; if it persists, read the log (journalctl -u window-evaluator)",
}


def faults_from(error: BaseException, stage: str) -> list[Fault]:
    """Turn what a start raised into faults a technician can read and act on.

    Args:
        error: the exception.
        stage: what was being built (``config``, ``checks``, ``hardware``, ``app``).
    """
    from device.errors import DisplayError, StorageError

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
