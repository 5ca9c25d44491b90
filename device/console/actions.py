"""``Help``, ``Status``, ``Queue``, ``Upload`` and ``Restart``.

``Help`` lists every command of the console's table, ``Help <command>``
explains one (usage, example, authorisation), read from the command's own
entry. ``Status`` needs no authorisation and shows no secret: fields whose
names look secret are dropped from what the device reports, whatever it
returns. ``Status <section>`` answers one part for a person at a terminal:
``network`` (SSID, signal, IP), ``uplink``, ``storage``, ``clock``,
``faults``; times are local with their offset, and what is not known yet
says so (never ``null``).
"""

from __future__ import annotations

import datetime
import difflib
import logging
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from device.console.commands import Answer, Command, Context, Needs, jsonable
from device.console.staging import key_file_set
from device.errors import CommandRefused
from device.network import NetworkInfo, signal_words

logger = logging.getLogger(__name__)

#: Field names never passed on from DeviceControl.status(), whatever it returns.
SECRET_FIELDS = frozenset({"key", "device_key", "pin", "password", "secret", "token"})
#: What a value not known yet is shown as (``online`` before the first upload).
UNKNOWN = "unknown yet"


def suggest(word: str, names: Mapping[str, Command], cutoff: float = 0.6) -> str | None:
    """The command name nearest to ``word`` as help writes it (``StaffName``), or None."""
    close = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=cutoff)
    if not close:
        return None
    return names[close[0]].name or close[0]


def local_time(value: Any) -> Any:
    """An ISO 8601 time as the device's local time with its offset; anything else as it is."""
    if not isinstance(value, str) or len(value) < 19:
        return value
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return moment.astimezone().isoformat(timespec="seconds")


def now_local() -> str:
    """The device's wall time, local, with its offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _localised(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: local_time(v) if k.endswith("_at") or k == "time" else v for k, v in answer.items()}


def _online(value: Any) -> Any:
    return UNKNOWN if value is None else value


# --- Help ----------------------------------------------------------------------

def _help(ctx: Context, arg: str) -> Answer:
    commands = ctx.commands
    if arg:
        word = arg.split(maxsplit=1)[0].lower()
        command = commands.get(word)
        if command is None:
            hint = suggest(word, commands)
            raise CommandRefused("unknown_command", "no such command" + (f"; did you mean {hint}?" if hint else "")
                                 + " Send Help for the list", **({"did_you_mean": hint} if hint else {}))
        return {"ok": True, **command.help(word)}
    listed = {(c.name or k): c.summary for k, c in commands.items() if c.summary}
    return {"ok": True, "commands": listed,
            "message": "Help <command> explains one, with an example (e.g. Help Server)"}


# --- Status --------------------------------------------------------------------

def _device_status(ctx: Context) -> dict[str, Any]:
    try:
        extra = dict(ctx.device.status() or {})
    except Exception as e:
        logger.exception("device status failed")
        extra = {"status_error": type(e).__name__}
    return {k: jsonable(v) for k, v in extra.items() if k.lower() not in SECRET_FIELDS}


def _status(ctx: Context, arg: str) -> Answer:
    if arg:
        word = arg.split(maxsplit=1)[0].lower()
        section = SECTIONS.get(word)
        if section is None:
            close = difflib.get_close_matches(word, list(SECTIONS), n=1, cutoff=0.5)
            raise CommandRefused("unknown_section", "Status sections: " + ", ".join(SECTIONS)
                                 + (f"; did you mean {close[0]}?" if close else ""),
                                 sections=list(SECTIONS), **({"did_you_mean": close[0]} if close else {}))
        return {"ok": True, "section": word, **section(ctx)}
    cfg = ctx.device.current_config()
    answer: Answer = _localised(_device_status(ctx))
    answer.update({
        "ok": True, "device_id": cfg.device.id, "firmware": ctx.firmware,
        "window_no": cfg.device.window_no, "window_name": cfg.device.window_name,
        "staff_no": cfg.staff.no, "staff_name": cfg.staff.name, "server": cfg.upload.server,
        "channel": cfg.device.channel, "source": cfg.session.source, "display": cfg.display.model,
        "key_set": key_file_set(ctx), "pin_set": ctx.pins.is_set(),
        "authorized": ctx.auth.authorized(), "staged": ctx.staging.names(),
        "time": now_local(), "sections": list(SECTIONS),
    })
    answer["online"] = _online(answer.get("online"))
    return answer


def route_ip(url: str) -> str | None:
    """This device's address on the route to ``url``'s host (a UDP socket connected, nothing sent)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(infos[0][4])
            return str(s.getsockname()[0])
    except (OSError, IndexError, UnicodeError):
        return None


def network_section(ctx: Context) -> dict[str, Any]:
    """``Status network``: the Wi-Fi joined, its signal, and the device's IP."""
    info: NetworkInfo | None = None
    if ctx.network is not None:
        try:
            info = ctx.network.info()
        except Exception as e:  # a backend that cannot say must not end Status
            logger.warning("cannot read the network state: %s", e)
    ip = (info.ip if info else None) or route_ip(ctx.device.current_config().upload.server)
    out: dict[str, Any] = {
        "wifi": "none on this device" if ctx.network is None else (
            "joined" if info and info.connected else "not joined"),
        "ssid": (info.ssid if info else None) or UNKNOWN,
        "signal_dbm": info.signal_dbm if info and info.signal_dbm is not None else UNKNOWN,
        "signal": signal_words(info.signal_dbm if info else None),
        "ip": ip or UNKNOWN,
    }
    if info and info.interface:
        out["interface"] = info.interface
    if ctx.network is not None and not (info and info.connected):
        out["message"] = "no Wi-Fi joined: send Wifi <ssid> <password>, or use an Improv client"
    return out


def uplink_section(ctx: Context) -> dict[str, Any]:
    """``Status uplink``: the hall server, whether it answers, the last upload and the backlog."""
    status = _device_status(ctx)
    out = {"server": ctx.device.current_config().upload.server, "online": _online(status.get("online")),
           "last_upload_at": local_time(status.get("last_upload_at")) or UNKNOWN,
           "last_error": status.get("last_error") or "", "backlog": status.get("backlog", UNKNOWN),
           "rejected": status.get("rejected", UNKNOWN)}
    if out["online"] is False:
        out["message"] = "the hall server did not answer lately: send Test uplink to see why"
    return out


def storage_section(ctx: Context) -> dict[str, Any]:
    """``Status storage``: the outbox's place and counts, and any damage found."""
    status = _device_status(ctx)
    out: dict[str, Any] = {"outbox": ctx.device.current_config().outbox.path}
    try:
        out.update(jsonable(dict(ctx.device.queue() or {})))
    except Exception as e:  # in recovery the outbox may not be open
        out["queue"] = f"not available: {e}"
    if "storage_damage" in status:
        out["damage"] = status["storage_damage"]
    return out


def clock_section(ctx: Context) -> dict[str, Any]:
    """``Status clock``: the local time with its offset, and whether it is known to be right."""
    status = _device_status(ctx)
    synced = status.get("clock_synced")
    tz = datetime.datetime.now().astimezone().tzinfo
    return {"time": now_local(), "timezone": str(tz), "synced": UNKNOWN if synced is None else synced}


def faults_section(ctx: Context) -> dict[str, Any]:
    """``Status faults``: the device's mode and every standing fault with its fix."""
    status = _device_status(ctx)
    faults = status.get("faults") or []
    return {"mode": status.get("mode", UNKNOWN), "faults": faults, "count": len(faults)}


#: ``Status <section>``: each one a function of the context (add one here to add a section).
SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "network": network_section,
    "uplink": uplink_section,
    "storage": storage_section,
    "clock": clock_section,
    "faults": faults_section,
}


# --- Queue, Upload, Restart ------------------------------------------------------

def _queue(ctx: Context, arg: str) -> Answer:
    return {"ok": True, **jsonable(dict(ctx.device.queue() or {}))}


def _upload(ctx: Context, arg: str) -> Answer:
    ctx.device.upload_now()
    return {"ok": True, "upload": "started"}


def _restart(ctx: Context, arg: str) -> None:
    ctx.send({"ok": True, "restarting": True, "discarded": ctx.staging.names()})
    ctx.device.restart()


COMMANDS = {
    "help": Command(_help, name="Help", log_argument=True, summary="list the commands, or explain one",
                    usage="Help [command]", example="Help Server"),
    "status": Command(_status, name="Status", log_argument=True,
                      summary="device, window, staff, uplink, backlog, authorisation; or one section",
                      usage="Status [network|uplink|storage|clock|faults]", example="Status network"),
    "queue": Command(_queue, name="Queue", summary="outbox counts: pending, delivered, rejected ...",
                     usage="Queue", example="Queue"),
    # The design: once a PIN is set, Upload (which also sends dead letters again) needs it.
    "upload": Command(_upload, Needs.ALWAYS, name="Upload", summary="upload the backlog now", usage="Upload",
                      example="Upload"),
    "restart": Command(_restart, Needs.ALWAYS, name="Restart",
                       summary="restart the device program (staged changes are dropped)", usage="Restart",
                       example="Restart"),
}
