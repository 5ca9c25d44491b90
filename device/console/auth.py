"""Who may change the device: the PIN, physical presence, a factory-new device.

Changes need authorisation: the PIN (``Auth``), which lapses after a while
without commands; physical presence (buttons 1 and 5 held at boot); or a
factory-new device that has no PIN yet, so the first provisioning needs
nothing but the cable. Reads never need it. A wrong PIN ends any earlier
authorisation, and the :class:`~device.settings.PinStore` locks out
guessing with a growing delay.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from device.config import MASK
from device.console.commands import Answer, Command, Context, Needs
from device.errors import CommandRefused, SettingsError
from device.settings import PinStore, check_pin_format

logger = logging.getLogger(__name__)

#: Authorisation by PIN lapses after this long without input (``console.auto_lock_s`` sets it).
AUTH_IDLE_S = 300.0
#: Physical presence (buttons held at boot) authorises for this long.
PRESENCE_S = 600.0


class Auth:
    """The console's authorisation state.

    Args:
        pins: the PIN store.
        clock: monotonic seconds.
        idle_s: PIN authorisation lapses after this long without a command.
        on_change: called when authorisation may have come or gone (the
            Improv client is told of the new state).
    """

    def __init__(self, pins: PinStore, clock: Callable[[], float], idle_s: float = AUTH_IDLE_S,
                 on_change: Callable[[], None] | None = None) -> None:
        self.pins = pins
        self.clock = clock
        self.idle_s = idle_s
        self.on_change = on_change
        self._until = 0.0
        self._presence_until = 0.0

    def authorized(self) -> bool:
        """Whether changes are allowed now."""
        now = self.clock()
        return not self.pins.is_set() or self._until > now or self._presence_until > now

    @property
    def presence(self) -> bool:
        """Whether physical presence authorises now."""
        return self._presence_until > self.clock()

    def require(self) -> None:
        """Refuse unless authorised; each authorised command restarts the idle time.

        Raises:
            CommandRefused: ``not_authorized``.
        """
        now = self.clock()
        if not self.authorized():
            raise CommandRefused("not_authorized", "changes need authorisation: send Auth <PIN>, or hold "
                                 "buttons 1 and 5 while the device starts")
        if self._until > now:
            self._until = now + self.idle_s

    def touch(self) -> None:
        """Input arrived: a live PIN authorisation starts its idle time again; a lapsed one ends here."""
        now = self.clock()
        if self._until > now:
            self._until = now + self.idle_s
        elif self._until:
            self._until = 0.0
            logger.info("console locked after %d s without input", self.idle_s)
            self._changed()

    def grant(self) -> None:
        """Authorise for :attr:`idle_s` (the right PIN, or whoever just set it)."""
        self._until = self.clock() + self.idle_s
        self._changed()

    def grant_presence(self, duration_s: float = PRESENCE_S) -> None:
        """Physical presence proven: changes allowed for ``duration_s``."""
        self._presence_until = self.clock() + duration_s
        logger.info("console authorised by physical presence for %d s", duration_s)
        self._changed()

    def revoke(self) -> None:
        """End the PIN authorisation (a wrong PIN was tried); presence stays."""
        self._until = 0.0
        self._changed()

    def lock(self) -> None:
        """End every authorisation (``Lock``, a wrong PIN, a factory reset)."""
        self._until = self._presence_until = 0.0
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


# --- the commands --------------------------------------------------------------

def _auth(ctx: Context, arg: str) -> Answer:
    auth, pins = ctx.auth, ctx.pins
    if not arg:
        return {"ok": True, "authorized": auth.authorized(), "pin_set": pins.is_set(), "presence": auth.presence}
    if not pins.is_set():
        return {"ok": True, "authorized": True, "pin_set": False,
                "message": "no PIN set yet (factory-new): changes are open; set one with Pin <new PIN>"}
    verdict = pins.verify(arg)
    if verdict.ok:
        logger.info("console authorised by PIN")
        auth.grant()
        return {"ok": True, "authorized": True, "pin_set": True}
    # A wrong try ends any earlier PIN authorisation: whoever types now must know the PIN.
    auth.revoke()
    wait = math.ceil(verdict.retry_after_s)
    if verdict.locked:
        raise CommandRefused("locked_out", f"too many wrong PINs: try again in {wait} s", retry_after_s=wait)
    tries_left = pins.tries_left()
    message = "wrong PIN" + (f"; next try in {wait} s" if wait else
                             f"; {tries_left} tries left before a lockout")
    raise CommandRefused("wrong_pin", message, retry_after_s=wait, tries_left=tries_left)


def _lock(ctx: Context, arg: str) -> Answer:
    ctx.auth.lock()
    return {"ok": True, "authorized": ctx.auth.authorized(), "pin_set": ctx.pins.is_set()}


def _pin(ctx: Context, arg: str) -> Answer:
    if not arg:
        return {"ok": True, "pin": MASK, "pin_set": ctx.pins.is_set()}
    problem = check_pin_format(arg)
    if problem:
        raise CommandRefused("invalid_value", problem)
    try:
        ctx.pins.set(arg)
    except SettingsError as e:
        raise CommandRefused("commit_failed", f"PIN not changed: {e}") from None
    # Whoever just set the PIN stays authorised for this session.
    ctx.auth.grant()
    return {"ok": True, "pin_set": True, "message": "PIN set; changes now need it"}


COMMANDS = {
    "auth": Command(_auth, name="Auth", summary="authorise changes with the PIN (alone: whether authorised)",
                    usage="Auth [PIN]", example="Auth 2468"),
    "lock": Command(_lock, name="Lock", summary="end the authorisation now", usage="Lock", example="Lock"),
    "pin": Command(_pin, Needs.TO_CHANGE, name="Pin", summary="set or change the PIN (4 to 32 characters)",
                   usage="Pin [new PIN]", example="Pin 97531"),
}
