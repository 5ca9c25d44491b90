"""Values staged over the console, and ``Commit``, ``Discard``, ``FactoryReset``.

A change is staged first (``StaffName 李四``), checked against the whole
configuration as it is staged, and only ``Commit`` validates everything
staged as a whole, writes it atomically (so a power cut mid-write leaves the
old settings or the new, never a mix) and hands the new configuration to the
device through :meth:`~device.control.DeviceControl.apply`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import TYPE_CHECKING, Any

from device.config import Secret
from device.console.commands import Answer, Command, Context, Needs
from device.errors import CommandRefused, ConfigError, SettingsError
from device.settings import remove_durably, write_atomic

if TYPE_CHECKING:
    from device.control import DeviceControl
    from device.settings import Overlay, SettingsStore

logger = logging.getLogger(__name__)


class Staging:
    """What ``Commit`` will write: settings by ``section.key``, and a new device key.

    Args:
        settings: the overlay store the staged values go into.
        device: to read the running configuration and to apply the committed one.
    """

    def __init__(self, settings: SettingsStore, device: DeviceControl) -> None:
        self.settings = settings
        self.device = device
        self.values: dict[str, Any] = {}
        self.key: Secret | None = None

    def names(self) -> list[str]:
        """What is staged, by key (``device_key`` for the key; never its value)."""
        return sorted(self.values) + (["device_key"] if self.key is not None else [])

    def stage(self, values: dict[str, Any]) -> None:
        """Stage ``{section.key: value}`` after checking each against the whole configuration.

        Raises:
            CommandRefused: ``invalid_value``, when one of ``values`` is wrong in context.
        """
        overlay = self.overlay({**self.values, **values})
        try:
            self.settings.build(overlay)
        except ConfigError as e:
            mine = [(k, m) for k, m in e.problems if k in values]
            if mine:
                raise CommandRefused("invalid_value", "; ".join(f"{k}: {m}" for k, m in mine),
                                     problems=[{"key": k, "message": m} for k, m in mine]) from None
            # Problems elsewhere (another staged key, a cross check) surface at Commit.
        self.values.update(values)

    def stage_key(self, key: Secret) -> None:
        self.key = key

    def overlay(self, staged: dict[str, Any]) -> Overlay:
        """The stored overlay with ``staged`` on top."""
        overlay = copy.deepcopy(self.settings.read())
        for full_key, value in staged.items():
            section, _, key = full_key.partition(".")
            overlay.setdefault(section, {})[key] = value
        return overlay

    def discard(self) -> list[str]:
        """Drop everything staged; returns what was."""
        dropped = self.names()
        self.values.clear()
        self.key = None
        return dropped

    def commit(self) -> Answer:
        """Validate, write and apply what is staged.

        Raises:
            ConfigError: listing every bad key; nothing is written.
            CommandRefused: ``commit_failed``, when a file cannot be written;
                what was not written stays staged.
        """
        if not self.values and self.key is None:
            return {"ok": True, "committed": [], "restart_needed": [], "message": "nothing staged"}
        overlay = self.overlay(self.values)
        new_config = self.settings.build(overlay)  # ConfigError: every bad key, nothing written
        committed = self.names()
        key = self.key
        if key is not None:
            try:
                write_atomic(new_config.upload.key_file, key.reveal().encode("utf-8"), mode=0o600)
            except SettingsError as e:
                raise CommandRefused("commit_failed", f"nothing changed: {e}") from None
            self.key = None
            logger.info("device key replaced")
        if self.values:
            try:
                self.settings.save(overlay)
            except SettingsError as e:
                saved = " (the device key was saved)" if key is not None else ""
                raise CommandRefused("commit_failed", f"settings not saved{saved}: {e}") from None
            self.values.clear()
        logger.info("committed %s", ", ".join(committed))
        try:
            restart = list(self.device.apply(new_config, key) or [])
        except Exception as e:
            logger.exception("committed settings could not be applied")
            return {"ok": False, "error": "apply_failed", "committed": committed, "saved": True,
                    "message": f"saved, but not applied ({type(e).__name__}); Restart to apply"}
        answer: Answer = {"ok": True, "committed": committed, "restart_needed": restart}
        if restart:
            answer["message"] = "saved; restart to apply " + ", ".join(restart)
        return answer


def key_file_set(ctx: Context) -> bool:
    """Whether the running configuration's device key file holds a key."""
    try:
        return os.path.getsize(ctx.device.current_config().upload.key_file) > 0
    except OSError:
        return False


# --- the commands --------------------------------------------------------------

def _commit(ctx: Context, arg: str) -> Answer:
    return ctx.staging.commit()


def _discard(ctx: Context, arg: str) -> Answer:
    return {"ok": True, "discarded": ctx.staging.discard()}


def _factory_reset(ctx: Context, arg: str) -> None:
    if arg.lower() not in ("yes", "confirm"):
        raise CommandRefused("confirm_needed", "send 'FactoryReset yes' to erase the settings, the device key "
                             "and the PIN (ratings not yet delivered are kept)")
    key_file = ctx.device.current_config().upload.key_file
    try:
        ctx.settings.clear()
        remove_durably(key_file)
        ctx.pins.clear()
    except SettingsError as e:
        raise CommandRefused("commit_failed", f"factory reset incomplete: {e}") from None
    ctx.staging.discard()
    ctx.auth.lock()
    logger.warning("factory reset: settings, device key and PIN erased")
    ctx.send({"ok": True, "factory_reset": True, "restarting": True})
    ctx.device.factory_reset()


COMMANDS = {
    "commit": Command(_commit, Needs.ALWAYS),
    # The design: once a PIN is set, Discard needs it too.
    "discard": Command(_discard, Needs.ALWAYS),
    "factoryreset": Command(_factory_reset, Needs.ALWAYS),
}
