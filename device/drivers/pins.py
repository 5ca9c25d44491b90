"""The Pi's pin library, loaded once, with a message a technician can act on.

gpiozero picks its pin library itself (``GPIOZERO_PIN_FACTORY``, else lgpio,
then RPi.GPIO, pigpio and its native one). Two things go wrong on a Pi, and
both are handled here, at the boundary:

- **lgpio's working directory.** lgpio makes its notification pipes
  (``.lgd-nfy*``) in ``$LG_WD``, else in the working directory, and
  ``chdir``\\ s there. A service started in ``/`` by an unprivileged user
  cannot make them and the import fails. When ``LG_WD`` is not set and the
  working directory takes no pipe, ``LG_WD`` is pointed at the service's
  runtime directory (``$RUNTIME_DIRECTORY``, set by systemd's
  ``RuntimeDirectory=``) or a private temporary folder, before gpiozero
  imports lgpio; the working directory is given back afterwards.
- **No pin library at all.** gpiozero raises a bare ``BadPinFactory`` or an
  ``ImportError`` after warning once per library tried; here that becomes
  one :class:`~device.errors.PinLibraryError` that names each library and
  why it failed, which the supervisor shows as the ``pins`` fault in recovery.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings

from gpiozero import Device
from gpiozero.pins import Factory

from device.errors import PinLibraryError

logger = logging.getLogger(__name__)

#: lgpio's own variable for the folder of its notification pipes.
LG_WD = "LG_WD"


def prepare_lgpio_workdir() -> str | None:
    """Point ``LG_WD`` at a folder lgpio can make its pipes in, if it needs one.

    Returns:
        The folder chosen, or None when ``LG_WD`` was set already or the
        working directory will do.
    """
    if os.environ.get(LG_WD):
        return None
    if _takes_a_pipe(os.curdir):
        return None
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    folder = runtime if runtime and _takes_a_pipe(runtime) else tempfile.mkdtemp(prefix="evaluator-lgpio-")
    os.environ[LG_WD] = folder
    logger.info("the working directory %s takes no lgpio pipe; %s=%s", _cwd(), LG_WD, folder)
    return folder


def _takes_a_pipe(folder: str) -> bool:
    """Whether a FIFO can be made in ``folder`` (``os.access`` says yes to root even on /proc)."""
    probe = os.path.join(folder, f".evaluator-probe-{os.getpid()}")
    try:
        os.mkfifo(probe, 0o600)
    except OSError:
        return False
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "(gone)"


def open_pin_factory() -> Factory:
    """gpiozero's pin factory, loaded now rather than by the first button.

    Raises:
        PinLibraryError: no pin library loaded; the message names each one
            tried and why it failed.
    """
    if Device.pin_factory is not None:
        return Device.pin_factory
    prepare_lgpio_workdir()
    cwd = _cwd()
    with warnings.catch_warnings(record=True) as fallbacks:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except Exception as e:
            tried = [str(w.message) for w in fallbacks if "Falling back" in str(w.message)]
            raise PinLibraryError(_describe(e, tried)) from e
        finally:
            # lgpio chdir()s into its working directory; paths in the configuration stay relative to ours.
            if cwd != "(gone)" and _cwd() != cwd:
                try:
                    os.chdir(cwd)
                except OSError:
                    pass
    factory = Device.pin_factory
    assert factory is not None
    tried = [str(w.message) for w in fallbacks if "Falling back" in str(w.message)]
    if tried:
        # The preferred library failed: say why, or a later failure of the one used hides it.
        logger.warning("pin library: %s, after: %s", type(factory).__name__, "; ".join(tried))
    else:
        logger.info("pin library: %s", type(factory).__name__)
    return factory


def _describe(error: Exception, tried: list[str]) -> str:
    name = os.environ.get("GPIOZERO_PIN_FACTORY")
    reasons = "; ".join(tried) if tried else f"{type(error).__name__}: {error}"
    if name:
        reasons = f"GPIOZERO_PIN_FACTORY={name}: {type(error).__name__}: {error}"
    hint = ""
    if "lgd-nfy" in str(error) or any("lgd-nfy" in t for t in tried):
        hint = (f" (lgpio makes its notification pipes in its working directory: set {LG_WD} to a writable "
                "folder, e.g. RuntimeDirectory= in the service)")
    elif "can not open gpiochip" in reasons:
        hint = (" (/dev/gpiochip0 cannot be opened: the service's user needs the gpio group, "
                "SupplementaryGroups=gpio in the unit or sudo usermod -aG gpio evaluator; "
                "or this kernel has no GPIO chip)")
    return f"gpiozero could load none: {reasons}{hint}"
