"""``Help``, ``Status``, ``Queue``, ``Upload`` and ``Restart``.

``Status`` needs no authorisation and shows no secret: fields whose names
look secret are dropped from what the device reports, whatever it returns.
"""

from __future__ import annotations

import logging

from device.console.commands import Answer, Command, Context, Needs, jsonable
from device.console.settings import PAIRS, SETTINGS
from device.console.staging import key_file_set

logger = logging.getLogger(__name__)

#: Field names never passed on from DeviceControl.status(), whatever it returns.
SECRET_FIELDS = frozenset({"key", "device_key", "pin", "password", "secret", "token"})

HELP = {
    "Help": "this list",
    "Status": "device id, firmware, window, staff, uplink, backlog, authorisation",
    "DeviceId|WindowNo|WindowName|Channel|StaffNo|StaffName|StaffDept|Server|Source|Display|QrUrl [value]":
        "read a setting, or stage a new value",
    "Window [no [name]] | Staff [no [name]]": "read or stage both at once",
    "Get [section.key] | Set section.key value": "any configuration key (Get alone: all)",
    "DeviceKey [key]": "stage the device key (write-only; reads answer ****)",
    "Auth [PIN] | Lock": "authorise changes with the PIN / end authorisation",
    "Pin [new PIN]": "set or change the PIN (4 to 32 characters)",
    "Commit | Discard": "validate, save and apply the staged changes / drop them",
    "Test buttons [timeout_s] | Test display | Test uplink": "self-tests",
    "Queue | Upload": "outbox counts / upload now",
    "Restart | FactoryReset yes": "restart / erase settings, device key and PIN",
    "PublicKey | RotateKey": "the device's Ed25519 public key and fingerprint / make the next key (rotation)",
}


def _help(ctx: Context, arg: str) -> Answer:
    return {"ok": True, "commands": HELP, "settings": {**SETTINGS, **{k: list(v) for k, v in PAIRS.items()}}}


def _status(ctx: Context, arg: str) -> Answer:
    cfg = ctx.device.current_config()
    try:
        extra = dict(ctx.device.status() or {})
    except Exception as e:
        logger.exception("device status failed")
        extra = {"status_error": type(e).__name__}
    answer: Answer = {k: jsonable(v) for k, v in extra.items() if k.lower() not in SECRET_FIELDS}
    answer.update({
        "ok": True, "device_id": cfg.device.id, "firmware": ctx.firmware,
        "window_no": cfg.device.window_no, "window_name": cfg.device.window_name,
        "staff_no": cfg.staff.no, "staff_name": cfg.staff.name, "server": cfg.upload.server,
        "channel": cfg.device.channel, "source": cfg.session.source, "display": cfg.display.model,
        "key_set": key_file_set(ctx), "pin_set": ctx.pins.is_set(),
        "authorized": ctx.auth.authorized(), "staged": ctx.staging.names(),
    })
    return answer


def _queue(ctx: Context, arg: str) -> Answer:
    return {"ok": True, **jsonable(dict(ctx.device.queue() or {}))}


def _upload(ctx: Context, arg: str) -> Answer:
    ctx.device.upload_now()
    return {"ok": True, "upload": "started"}


def _restart(ctx: Context, arg: str) -> None:
    ctx.send({"ok": True, "restarting": True, "discarded": ctx.staging.names()})
    ctx.device.restart()


COMMANDS = {
    "help": Command(_help),
    "status": Command(_status),
    "queue": Command(_queue),
    # The design: once a PIN is set, Upload (which also sends dead letters again) needs it.
    "upload": Command(_upload, Needs.ALWAYS),
    "restart": Command(_restart, Needs.ALWAYS),
}
