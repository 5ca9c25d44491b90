"""Values staged over the console, and ``Commit``, ``Discard``, ``FactoryReset``.

A change is staged first (``StaffName 李四``), checked against the whole
configuration as it is staged, and only ``Commit`` validates everything
staged as a whole, runs every check a start runs on it (glyphs, QR fit,
writable places, where the key and the outbox are: :func:`device.checks.check_all`)
and refuses what would fail, saying why; then it asks the files' owner (the device's
loop, or the supervisor in recovery: :class:`~device.handlers.commands.CommitSettings`)
to write the settings and a new device key as one unit (so a power cut
mid-write leaves the old pair or the new, never a mix:
:meth:`~device.settings.SettingsStore.commit`) and to take the new configuration
into use. The console's thread writes none of these files itself.

A new ``outbox.path`` never strands pending events: the outbox moves there,
with its whole chain, at the next start (:func:`device.queue.repair.request_move`).
A move keeps one chain and one seq space in one file; draining the old file
in parallel would need two outboxes in service and a second chain to check.
``FactoryReset`` erases settings, key and PIN but keeps every rating: if the
outbox's place changes with the settings, it moves back to the default place.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import TYPE_CHECKING, Any

from device import checks
from device.config import Secret
from device.console.commands import Answer, Command, Context, Needs
from device.errors import CommandRefused, ConfigError, SettingsError
from device.handlers.commands import CommitSettings, EraseSettings, NotApplied
from device.queue import repair
from device.settings import scrub

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
        """Validate, check as a start would, write as one unit, and apply what is staged.

        Raises:
            ConfigError: listing every bad key or failed check; nothing is written.
            CommandRefused: ``commit_failed``, when a file cannot be written;
                nothing changed and everything stays staged.
        """
        if not self.values and self.key is None:
            return {"ok": True, "committed": [], "restart_needed": [], "message": "nothing staged"}
        overlay = self.overlay(self.values)
        new_config = self.settings.build(overlay)  # ConfigError: every bad key, nothing written
        old_config = self.device.current_config()
        problems = checks.check_new_outbox(old_config, new_config)
        try:
            checks.check_all(new_config)
        except ConfigError as e:
            problems = e.problems + problems
        if problems:
            raise ConfigError(problems)
        committed = self.names()
        key = self.key
        old_key, new_key = (os.path.abspath(c.upload.key_file) for c in (old_config, new_config))
        move = (old_key, new_key) if key is None and old_key != new_key and os.path.exists(old_key) else None
        values = bool(self.values)

        def write() -> None:
            """Run by the files' owner (the loop's thread, or the supervisor's in recovery)."""
            if os.path.realpath(old_config.outbox.path) != os.path.realpath(new_config.outbox.path):
                # Before the settings: once they name the new place, the outbox must follow.
                repair.request_move(old_config.outbox.path, new_config.outbox.path)
            self.settings.commit(overlay if values else None,
                                 key=(new_key, key.reveal().encode("utf-8")) if key is not None else None, move=move)
            if key is not None and old_key != new_key and not checks.check_paths(old_config):
                # A new key in a new place: the old key file is no key of this device any more.
                scrub(old_key)
            logger.info("committed %s%s", ", ".join(committed), "; device key replaced" if key is not None else "")

        try:
            restart = list(self.device.ask(CommitSettings(write, new_config, key)) or [])
        except (SettingsError, OSError) as e:
            raise CommandRefused("commit_failed", str(e) if isinstance(e, SettingsError)
                                 else f"nothing changed: {e.strerror or e}") from None
        except NotApplied as e:
            self.values.clear()
            self.key = None
            return {"ok": False, "error": "apply_failed", "committed": committed, "saved": True,
                    "message": f"saved, but not applied ({str(e).split(':')[0]}); Restart to apply"}
        self.values.clear()
        self.key = None
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
    current = ctx.device.current_config()
    try:
        default = ctx.settings.build({})
    except ConfigError:
        default = current

    def erase() -> None:
        """Run by the files' owner (the loop's thread, or the supervisor's in recovery)."""
        if os.path.realpath(default.outbox.path) != os.path.realpath(current.outbox.path):
            # The settings named another place for the outbox: its events follow it back.
            repair.request_move(current.outbox.path, default.outbox.path)
        ctx.settings.scrub_strays()
        ctx.settings.clear()
        for config in (current, default):
            key_file = config.upload.key_file
            if [p for p in checks.check_paths(config) if p[0] == "upload.key_file"]:
                # Never delete a file that is not a key file of its own (the outbox, the settings).
                logger.error("factory reset: %s is not removed: it is not a key file of its own", key_file)
                continue
            scrub(key_file)
        ctx.settings.scrub_strays()

    try:
        ctx.device.ask(EraseSettings(erase))
        ctx.pins.clear()  # the PIN is the console's own file
    except (SettingsError, OSError) as e:
        raise CommandRefused("commit_failed", f"factory reset incomplete: {e}") from None
    ctx.staging.discard()
    ctx.auth.lock()
    logger.warning("factory reset: settings, device key and PIN erased; every rating kept")
    ctx.send({"ok": True, "factory_reset": True, "restarting": True})
    ctx.device.factory_reset()


COMMANDS = {
    "commit": Command(_commit, Needs.ALWAYS),
    # The design: once a PIN is set, Discard needs it too.
    "discard": Command(_discard, Needs.ALWAYS),
    "factoryreset": Command(_factory_reset, Needs.ALWAYS),
}
