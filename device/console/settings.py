"""Reading and staging settings: ``Get``, ``Set``, the short names, ``DeviceKey``.

``StaffName`` reads a setting, ``StaffName 李四`` stages a new value;
``Set``/``Get`` reach every ``section.key`` of the schema, ``Window`` and
``Staff`` read or stage two at once. Values are read by
:func:`device.config.parse_value`, as ``--set`` reads them. The device key
is write-only: reads answer ``****``.
"""

from __future__ import annotations

import functools
from typing import Any

from device import config as config_mod
from device.config import MASK, Secret
from device.console.commands import Answer, Command, Context, Needs, jsonable
from device.console.staging import key_file_set
from device.errors import CommandRefused, ConfigError

#: Short names for the settings a technician sets most; ``Set``/``Get`` reach every key.
SETTINGS = {
    "deviceid": "device.id",
    "windowno": "device.window_no",
    "windowname": "device.window_name",
    "channel": "device.channel",
    "staffno": "staff.no",
    "staffname": "staff.name",
    "staffdept": "staff.dept",
    "server": "upload.server",
    "source": "session.source",
    "sessionsource": "session.source",
    "display": "display.model",
    "displaymodel": "display.model",
    "qrurl": "qr.url",
}
#: How help writes each short name, and an example value.
SETTING_NAMES = {
    "deviceid": ("DeviceId", "WE-0012"),
    "windowno": ("WindowNo", "12"),
    "windowname": ("WindowName", "不动产登记"),
    "channel": ("Channel", "5"),
    "staffno": ("StaffNo", "0123"),
    "staffname": ("StaffName", "李四"),
    "staffdept": ("StaffDept", "不动产登记中心"),
    "server": ("Server", "https://hall.example.org"),
    "source": ("Source", "staff_button"),
    "sessionsource": ("SessionSource", "hall"),
    "display": ("Display", "sh1106"),
    "displaymodel": ("DisplayModel", "ssd1306"),
    "qrurl": ("QrUrl", "https://hcp.example.org/w/12"),
}
#: Commands that read or stage two settings at once: ``Window 12 综合受理``.
PAIRS = {"window": ("device.window_no", "device.window_name"), "staff": ("staff.no", "staff.name")}
#: A device key's length, in characters.
KEY_MIN, KEY_MAX = 16, 256


def _current(ctx: Context, full_key: str) -> Any:
    section, _, key = full_key.partition(".")
    return jsonable(config_mod.as_dict(ctx.device.current_config())[section][key])


def _check_key(full_key: str) -> None:
    if full_key not in config_mod.key_names():
        raise CommandRefused("unknown_key", f"no configuration key {full_key!r}; send Get for the list")


def _parse(full_key: str, text: str) -> Any:
    try:
        return config_mod.parse_value(full_key, text)
    except ConfigError as e:
        raise CommandRefused("invalid_value", "; ".join(f"{k}: {m}" for k, m in e.problems), key=full_key) from None


def _read_answer(ctx: Context, full_key: str) -> Answer:
    answer: Answer = {"ok": True, "key": full_key, "value": _current(ctx, full_key)}
    if full_key in ctx.staging.values:
        answer["staged"] = jsonable(ctx.staging.values[full_key])
    return answer


def _setting(full_key: str, ctx: Context, arg: str) -> Answer:
    if not arg:
        return _read_answer(ctx, full_key)
    value = _parse(full_key, arg)
    ctx.staging.stage({full_key: value})
    return {"ok": True, "key": full_key, "staged": jsonable(value)}


def _pair(keys: tuple[str, str], ctx: Context, arg: str) -> Answer:
    if not arg:
        answer: Answer = {"ok": True, "values": {k: _current(ctx, k) for k in keys}}
        staged = {k: jsonable(ctx.staging.values[k]) for k in keys if k in ctx.staging.values}
        if staged:
            answer["staged"] = staged
        return answer
    first, _, rest = arg.partition(" ")
    values = {keys[0]: _parse(keys[0], first)}
    if rest.strip():
        values[keys[1]] = _parse(keys[1], rest.strip())
    ctx.staging.stage(values)
    return {"ok": True, "staged": {k: jsonable(v) for k, v in values.items()}}


def _get(ctx: Context, arg: str) -> Answer:
    if not arg:
        answer: Answer = {"ok": True, "config": jsonable(config_mod.as_dict(ctx.device.current_config()))}
        if ctx.staging.values:
            answer["staged"] = jsonable(ctx.staging.values)
        return answer
    full_key = arg.split(maxsplit=1)[0].lower()
    _check_key(full_key)
    answer = _read_answer(ctx, full_key)
    current = answer["value"]
    if config_mod.is_path_key(full_key) or (isinstance(current, (int, float)) and not isinstance(current, bool)):
        # What the key accepts, for a person about to Set it (its range, or the rules of a path).
        answer["rule"] = config_mod.rule(full_key)
    return answer


def _set(ctx: Context, arg: str) -> Answer:
    full_key, _, text = arg.partition(" ")
    full_key = full_key.lower()
    if not full_key:
        raise CommandRefused("missing_value", "use: Set section.key value")
    _check_key(full_key)
    if not text.strip():
        raise CommandRefused("missing_value", f"use: Set {full_key} value")
    value = _parse(full_key, text)
    ctx.staging.stage({full_key: value})
    return {"ok": True, "key": full_key, "staged": jsonable(value)}


def _device_key(ctx: Context, arg: str) -> Answer:
    if not arg:
        answer: Answer = {"ok": True, "key": "device_key", "value": MASK, "set": key_file_set(ctx)}
        if ctx.staging.key is not None:
            answer["staged"] = MASK
        return answer
    if not (KEY_MIN <= len(arg) <= KEY_MAX and arg.isascii() and arg.isprintable() and " " not in arg):
        raise CommandRefused("invalid_value", f"a device key has {KEY_MIN} to {KEY_MAX} printable ASCII "
                             "characters without spaces")
    ctx.staging.stage_key(Secret(arg))
    return {"ok": True, "key": "device_key", "staged": MASK}


def _setting_command(short: str, key: str) -> Command:
    name, example = SETTING_NAMES[short]
    return Command(functools.partial(_setting, key), Needs.TO_CHANGE, name=name,
                   summary=f"read {key}, or stage a new value (Commit applies it)",
                   usage=f"{name} [value]", example=f"{name} {example}")


COMMANDS = {
    **{short: _setting_command(short, key) for short, key in SETTINGS.items()},
    "window": Command(functools.partial(_pair, PAIRS["window"]), Needs.TO_CHANGE, name="Window",
                      summary="read or stage the window's number and name at once",
                      usage="Window [no [name]]", example="Window 12 不动产登记"),
    "staff": Command(functools.partial(_pair, PAIRS["staff"]), Needs.TO_CHANGE, name="Staff",
                     summary="read or stage the staff member's number and name at once",
                     usage="Staff [no [name]]", example="Staff 0123 欧阳 娜娜"),
    "get": Command(_get, log_argument=True, name="Get", summary="read any configuration key (alone: all of them)",
                   usage="Get [section.key]", example="Get upload.batch_size"),
    "set": Command(_set, Needs.ALWAYS, log_argument=True, name="Set",
                   summary="stage any configuration key (Commit applies it)",
                   usage="Set section.key value", example="Set session.rating_window_s 45"),
    "devicekey": Command(_device_key, Needs.TO_CHANGE, name="DeviceKey",
                         summary="stage the shared device key (write-only; reads answer ****)",
                         usage="DeviceKey [key]", example="DeviceKey <16 to 256 characters>"),
}
