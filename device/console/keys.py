"""``PublicKey`` and ``RotateKey``: the device's own Ed25519 key pair on the console.

``PublicKey`` needs no authorisation: the public key and its fingerprint are
what a technician copies into the hall's registry (the key pair is made, on
first use, when there is none yet). ``RotateKey`` needs it: the console asks
the device (:class:`RotateDeviceKey`, carried out on the loop's thread, which
owns the key files) to make the next key, and shows it with the fingerprint
of the key it replaces; the device goes on signing with the current key until
the hall has answered a request signed with the next one (probed on
heartbeats), so no rating waits and none is lost. The private key is never shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from device.console.commands import Answer, Command, Context, Needs
from device.errors import CommandRefused, DeviceUnavailable, SettingsError
from device.keys import DeviceKeys, KeyInfo, device_keys
from device.loop import Command as DeviceRequest

logger = logging.getLogger(__name__)


def _keys(ctx: Context) -> DeviceKeys:
    path = ctx.device.current_config().upload.private_key_file
    try:
        return device_keys(path)
    except SettingsError as e:
        raise CommandRefused("key_unavailable", str(e)) from None


def _public_key(ctx: Context, arg: str) -> Answer:
    keys = _keys(ctx)
    cfg = ctx.device.current_config()
    answer: Answer = {"ok": True, **keys.info().to_json(), "signature": cfg.upload.signature}
    pending = keys.pending_info()
    if pending is not None:
        answer["next"] = pending.to_json()
    return answer


@dataclass(eq=False)
class RotateDeviceKey(DeviceRequest):
    """Make the next key in ``path`` (or keep the one waiting); the answer is ``(next, current)``."""

    path: str


def rotate_device_key(request: RotateDeviceKey) -> tuple[KeyInfo, KeyInfo]:
    """The loop's handler of :class:`RotateDeviceKey` (``loop.register(RotateDeviceKey, rotate_device_key)``)."""
    return device_keys(request.path).rotate()


def _rotate_key(ctx: Context, arg: str) -> Answer:
    path = ctx.device.current_config().upload.private_key_file
    try:
        new, old = ctx.device.ask(RotateDeviceKey(path))
    except SettingsError as e:
        raise CommandRefused("key_unavailable", str(e)) from None
    except DeviceUnavailable as e:
        raise CommandRefused("device_unavailable", str(e)) from None
    logger.warning("console: key rotation asked; next key %s", new.fingerprint)
    return {"ok": True, **new.to_json(), "previous_fingerprint": old.fingerprint, "pending": True,
            "message": "register the new public key with the hall; the device signs with the current key "
                       "until the hall answers the new one, then drops the old"}


COMMANDS = {
    "publickey": Command(_public_key, name="PublicKey", usage="PublicKey", example="PublicKey",
                         summary="the device's Ed25519 public key and its fingerprint (never the private key)"),
    "rotatekey": Command(_rotate_key, Needs.ALWAYS, name="RotateKey", usage="RotateKey", example="RotateKey",
                         summary="make the next key pair; the device signs with it once the hall accepts it "
                                 "(register the new public key at the hall: keys import)"),
}
