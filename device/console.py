"""The technician's serial console: command lines and Improv frames on one port.

Bytes from the port go through a :class:`Splitter`, which tells the two
protocols apart by the first bytes of a line (``IMPROV`` starts a frame) and
turns garbage into :class:`Problem` items instead of exceptions. The
:class:`Console` answers every command line with one JSON line
(``{"ok": true, ...}`` or ``{"ok": false, "error": code, "message": text}``),
and every Improv RPC with Improv frames.

Commands are Tasmota style and case-insensitive: ``StaffName`` reads,
``StaffName 李四`` stages a change; ``Commit`` validates everything staged
as a whole, writes it atomically and applies it. Changes need authorisation:
the PIN (``Auth``), physical presence (buttons held at boot), or a
factory-new device without a PIN. Nothing secret is echoed or logged.

The console touches the device only through a :class:`DeviceControl`.
"""

import copy
import json
import logging
import math
import os
import platform
import threading
import time
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass

from device import __version__
from device import config as config_mod
from device import improv
from device.errors import ConfigError, TransportError
from device.config import Secret
from device.settings import SettingsError, check_pin_format, remove_durably, write_atomic

logger = logging.getLogger(__name__)

#: Longest command line in bytes; longer ones are refused as a whole.
MAX_LINE = 512
#: A frame not complete this long after its last byte is dropped.
FRAME_TIMEOUT_S = 0.5
#: Authorisation by PIN lapses after this long without a command.
AUTH_IDLE_S = 900.0
#: Physical presence (buttons held at boot) authorises for this long.
PRESENCE_S = 600.0
#: How long ``Test buttons`` waits for each press by default.
BUTTON_TIMEOUT_S = 30.0
FIRMWARE_NAME = "Window Evaluator"
MASK = "****"
#: Field names never passed on from DeviceControl.status(), whatever it returns.
SECRET_FIELDS = frozenset({"key", "device_key", "pin", "password", "secret", "token"})


def uplink_check(transport, device_id, body):
    """POST a signed heartbeat and describe the answer, for ``Test uplink``.

    Args:
        transport: a :class:`~device.queue.transport.HttpTransport` (or alike).
        device_id: whose heartbeat endpoint to use.
        body: the heartbeat JSON object.

    Returns:
        ``{"ok", "status", "elapsed_ms", "server", ...}``; on failure also
        ``error`` and ``message``. Never the key or the signature.
    """
    path = f"/api/v1/devices/{urllib.parse.quote(device_id, safe='')}/heartbeat"
    server = getattr(transport, "base_url", "")
    started = time.monotonic()
    try:
        reply = transport.request("POST", path, body)
    except TransportError as e:
        return {"ok": False, "error": "uplink_failed", "message": str(e), "server": server}
    result = {"ok": 200 <= reply.status < 300, "status": reply.status, "server": server,
              "elapsed_ms": round((time.monotonic() - started) * 1000)}
    if result["ok"]:
        text = json.dumps(reply.data, ensure_ascii=False)
        result["answer"] = reply.data if len(text) <= 200 else text[:200] + "…"
    else:
        why = {401: "the server refused the device id or key", 403: "the server refused this device"}
        result.update(error="uplink_failed",
                      message=f"the server answered {reply.status}: {why.get(reply.status, reply.text[:100])}")
    return result


# --- splitting bytes into lines and frames ----------------------------------

@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


_CR, _LF, _BS, _DEL = 13, 10, 8, 127


class Splitter:
    """Turns the port's bytes into :class:`Line`, :class:`improv.Frame` and :class:`Problem`.

    A line that starts with ``IMPROV`` is a frame: its length byte says
    where it ends, so binary data (even newlines) inside it is fine. A frame
    whose checksum fails, or that is not complete ``frame_timeout`` seconds
    after its last byte, is dropped with a problem; the bytes after its first
    newline are read again, so a command line that followed a half frame is
    not lost. Lines longer than ``max_line`` bytes, lines that are not UTF-8
    and lines with control characters become problems too. Backspace edits
    the line, for people typing in a terminal.

    Pure apart from its buffer: time comes in as ``now``.
    """

    def __init__(self, max_line=MAX_LINE, frame_timeout=FRAME_TIMEOUT_S):
        self.max_line = max_line
        self.frame_timeout = frame_timeout
        self._buf = bytearray()
        self._mode = "line"        # "line", "frame" or "discard" (rest of an overlong line)
        self._last = 0.0           # when the frame's last byte came
        self._input = bytearray()  # bytes waiting to be looked at (incl. re-read ones)

    @property
    def idle(self):
        """True when no line or frame is half read."""
        return not self._buf and self._mode == "line" and not self._input

    def feed(self, data, now):
        """Take bytes; return the items completed by them (and by timeouts)."""
        out = self.poll(now)
        self._input += data
        self._drain(now, out)
        return out

    def poll(self, now):
        """Items due to time alone: a half frame that timed out."""
        out = []
        if self._mode == "frame" and now - self._last >= self.frame_timeout:
            raw = bytes(self._buf)
            self._reset()
            out.append(Problem("half_frame", f"incomplete Improv frame ({len(raw)} bytes) dropped"))
            self._reread_after_newline(raw)
            self._drain(now, out)
        return out

    def _reset(self):
        self._buf.clear()
        self._mode = "line"

    def _reread_after_newline(self, raw):
        cut = raw.find(b"\n", len(improv.HEADER))
        if cut >= 0:
            self._input[0:0] = raw[cut + 1:]

    def _drain(self, now, out):
        while self._input:
            if self._mode != "frame":
                self._byte(self._input.pop(0), now, out)
                continue
            # Take as much of the frame as has arrived in one step; the length
            # byte (the last of the prefix) says where the frame ends.
            have = len(self._buf)
            need = improv.frame_length(self._buf) if have >= improv.PREFIX_LEN else improv.PREFIX_LEN
            self._buf += self._input[:need - have]
            del self._input[:need - have]
            self._last = now
            if len(self._buf) > improv.PREFIX_LEN and len(self._buf) == improv.frame_length(self._buf):
                self._finish_frame(out)

    def _byte(self, b, now, out):
        if self._mode == "discard":
            if b in (_CR, _LF):
                self._mode = "line"
            return
        if b in (_CR, _LF):
            if self._buf:
                item = self._line(bytes(self._buf))
                self._buf.clear()
                if item is not None:
                    out.append(item)
            return
        if b in (_BS, _DEL) and self._buf and not improv.HEADER.startswith(self._buf):
            # Drop the last character, not just its last UTF-8 byte.
            while self._buf and 0x80 <= self._buf[-1] < 0xC0:
                self._buf.pop()
            if self._buf:
                self._buf.pop()
            return
        self._buf.append(b)
        if len(self._buf) <= len(improv.HEADER) and improv.HEADER.startswith(self._buf):
            if len(self._buf) == len(improv.HEADER):
                self._mode = "frame"
                self._last = now
            return
        if len(self._buf) > self.max_line:
            out.append(Problem("line_too_long", f"line longer than {self.max_line} bytes ignored"))
            self._buf.clear()
            self._mode = "discard"

    def _finish_frame(self, out):
        raw = bytes(self._buf)
        self._reset()
        try:
            out.append(improv.decode_frame(raw))
        except improv.ImprovError as e:
            out.append(Problem("bad_frame", f"{e}; frame dropped"))
            self._reread_after_newline(raw)

    @staticmethod
    def _line(raw):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Problem("bad_encoding", "line is not UTF-8 text; ignored")
        text = text.replace("\t", " ")
        if not text.isprintable():
            return Problem("bad_input", "line contains control characters or binary data; ignored")
        text = text.strip()
        return Line(text) if text else None


# --- commands -----------------------------------------------------------------

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
#: Commands that read or stage two settings at once: ``Window 12 综合受理``.
PAIRS = {"window": ("device.window_no", "device.window_name"), "staff": ("staff.no", "staff.name")}

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
}
KEY_MIN, KEY_MAX = 16, 256


class Refused(Exception):
    """A command cannot be done: becomes one ``{"ok": false}`` answer."""

    def __init__(self, code, message, **extra):
        super().__init__(message)
        self.code = code
        self.extra = extra


def _schema_type(full_key):
    section, _, key = full_key.partition(".")
    cls = config_mod.sections().get(section)
    if cls is None or not key:
        return None
    return typing.get_type_hints(cls).get(key)


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _device_chip():
    try:
        with open("/proc/device-tree/model", encoding="utf-8", errors="replace") as f:
            model = f.read().strip("\0\n ")
        if model:
            return model
    except OSError:
        pass
    return f"{platform.machine() or 'unknown'}/{platform.system() or 'unknown'}"


class Console:
    """The serial console on one port, in its own thread.

    Args:
        port: a pyserial-like object: ``read(n)``, ``write(data)``, ``timeout``,
            optionally ``in_waiting`` (a :class:`~device.drivers.serial_port.PtyPort`
            or a ``serial.Serial``).
        device: a :class:`DeviceControl`.
        settings: the :class:`~device.settings.SettingsStore` of the overlay.
        pins: the :class:`~device.settings.PinStore`.
        network: a Wi-Fi backend for Improv (``None``: Wi-Fi RPCs fail cleanly).
        clock: monotonic seconds (injectable) for timeouts and authorisation.
        firmware: the version reported by ``Status`` and Improv.
        frame_timeout, max_line: see :class:`Splitter`.
        auth_idle_s: PIN authorisation lapses after this long without a command.
        button_timeout_s: default wait per button in ``Test buttons``.
    """

    def __init__(self, port, device, settings, pins, *, network=None, clock=time.monotonic,
                 firmware=__version__, frame_timeout=FRAME_TIMEOUT_S, max_line=MAX_LINE,
                 auth_idle_s=AUTH_IDLE_S, button_timeout_s=BUTTON_TIMEOUT_S):
        self.port = port
        self.device = device
        self.settings = settings
        self.pins = pins
        self.network = network
        self.clock = clock
        self.firmware = firmware
        self.auth_idle_s = auth_idle_s
        self.button_timeout_s = button_timeout_s
        self.splitter = Splitter(max_line, frame_timeout)
        self.improv = improv.ImprovState(improv.State.AUTHORIZED)
        self._staged = {}          # "section.key" -> value
        self._staged_key = None    # Secret
        self._auth_until = 0.0
        self._presence_until = 0.0
        self._wifi_connected = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._read_errors = 0
        self._commands = {
            "help": (self._help, False),
            "status": (self._status, False),
            "get": (self._get, False),
            "set": (self._set, True),
            "devicekey": (self._device_key, "arg"),   # reads need nothing
            "auth": (self._auth, False),
            "lock": (self._lock_cmd, False),
            "pin": (self._pin, "arg"),
            "commit": (self._commit, True),
            "discard": (self._discard, False),
            "test": (self._test, False),  # checks authorisation per test
            "queue": (self._queue, False),
            "upload": (self._upload, False),
            "restart": (self._restart, True),
            "factoryreset": (self._factory_reset, True),
        }

    # --- running -------------------------------------------------------------

    def start(self):
        """Serve the port in a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        logger.info("console listening on %s", getattr(self.port, "path", None) or getattr(self.port, "port", "?"))

    def stop(self, timeout=2.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.port.read(1)
                waiting = getattr(self.port, "in_waiting", 0) if data else 0
                if waiting:
                    data += self.port.read(waiting)
                self._read_errors = 0
            except Exception as e:  # a vanished USB host must not end the console
                self._read_errors += 1
                if self._read_errors == 1:
                    logger.warning("console port read failed: %s", e)
                self._stop.wait(1.0)
                self._reopen()
                continue
            self.feed(data)

    def _reopen(self):
        close, open_ = getattr(self.port, "close", None), getattr(self.port, "open", None)
        if close is None or open_ is None:
            return
        try:
            close()
            open_()
            logger.info("console port reopened")
        except Exception as e:
            logger.debug("console port reopen failed: %s", e)

    def feed(self, data):
        """Handle bytes from the port (the thread calls this; tests may too)."""
        with self._lock:
            for item in self.splitter.feed(data, self.clock()):
                self._handle_item(item)
            self._refresh_improv()

    def grant_presence(self, duration_s=PRESENCE_S):
        """Physical presence proven (buttons held at boot): changes allowed for a while."""
        with self._lock:
            self._presence_until = self.clock() + duration_s
            logger.info("console authorised by physical presence for %d s", duration_s)
            self._refresh_improv()

    def authorized(self):
        """Whether changes are allowed now."""
        now = self.clock()
        return not self.pins.is_set() or self._auth_until > now or self._presence_until > now

    # --- output --------------------------------------------------------------

    def _send(self, obj):
        line = json.dumps(obj, ensure_ascii=False, default=str) + "\r\n"
        self._write(line.encode("utf-8"))

    def _send_frame(self, frame):
        if frame is not None:
            self._write(frame + b"\n")

    def _write(self, data):
        try:
            self.port.write(data)
        except Exception as e:
            logger.warning("console port write failed: %s", e)

    # --- dispatch ------------------------------------------------------------

    def _handle_item(self, item):
        try:
            if isinstance(item, Line):
                self._handle_line(item.text)
            elif isinstance(item, improv.Frame):
                self._handle_frame(item)
            else:
                logger.info("console input refused: %s", item.code)
                self._send({"ok": False, "error": item.code, "message": item.message})
        except Exception:
            # One bad command must never stop the console (nor leak its text).
            logger.exception("console command failed")
            self._send({"ok": False, "error": "internal_error",
                        "message": "the command failed inside the device; see the device log"})

    def _handle_line(self, text):
        word, _, arg = text.partition(" ")
        name = word.lower()
        arg = arg.strip()
        if name in SETTINGS or name in PAIRS:
            handler, needs_auth = self._setting, "arg"
        elif name in self._commands:
            handler, needs_auth = self._commands[name]
        else:
            # Never echo the unknown word: it may be a PIN typed on its own.
            logger.info("console: unknown command")
            self._send({"ok": False, "error": "unknown_command",
                        "message": "unknown command; send Help for the list"})
            return
        # Log what was asked, never a value: it may be a PIN, a key or a name.
        detail = (" " + arg.split(" ", 1)[0][:64]) if arg and name in ("get", "set", "test") else ""
        logger.info("console: %s%s%s", name, detail, " (with a value)" if arg and not detail else "")
        try:
            if needs_auth is True or (needs_auth == "arg" and arg):
                self._require_auth()
            answer = handler(name, arg)
        except Refused as r:
            answer = {"ok": False, "error": r.code, "message": str(r), **r.extra}
        except ConfigError as e:
            answer = {"ok": False, "error": "invalid_config", "message": str(e),
                      "problems": [{"key": k, "message": m} for k, m in e.problems]}
        if answer is not None:
            self._send(answer)

    def _require_auth(self):
        now = self.clock()
        if not self.authorized():
            raise Refused("not_authorized", "changes need authorisation: send Auth <PIN>, or hold "
                          "buttons 1 and 5 while the device starts")
        if self._auth_until > now:
            self._auth_until = now + self.auth_idle_s

    # --- reading and staging settings ----------------------------------------

    def _config_value(self, full_key):
        section, _, key = full_key.partition(".")
        return _jsonable(config_mod.as_dict(self.device.current_config())[section][key])

    def _check_key(self, full_key):
        if _schema_type(full_key) is None:
            raise Refused("unknown_key", f"no configuration key {full_key!r}; send Get for the list")

    def _parse_value(self, full_key, text):
        hint = _schema_type(full_key)
        if hint is str and not text.startswith(('"', "'")):
            value = text
        else:
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                if hint is str:
                    raise Refused("invalid_value", f"{full_key}: unbalanced quotes") from None
                value = text
        if isinstance(value, str) and not value.isprintable():
            raise Refused("invalid_value", f"{full_key}: control characters are not allowed")
        ok, converted = config_mod._convert(value, hint)
        if not ok:
            raise Refused("invalid_value", f"{full_key} must be {config_mod._type_name(hint)}",
                          key=full_key)
        return converted

    def _stage(self, values):
        """Stage ``{full_key: value}`` after checking each against the whole configuration."""
        overlay = self._merged_overlay({**self._staged, **values})
        try:
            self.settings.build(overlay)
        except ConfigError as e:
            mine = [(k, m) for k, m in e.problems if k in values]
            if mine:
                raise Refused("invalid_value", "; ".join(f"{k}: {m}" for k, m in mine),
                              problems=[{"key": k, "message": m} for k, m in mine]) from None
            # Problems elsewhere (another staged key, a cross check) surface at Commit.
        self._staged.update(values)

    def _merged_overlay(self, staged):
        overlay = copy.deepcopy(self.settings.read())
        for full_key, value in staged.items():
            section, _, key = full_key.partition(".")
            overlay.setdefault(section, {})[key] = value
        return overlay

    def _read_answer(self, full_key):
        answer = {"ok": True, "key": full_key, "value": self._config_value(full_key)}
        if full_key in self._staged:
            answer["staged"] = _jsonable(self._staged[full_key])
        return answer

    def _setting(self, name, arg):
        if name in PAIRS:
            keys = PAIRS[name]
            if not arg:
                answer = {"ok": True, "values": {k: self._config_value(k) for k in keys}}
                staged = {k: self._staged[k] for k in keys if k in self._staged}
                if staged:
                    answer["staged"] = staged
                return answer
            first, _, rest = arg.partition(" ")
            values = {keys[0]: self._parse_value(keys[0], first)}
            if rest.strip():
                values[keys[1]] = self._parse_value(keys[1], rest.strip())
            self._stage(values)
            return {"ok": True, "staged": {k: _jsonable(v) for k, v in values.items()}}
        full_key = SETTINGS[name]
        if not arg:
            return self._read_answer(full_key)
        value = self._parse_value(full_key, arg)
        self._stage({full_key: value})
        return {"ok": True, "key": full_key, "staged": _jsonable(value)}

    def _get(self, name, arg):
        if not arg:
            answer = {"ok": True, "config": json.loads(json.dumps(config_mod.as_dict(self.device.current_config())))}
            if self._staged:
                answer["staged"] = {k: _jsonable(v) for k, v in self._staged.items()}
            return answer
        full_key = arg.split()[0].lower()
        self._check_key(full_key)
        return self._read_answer(full_key)

    def _set(self, name, arg):
        full_key, _, text = arg.partition(" ")
        full_key = full_key.lower()
        if not full_key:
            raise Refused("missing_value", "use: Set section.key value")
        self._check_key(full_key)
        if not text.strip():
            raise Refused("missing_value", f"use: Set {full_key} value")
        value = self._parse_value(full_key, text.strip())
        self._stage({full_key: value})
        return {"ok": True, "key": full_key, "staged": _jsonable(value)}

    def _key_file_set(self):
        try:
            return os.path.getsize(self.device.current_config().upload.key_file) > 0
        except OSError:
            return False

    def _device_key(self, name, arg):
        if not arg:
            answer = {"ok": True, "key": "device_key", "value": MASK, "set": self._key_file_set()}
            if self._staged_key is not None:
                answer["staged"] = MASK
            return answer
        if not (KEY_MIN <= len(arg) <= KEY_MAX and arg.isascii() and arg.isprintable() and " " not in arg):
            raise Refused("invalid_value", f"a device key has {KEY_MIN} to {KEY_MAX} printable ASCII "
                          "characters without spaces")
        self._staged_key = Secret(arg)
        return {"ok": True, "key": "device_key", "staged": MASK}

    # --- authorisation -------------------------------------------------------

    def _auth(self, name, arg):
        now = self.clock()
        if not arg:
            return {"ok": True, "authorized": self.authorized(), "pin_set": self.pins.is_set(),
                    "presence": self._presence_until > now}
        if not self.pins.is_set():
            return {"ok": True, "authorized": True, "pin_set": False,
                    "message": "no PIN set yet (factory-new): changes are open; set one with Pin <new PIN>"}
        verdict = self.pins.verify(arg)
        if verdict.ok:
            self._auth_until = now + self.auth_idle_s
            logger.info("console authorised by PIN")
            self._refresh_improv()
            return {"ok": True, "authorized": True, "pin_set": True}
        # A wrong try ends any earlier authorisation: whoever types now must know the PIN.
        self._auth_until = 0.0
        self._refresh_improv()
        wait = math.ceil(verdict.retry_after_s)
        if verdict.locked:
            raise Refused("locked_out", f"too many wrong PINs: try again in {wait} s", retry_after_s=wait)
        extra = {"retry_after_s": wait, "tries_left": self.pins.tries_left()}
        message = "wrong PIN" + (f"; next try in {wait} s" if wait else
                                 f"; {extra['tries_left']} tries left before a lockout")
        raise Refused("wrong_pin", message, **extra)

    def _lock_cmd(self, name, arg):
        self._auth_until = 0.0
        self._presence_until = 0.0
        self._refresh_improv()
        return {"ok": True, "authorized": self.authorized(), "pin_set": self.pins.is_set()}

    def _pin(self, name, arg):
        if not arg:
            return {"ok": True, "pin": MASK, "pin_set": self.pins.is_set()}
        problem = check_pin_format(arg)
        if problem:
            raise Refused("invalid_value", problem)
        try:
            self.pins.set(arg)
        except SettingsError as e:
            raise Refused("commit_failed", f"PIN not changed: {e}") from None
        # Whoever just set the PIN stays authorised for this session.
        self._auth_until = self.clock() + self.auth_idle_s
        return {"ok": True, "pin_set": True, "message": "PIN set; changes now need it"}

    # --- commit -------------------------------------------------------------

    def _staged_names(self):
        return sorted(self._staged) + (["device_key"] if self._staged_key is not None else [])

    def _commit(self, name, arg):
        if not self._staged and self._staged_key is None:
            return {"ok": True, "committed": [], "restart_needed": [], "message": "nothing staged"}
        overlay = self._merged_overlay(self._staged)
        new_config = self.settings.build(overlay)  # ConfigError: every bad key, nothing written
        committed = self._staged_names()
        key = self._staged_key
        if key is not None:
            try:
                write_atomic(new_config.upload.key_file, key.reveal().encode("utf-8"), mode=0o600)
            except SettingsError as e:
                raise Refused("commit_failed", f"nothing changed: {e}") from None
            self._staged_key = None
            logger.info("device key replaced")
        if self._staged:
            try:
                self.settings.save(overlay)
            except SettingsError as e:
                saved = " (the device key was saved)" if key is not None else ""
                raise Refused("commit_failed", f"settings not saved{saved}: {e}") from None
            self._staged.clear()
        logger.info("committed %s", ", ".join(committed))
        try:
            restart = list(self.device.apply(new_config, key) or [])
        except Exception as e:
            logger.exception("committed settings could not be applied")
            return {"ok": False, "error": "apply_failed", "committed": committed, "saved": True,
                    "message": f"saved, but not applied ({type(e).__name__}); Restart to apply"}
        answer = {"ok": True, "committed": committed, "restart_needed": restart}
        if restart:
            answer["message"] = "saved; restart to apply " + ", ".join(restart)
        return answer

    def _discard(self, name, arg):
        dropped = self._staged_names()
        self._staged.clear()
        self._staged_key = None
        return {"ok": True, "discarded": dropped}

    # --- status and actions ----------------------------------------------------

    def _help(self, name, arg):
        return {"ok": True, "commands": HELP, "settings": {**SETTINGS, **{k: list(v) for k, v in PAIRS.items()}}}

    def _status(self, name, arg):
        cfg = self.device.current_config()
        try:
            extra = dict(self.device.status() or {})
        except Exception as e:
            logger.exception("device status failed")
            extra = {"status_error": type(e).__name__}
        answer = {k: v for k, v in extra.items() if k.lower() not in SECRET_FIELDS}
        answer.update({
            "ok": True, "device_id": cfg.device.id, "firmware": self.firmware,
            "window_no": cfg.device.window_no, "window_name": cfg.device.window_name,
            "staff_no": cfg.staff.no, "staff_name": cfg.staff.name, "server": cfg.upload.server,
            "channel": cfg.device.channel, "source": cfg.session.source, "display": cfg.display.model,
            "key_set": self._key_file_set(), "pin_set": self.pins.is_set(),
            "authorized": self.authorized(), "staged": self._staged_names(),
        })
        return answer

    def _queue(self, name, arg):
        return {"ok": True, **dict(self.device.queue() or {})}

    def _upload(self, name, arg):
        self.device.upload_now()
        return {"ok": True, "upload": "started"}

    def _test(self, name, arg):
        what, _, rest = arg.partition(" ")
        what = what.lower()
        if what == "uplink":
            try:
                result = dict(self.device.test_uplink() or {})
            except Exception as e:
                logger.exception("uplink test failed")
                result = {"ok": False, "message": f"the uplink test failed inside the device ({type(e).__name__})"}
            result.setdefault("ok", False)
            if not result["ok"]:
                result.setdefault("error", "uplink_failed")
                result.setdefault("message", "the uplink test failed")
            return {**result, "test": "uplink"}
        if what not in ("buttons", "display"):
            raise Refused("missing_value", "use: Test buttons|display|uplink")
        self._require_auth()
        if what == "display":
            info = dict(self.device.test_display() or {})
            return {"ok": True, "test": "display", "result": "shown", **info,
                    "message": "check the test pattern on the screen"}
        timeout = self.button_timeout_s
        if rest.strip():
            try:
                timeout = float(rest)
            except ValueError:
                raise Refused("invalid_value", "the button test's timeout is a number of seconds") from None
            if not 0 < timeout <= 600:
                raise Refused("invalid_value", "the button test's timeout is 0 to 600 seconds")
        return self._test_buttons(timeout)

    def _test_buttons(self, timeout):
        pins = self.device.current_config().buttons.pins
        self._send({"ok": True, "test": "buttons", "waiting_for": 1, "pin": pins[0], "timeout_s": timeout,
                    "message": "press each rating button in turn, 1 (非常满意) to 5 (非常不满意)"})
        results = []
        self.device.button_test(True)
        try:
            for n in range(1, 6):
                got = self.device.wait_button(timeout)
                if got is None:
                    return {"ok": False, "error": "timeout", "test": "buttons", "done": True,
                            "message": f"no press of button {n} (GPIO {pins[n - 1]}) within {timeout:g} s",
                            "buttons": results}
                entry = {"button": n, "pin": pins[n - 1], "pressed": got, "ok": got == n}
                results.append(entry)
                line = {"ok": got == n, "test": "buttons", **entry}
                if got != n:
                    line.update(error="wrong_button",
                                message=f"expected button {n} (GPIO {pins[n - 1]}), got button {got}")
                if n < 5:
                    line.update(waiting_for=n + 1, next_pin=pins[n])
                self._send(line)
        finally:
            self.device.button_test(False)
        passed = all(r["ok"] for r in results)
        answer = {"ok": passed, "test": "buttons", "done": True, "result": "pass" if passed else "fail",
                  "buttons": results}
        if not passed:
            answer.update(error="test_failed", message="some buttons did not answer as expected")
        return answer

    def _restart(self, name, arg):
        dropped = self._staged_names()
        self._send({"ok": True, "restarting": True, "discarded": dropped})
        self.device.restart()
        return None

    def _factory_reset(self, name, arg):
        if arg.lower() not in ("yes", "confirm"):
            raise Refused("confirm_needed", "send 'FactoryReset yes' to erase the settings, the device key "
                          "and the PIN (ratings not yet delivered are kept)")
        key_file = self.device.current_config().upload.key_file
        try:
            self.settings.clear()
            remove_durably(key_file)
            self.pins.clear()
        except SettingsError as e:
            raise Refused("commit_failed", f"factory reset incomplete: {e}") from None
        self._staged.clear()
        self._staged_key = None
        self._auth_until = self._presence_until = 0.0
        logger.warning("factory reset: settings, device key and PIN erased")
        self._send({"ok": True, "factory_reset": True, "restarting": True})
        self.device.factory_reset()
        return None

    # --- Improv ----------------------------------------------------------------

    def _wifi_up(self):
        if self._wifi_connected is None:
            try:
                self._wifi_connected = bool(self.network and self.network.is_connected())
            except Exception:
                logger.exception("cannot read the Wi-Fi state")
                self._wifi_connected = False
        return self._wifi_connected

    def _improv_state_now(self):
        if not self.authorized():
            return improv.State.AUTHORIZATION_REQUIRED
        return improv.State.PROVISIONED if self._wifi_up() else improv.State.AUTHORIZED

    def _refresh_improv(self):
        """Tell an Improv client of a state change (authorisation came or went)."""
        if not self.improv.client_seen or self.improv.state == improv.State.PROVISIONING:
            return
        self._send_frame(self.improv.set_state(self._improv_state_now()))

    def _handle_frame(self, frame):
        self.improv.client_seen = True
        if frame.type != improv.PacketType.RPC:
            logger.debug("Improv packet of type %d from the client ignored", frame.type)
            return
        try:
            rpc = improv.parse_rpc(frame.data)
        except improv.ImprovError:
            self._send_frame(self.improv.set_error(improv.Error.INVALID_RPC, force=True))
            return
        command = rpc.command
        if command not in tuple(improv.Command):
            self._send_frame(self.improv.set_error(improv.Error.UNKNOWN_RPC, force=True))
            return
        # The spec: a new RPC clears the error state first.
        self._send_frame(self.improv.set_error(improv.Error.NONE))
        if command == improv.Command.REQUEST_STATE:
            state = self._improv_state_now()
            self._send_frame(self.improv.set_state(state, force=True))
            if state == improv.State.PROVISIONED:
                self._send_frame(improv.result_frame(command, []))
        elif command == improv.Command.REQUEST_INFO:
            name = self.device.current_config().device.id
            self._send_frame(improv.result_frame(command, [FIRMWARE_NAME, self.firmware, _device_chip()[:64], name]))
        elif command == improv.Command.REQUEST_SCAN:
            self._improv_scan()
        else:
            self._improv_wifi(rpc.payload)

    def _improv_scan(self):
        if self.network is None:
            self._send_frame(self.improv.set_error(improv.Error.UNKNOWN, force=True))
            return
        try:
            networks = self.network.scan()
        except Exception as e:
            logger.warning("Wi-Fi scan failed: %s", e)
            self._send_frame(self.improv.set_error(improv.Error.UNKNOWN, force=True))
            return
        for n in networks:
            ssid = n.ssid.encode("utf-8")[:64].decode("utf-8", "ignore")
            self._send_frame(improv.result_frame(improv.Command.REQUEST_SCAN,
                                                 [ssid, str(n.rssi), "YES" if n.secured else "NO"]))
        self._send_frame(improv.result_frame(improv.Command.REQUEST_SCAN, []))

    def _improv_wifi(self, payload):
        if not self.authorized():
            logger.warning("Improv Wi-Fi settings refused: console locked")
            self._send_frame(self.improv.set_state(improv.State.AUTHORIZATION_REQUIRED))
            self._send_frame(self.improv.set_error(improv.Error.NOT_AUTHORIZED, force=True))
            return
        try:
            ssid, password = improv.parse_wifi_settings(payload)
        except improv.ImprovError:
            self._send_frame(self.improv.set_error(improv.Error.INVALID_RPC, force=True))
            return
        if self.network is None:
            self._send_frame(self.improv.set_error(improv.Error.UNABLE_TO_CONNECT, force=True))
            return
        self._send_frame(self.improv.set_state(improv.State.PROVISIONING))
        try:
            self.network.connect(ssid, password)
        except Exception as e:
            # The backend keeps the password out of its messages; log the type and text only.
            logger.warning("Improv: cannot join Wi-Fi %r: %s", ssid, e)
            self._wifi_connected = None
            self.improv.state = improv.State.AUTHORIZED  # so the next refresh reports a change
            self._send_frame(self.improv.set_error(improv.Error.UNABLE_TO_CONNECT, force=True))
            self._send_frame(self.improv.set_state(self._improv_state_now(), force=True))
            return
        finally:
            del password
        self._wifi_connected = True
        self._send_frame(self.improv.set_state(improv.State.PROVISIONED))
        self._send_frame(improv.result_frame(improv.Command.WIFI_SETTINGS, []))
