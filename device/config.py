"""Configuration: defaults in the code, then a TOML file, then ``--set`` overrides.

Each section is a frozen dataclass; its fields, types and defaults are the
schema. Loading checks everything and raises one :class:`ConfigError` that
lists every bad key, as Mopidy does, so a technician fixes them all at once.
``config.toml`` at the repository root documents every key with its default.
"""

import base64
import dataclasses
import datetime
import functools
import ipaddress
import math
import os
import re
import stat
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device import panels, pinmap
from device.errors import ConfigError
from device.levels import Level
from device.service_link import valid_template

SESSION_SOURCES = ("free", "staff_button", "hall")
#: model: (width, height), read live from the panel models (device/panels.py: one record a model).
DISPLAY_MODELS = panels.SIZES
#: No panel side is longer (a first bound before the panel table is asked).
MAX_PANEL_SIDE = 256
#: BCM numbers of the Pi's 40-pin header GPIOs.
BCM_PINS = range(0, 28)
#: How a secret is shown wherever a person could read it (console answers, Get, Status).
MASK = "****"

#: A value of one key once checked against the schema (TOML lists become tuples).
Value = Any
#: Settings as ``{section: {key: value}}``: a file's tables, the console's overlay, a layer.
Layer = Mapping[str, Mapping[str, Any]]


class Secret:
    """A string that prints as ``********`` (Mopidy's ``Secret``): the device key.

    Its value comes out only through :meth:`reveal`, so it never lands in a
    repr, a log line, an exception or a console answer by accident. A schema
    field typed ``Secret`` is taken from TOML text like a string, and
    :func:`format_value` and the console show it as :data:`MASK`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


def _check(fn: Callable[[Any], bool], message: str) -> dict[str, Any]:
    """Field metadata: a validator and the message shown when it fails."""
    return {"check": fn, "message": message}


def _n(x: float) -> str:
    """A bound as a person writes it: ``10000000``, ``0.5``."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _between(lo: float, hi: float, *, above: bool = False, unit: str = "") -> dict[str, Any]:
    """Field metadata: a number from ``lo`` to ``hi`` (``above``: greater than ``lo``), the range documented.

    Every number key has one: a value out of every sensible range (``1e308``
    seconds of thanks, a 100000-pixel panel) must never reach the device.
    """
    unit = f" {unit}" if unit else ""
    if above:
        message = f"must be greater than {_n(lo)} and at most {_n(hi)}{unit}"
    else:
        message = f"must be {_n(lo)} to {_n(hi)}{unit}"
    meta = _check(lambda v: (lo < v if above else lo <= v) and v <= hi, message)
    meta["range"] = (lo, hi, above)
    return meta


#: Device ids: what a file name, an HTTP header and the hall's URLs all carry unchanged.
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")


def _http_url(v: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(v)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in v


def _ed25519_public_key(v: str) -> bool:
    """Empty, or standard base64 (with padding) of 32 raw bytes."""
    if not v:
        return True
    try:
        return len(base64.b64decode(v, validate=True)) == 32
    except ValueError:
        return False


def _hhmm(v: str) -> bool:
    try:
        h, m = v.split(":")
        return len(h) == 2 and len(m) == 2 and 0 <= int(h) <= 24 and 0 <= int(m) < 60
    except ValueError:
        return False


def _iso_date(v: str) -> bool:
    try:
        datetime.date.fromisoformat(v)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class DeviceSection:
    id: str = field(default="WE-0001", metadata=_check(
        lambda v: DEVICE_ID.fullmatch(v) is not None and v not in (".", ".."),
        "must be 1 to 32 of A-Z a-z 0-9 . _ - (no spaces, no other characters)"))
    window_no: str = field(default="01", metadata=_check(lambda v: 0 < len(v) <= 16, "must be 1 to 16 characters"))
    window_name: str = "综合受理"
    #: 评价渠道 ``pf`` code reported with every rating (5 = 政务大厅其他终端).
    channel: str = field(default="5", metadata=_check(lambda v: 0 < len(v) <= 8, "must be 1 to 8 characters"))


@dataclass(frozen=True)
class StaffSection:
    no: str = "0001"
    name: str = "张三"
    dept: str = ""


@dataclass(frozen=True)
class SessionSection:
    #: "一次一评": by default a rating belongs to a service the staff asked it for.
    source: str = field(default="staff_button", metadata=_check(
        lambda v: v in SESSION_SOURCES, "must be one of " + ", ".join(SESSION_SOURCES)))
    min_interval_s: float = field(default=10.0, metadata=_between(0, 3600, unit="s"))
    rating_window_s: float = field(default=30.0, metadata=_between(0, 3600, above=True, unit="s"))
    thanks_s: float = field(default=3.0, metadata=_between(0, 60, above=True, unit="s"))
    later_s: float = field(default=20.0, metadata=_between(0, 600, above=True, unit="s"))
    reasons_s: float = field(default=15.0, metadata=_between(0, 600, above=True, unit="s"))
    #: Holding buttons 1 and 5 this long shows the technician's service screen.
    service_hold_s: float = field(default=5.0, metadata=_between(0, 60, above=True, unit="s"))
    service_s: float = field(default=30.0, metadata=_between(0, 3600, above=True, unit="s"))
    #: A rating this soon after the session opened is faster than a person.
    suspect_reaction_s: float = field(default=0.3, metadata=_between(0, 60, unit="s"))
    #: This many accepted ratings within ``suspect_window_s`` mark a burst.
    suspect_count: int = field(default=4, metadata=_between(2, 1_000_000, unit="(1000000: in effect never)"))
    suspect_window_s: float = field(default=60.0, metadata=_between(0, 86400, above=True, unit="s"))


@dataclass(frozen=True)
class ButtonsSection:
    pins: tuple[int, ...] = field(default=(5, 6, 13, 19, 26), metadata=_check(
        lambda v: len(v) == 5 and all(p in BCM_PINS for p in v),
        "must be five BCM pin numbers from 0 to 27, 非常满意 first"))
    staff_pin: int = field(default=21, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    bounce_ms: int = field(default=30, metadata=_between(0, 1000, unit="ms"))
    #: The contact must stay closed this long for a press; shorter closings are noise, counted, never rated.
    min_press_ms: int = field(default=40, metadata=_between(0, 1000, unit="ms"))


@dataclass(frozen=True)
class DisplaySection:
    model: str = field(default="ssd1306", metadata=_check(
        lambda v: v in DISPLAY_MODELS, "must be one of " + ", ".join(DISPLAY_MODELS)))
    #: 0: the model's own size (see DISPLAY_MODELS).
    width: int = field(default=0, metadata=_between(0, MAX_PANEL_SIDE, unit="pixels"))
    height: int = field(default=0, metadata=_between(0, MAX_PANEL_SIDE, unit="pixels"))
    rotate: int = field(default=0, metadata=_check(lambda v: v in (0, 90, 180, 270), "must be 0, 90, 180 or 270"))
    interface: str = field(default="i2c", metadata=_check(lambda v: v in ("i2c", "spi"), "must be i2c or spi"))
    i2c_port: int = field(default=1, metadata=_between(0, 255))
    i2c_address: int = field(default=0x3C, metadata=_check(lambda v: 0x03 <= v <= 0x77, "must be a 7-bit I2C address"))
    spi_port: int = field(default=0, metadata=_between(0, 6))
    spi_device: int = field(default=0, metadata=_between(0, 15))
    gpio_dc: int = field(default=24, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    gpio_rst: int = field(default=25, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    contrast: int = field(default=255, metadata=_between(0, 255))
    dim_contrast: int = field(default=32, metadata=_between(0, 255))
    dim_after_s: float = field(default=120.0, metadata=_between(0, 1e9, above=True, unit="s (1e9: never)"))
    shift_every_s: float = field(default=180.0, metadata=_between(0, 1e9, above=True, unit="s (1e9: never)"))
    #: Thank with the level chosen and offer reason tags after a 差评 (a hall's explicit choice);
    #: off, the screens never tell the staff or the queue which level a citizen chose.
    show_level: bool = False
    #: Prompt and thanks in large characters on panels with room (256x64, 128x128).
    large_text: bool = False


@dataclass(frozen=True)
class HoursSection:
    """Opening hours: outside them the panel sleeps until a press."""

    open_days: tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 7), metadata=_check(
        lambda v: all(1 <= d <= 7 for d in v), "must be ISO weekdays 1 (Monday) to 7"))
    open_from: str = field(default="00:00", metadata=_check(_hhmm, "must be HH:MM"))
    open_until: str = field(default="24:00", metadata=_check(_hhmm, "must be HH:MM"))
    closed_dates: tuple[str, ...] = field(default=(), metadata=_check(
        lambda v: all(_iso_date(d) for d in v), "must be dates as YYYY-MM-DD"))


def _reason_list(v: tuple[str, ...]) -> bool:
    return len(v) <= 4 and all(len(item.split(None, 1)) == 2 for item in v)


@dataclass(frozen=True)
class ReasonsSection:
    """Reason tags offered after a 差评, as "CODE 文本"; the hall server's list wins."""

    version: str = ""
    dissatisfied: tuple[str, ...] = field(default=(), metadata=_check(
        _reason_list, 'must be at most four entries like "401 办事效率低" (code, space, text)'))
    very_dissatisfied: tuple[str, ...] = field(default=(), metadata=_check(
        _reason_list, 'must be at most four entries like "501 服务态度差" (code, space, text)'))

    def by_level(self) -> dict[Level, tuple[tuple[str, str], ...]]:
        """``{Level: ((code, text), ...)}`` for the levels that have tags."""
        out: dict[Level, tuple[tuple[str, str], ...]] = {}
        for level in (Level.DISSATISFIED, Level.VERY_DISSATISFIED):
            items: tuple[str, ...] = getattr(self, level.value)
            if items:
                out[level] = tuple((code, text) for code, text in (item.split(None, 1) for item in items))
        return out


@dataclass(frozen=True)
class QrSection:
    url: str = field(default="https://hcp.example.org/w/01",
                     metadata=_check(_http_url, "must be an http(s) URL with a host"))
    #: The later and follow-up screens' link naming the session (device/service_link.py): ``{code}`` in an
    #: http(s) URL, ``auto`` (from ``url``'s scheme and host: ``/S/{code}``), or empty (the window's code).
    service_url: str = field(default="auto", metadata=_check(
        valid_template, 'must be "auto", empty, or an http(s) URL with a host and {code} once'))


@dataclass(frozen=True)
class UploadSection:
    server: str = field(default="http://127.0.0.1:8080",
                        metadata=_check(_http_url, "must be an http(s) URL with a host"))
    batch_size: int = field(default=250, metadata=_between(1, 1000))
    heartbeat_s: float = field(default=300.0, metadata=_between(0, 86400, unit="s (0: no heartbeat)"))
    timeout_s: float = field(default=10.0, metadata=_between(0, 300, above=True, unit="s"))
    backoff_min_s: float = field(default=1.0, metadata=_between(0, 3600, above=True, unit="s"))
    backoff_max_s: float = field(default=300.0, metadata=_between(0, 86400, above=True, unit="s"))
    #: File holding the device key (mode 0600); the key never lives in this file.
    key_file: str = "/var/lib/window-evaluator/device.key"
    verify_tls: bool = True
    ca_bundle: str = ""
    #: Plain HTTP to a server that is not this machine: answers still signed, but nothing is private
    #: (a standing fault while on).
    insecure_http: bool = False
    #: How requests are signed: the device's own key pair ("ed25519") or the v2 shared key ("hmac-sha256").
    signature: str = field(default="ed25519", metadata=_check(lambda v: v in ("ed25519", "hmac-sha256"),
                                                              'must be "ed25519" or "hmac-sha256"'))
    #: The hall's Ed25519 public key (base64 of its 32 raw bytes): verifies the hall's answers.
    hall_public_key: str = field(default="", metadata=_check(
        _ed25519_public_key, "must be empty or standard base64 of a 32-byte Ed25519 public key"))
    #: The device's Ed25519 private key (PKCS#8 PEM, mode 0600), made on the device when missing.
    private_key_file: str = "/var/lib/window-evaluator/device-ed25519.pem"


@dataclass(frozen=True)
class ClockSection:
    #: A clock that claims to be synced but differs from verified hall time by more than this is not
    #: believed (``clock_disagrees``): events are stamped unsynced and dated by the hall's time.
    max_disagreement_s: float = field(default=120.0, metadata=_check(
        lambda v: math.isfinite(v) and 5 <= v <= 86400, "must be 5 to 86400"))


#: How the speaker is fitted: none, an I²S amplifier (MAX98357A-class) or a USB sound card.
AUDIO_OUTPUTS = ("none", "i2s", "usb")


def _pin_or_none(v: int) -> bool:
    return v == -1 or v in BCM_PINS


@dataclass(frozen=True)
class AudioSection:
    """Voice prompts and the press beep (device.outputs); off unless a hall turns them on."""

    enabled: bool = False
    volume: int = field(default=70, metadata=_check(lambda v: 0 <= v <= 100, "must be 0 to 100 (percent)"))
    output: str = field(default="none", metadata=_check(
        lambda v: v in AUDIO_OUTPUTS, "must be one of " + ", ".join(AUDIO_OUTPUTS)))
    #: The ALSA device the prompts are played on (``aplay -D``).
    device: str = field(default="default", metadata=_check(
        lambda v: 0 < len(v) <= 64 and v.isprintable() and " " not in v, "must be an ALSA device name"))
    #: Silent outside the opening hours (``hours.*``).
    quiet_outside_hours: bool = True
    #: Where the prompts rendered with espeak-ng are kept.
    prompts_dir: str = field(default="/var/lib/window-evaluator/prompts", metadata=_check(
        os.path.isabs, "must be an absolute path"))
    #: A hall's own recordings (same file names); each one found and readable wins over the rendered one.
    recordings_dir: str = field(default="/etc/window-evaluator/prompts", metadata=_check(
        lambda v: not v or os.path.isabs(v), "must be an absolute path, or empty"))
    #: BCM pin of the buzzer (-1: none fitted).
    buzzer_pin: int = field(default=-1, metadata=_check(_pin_or_none, "must be a BCM pin from 0 to 27, or -1"))
    #: true: a passive buzzer (gpiozero TonalBuzzer, a tone); false: an active one (Buzzer, on/off).
    buzzer_tonal: bool = False


@dataclass(frozen=True)
class LedSection:
    """The status LED: steady ready, slow blink offline with a backlog, fast blink fault or recovery."""

    pin: int = field(default=-1, metadata=_check(_pin_or_none, "must be a BCM pin from 0 to 27, or -1 (none)"))


@dataclass(frozen=True)
class OutboxSection:
    path: str = "/var/lib/window-evaluator/outbox.db"
    retain_days: int = field(default=90, metadata=_between(1, 3650, unit="days"))
    max_events: int = field(default=500_000, metadata=_between(1, 10_000_000))
    #: Free disk kept in reserve: below it rating pauses; below four times it, a warning.
    min_free_mb: int = field(default=16, metadata=_between(0, 100_000, unit="MB"))


@dataclass(frozen=True)
class ConsoleSection:
    port: str = "/dev/ttyGS0"
    baudrate: int = field(default=115200, metadata=_between(300, 4_000_000, unit="baud"))
    #: What a technician commits over the console; loaded after the files and --set.
    settings_path: str = "/var/lib/window-evaluator/settings.toml"
    #: An authorised console session ends by itself after this many seconds without input (``Lock`` ends it at once).
    auto_lock_s: float = field(default=300.0, metadata=_between(10, 86400, unit="s"))


@dataclass(frozen=True)
class LogSection:
    level: str = field(default="INFO", metadata=_check(
        lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR"), "must be DEBUG, INFO, WARNING or ERROR"))


@dataclass(frozen=True)
class Config:
    device: DeviceSection = DeviceSection()
    staff: StaffSection = StaffSection()
    session: SessionSection = SessionSection()
    buttons: ButtonsSection = ButtonsSection()
    display: DisplaySection = DisplaySection()
    hours: HoursSection = HoursSection()
    reasons: ReasonsSection = ReasonsSection()
    qr: QrSection = QrSection()
    upload: UploadSection = UploadSection()
    outbox: OutboxSection = OutboxSection()
    console: ConsoleSection = ConsoleSection()
    log: LogSection = LogSection()
    clock: ClockSection = ClockSection()
    audio: AudioSection = AudioSection()
    led: LedSection = LedSection()


def sections() -> dict[str, type]:
    """``{name: section class}`` in schema order."""
    return dict(typing.get_type_hints(Config))


@functools.cache
def _schema() -> dict[str, Any]:
    """``{"section.key": type}`` of every key, in schema order."""
    return {f"{name}.{key}": hint for name, cls in sections().items()
            for key, hint in typing.get_type_hints(cls).items()}


def key_names() -> tuple[str, ...]:
    """Every ``section.key`` of the schema, in schema order."""
    return tuple(_schema())


def _hint(key: str) -> Any:
    """The type of ``section.key``.

    Raises:
        ConfigError: naming the section or key when the schema has no such thing.
    """
    section, dot, name = key.partition(".")
    if not dot or not section or not name:
        raise ConfigError([(key, "a key looks like section.key")])
    if section not in sections():
        raise ConfigError([(section, "unknown section")])
    hint = _schema().get(key)
    if hint is None:
        raise ConfigError([(key, "unknown key")])
    return hint


def parse_value(key: str, text: str) -> Value:
    """One value of ``section.key`` as a technician types it (``Set``, ``--set``, a CSV cell).

    Text is read as TOML where that gives a value (``45``, ``true``,
    ``[5, 6, 13, 19, 26]``, ``"quoted"``); for a string key, text that does
    not start with a quote is taken as it is, so ``欧阳 娜娜`` needs no quotes.
    The result is checked against the key's type: integers widen to floats,
    lists become tuples.

    Raises:
        ConfigError: naming the key: unknown, the wrong type, unbalanced
            quotes or control characters.
    """
    hint = _hint(key)
    text = text.strip()
    value: Any
    if hint in (str, Secret) and not text.startswith(('"', "'")):
        value = text
    else:
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            if hint in (str, Secret):
                raise ConfigError([(key, "unbalanced quotes")]) from None
            value = text
    if isinstance(value, str) and not value.isprintable():
        raise ConfigError([(key, "control characters are not allowed")])
    return convert_value(key, value)


def convert_value(key: str, value: Any) -> Value:
    """Check a value already read from TOML (a profile, a file) against the key's type.

    Raises:
        ConfigError: naming the key: unknown, or the wrong type.
    """
    hint = _hint(key)
    ok, converted = _convert(value, hint)
    if not ok:
        raise ConfigError([(key, f"must be {_type_name(hint)}, not {_shown(value)}")])
    problem = value_problem(key, converted)
    if problem:
        raise ConfigError([(key, problem)])
    return converted


def rule(key: str) -> str | None:
    """What ``section.key`` accepts, as its refusal says it (``must be 0 to 255``), or None."""
    section, _, name = key.partition(".")
    f = {f.name: f for f in dataclasses.fields(sections()[section])}.get(name)
    message = f.metadata.get("message") if f is not None else None
    if message:
        return str(message)
    if key in READ_PATHS:
        return "must be empty (the system's CAs) or an absolute path of a readable regular file"
    if is_path_key(key):
        return "must be an absolute path of a regular file (or one not made yet) in a writable folder"
    return None


def value_problem(key: str, value: Value) -> str | None:
    """Why ``value`` (already of the key's type) cannot be ``section.key`` on its own, or None.

    The rules of its type (finite numbers, printable text, a path of a file of
    the device's own) and the key's own check (its range, its choices). What
    depends on other keys (pins used twice, the panel's sizes) is checked when
    the whole configuration is built. ``Set``, ``--set``, profiles and CSV
    rows all come through here; :func:`build` applies the same rules.
    """
    problem = _value_problem(key, value)
    if problem:
        return problem
    section, _, name = key.partition(".")
    f = {f.name: f for f in dataclasses.fields(sections()[section])}[name]
    check = f.metadata.get("check")
    if check and not check(value):
        return f"{f.metadata['message']} (got {_shown(value)})"
    if check is None and _number(value) and abs(value) > MAX_NUMBER:
        return f"must be at most {MAX_NUMBER:g} (got {value!r})"
    return None


def format_value(key: str, value: Any) -> str:
    """``value`` of ``section.key`` as TOML text, which :func:`parse_value` reads back.

    Used for the settings overlay file and by the provisioning command's
    ``Set`` lines. A :class:`Secret` is written as :data:`MASK`: secrets live
    in files of their own, never in settings text.
    """
    try:
        ok, converted = _convert(value, _hint(key))
    except ConfigError:
        ok, converted = False, value
    return _toml(converted if ok else value)


def _toml(value: Any) -> str:
    if isinstance(value, Secret):
        return _toml(MASK)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _is_control(c) else c)
                         for c in str(value)) + '"'


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _is_control(c: str) -> bool:
    return ord(c) < 0x20 or ord(c) == 0x7F


def _shown(value: Any) -> str:
    """A wrong value as a problem message quotes it (never a secret's text)."""
    return MASK if isinstance(value, Secret) else repr(value)


def parse_override(text: str) -> tuple[str, str, Value]:
    """Split and read ``section.key=value`` (``--set``); the value as :func:`parse_value` reads it.

    So ``buttons.pins=[5,6,13,19,26]`` is a tuple and ``staff.name=李四`` a string.

    Raises:
        ConfigError: naming the key.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or "." not in name:
        raise ConfigError([(text, "an override must look like section.key=value")])
    section, _, key = name.partition(".")
    return section, key, parse_value(name, raw)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file into a dict; malformed TOML is a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([(str(path), "file not found")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([(str(path), f"malformed TOML: {e}")]) from None
    except OSError as e:
        raise ConfigError([(str(path), f"cannot be read: {e.strerror}")]) from None


def _merge(raw: dict[str, dict[str, Any]], layer: Layer, problems: list[tuple[str, str]]) -> None:
    for section, values in layer.items():
        if not isinstance(values, Mapping):
            problems.append((section, "must be a [section] table"))
            continue
        raw.setdefault(section, {}).update(values)


def load(paths: Iterable[str | os.PathLike[str]] = (), overrides: Iterable[str] = (),
         layers: Iterable[Layer] = ()) -> Config:
    """Build the configuration from its layers, each over the one before.

    The defaults in the code, then the TOML files in ``paths``, then the
    ``section.key=value`` texts in ``overrides`` (``--set``), then each dict
    in ``layers`` (``{section: {key: value}}``, such as the overlay a
    technician committed over the console) as it is: never rendered to TOML
    text and read again.

    Raises:
        ConfigError: listing every bad key at once.
    """
    raw: dict[str, dict[str, Any]] = {}
    problems: list[tuple[str, str]] = []
    for path in paths:
        try:
            data = read_toml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        _merge(raw, data, problems)
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        raw.setdefault(section, {})[key] = value
    for layer in layers:
        _merge(raw, layer, problems)
    config, more = build(raw)
    problems.extend(more)
    if problems:
        raise ConfigError(problems)
    return config


def build(raw: Layer) -> tuple[Config, list[tuple[str, str]]]:
    """Validate a ``{section: {key: value}}`` dict; returns ``(Config, problems)``."""
    problems: list[tuple[str, str]] = []
    built: dict[str, Any] = {}
    schema = sections()
    for section in raw:
        if section not in schema:
            problems.append((section, "unknown section"))
    for name, cls in schema.items():
        values = raw.get(name, {})
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            full = f"{name}.{key}"
            if key not in hints:
                problems.append((full, "unknown key"))
                continue
            ok, converted = _convert(value, hints[key])
            if not ok:
                problems.append((full, f"must be {_type_name(hints[key])}, not {_shown(value)}"))
                continue
            problem = _value_problem(full, converted)
            if problem:
                problems.append((full, problem))
                continue
            kwargs[key] = converted
        for f in dataclasses.fields(cls):
            if f.name not in kwargs and f"{name}.{f.name}" in {k for k, _ in problems}:
                continue  # refused above: its default is not what was asked for
            value = kwargs.get(f.name, f.default)
            check = f.metadata.get("check")
            if check and not check(value):
                problems.append((f"{name}.{f.name}", f"{f.metadata['message']} (got {_shown(value)})"))
            elif check is None and _number(value) and abs(value) > MAX_NUMBER:
                problems.append((f"{name}.{f.name}", f"must be at most {MAX_NUMBER:g} (got {value!r})"))
        built[name] = cls(**kwargs)
    d = built["display"]
    if d.model in DISPLAY_MODELS and not (d.width and d.height):
        w, h = DISPLAY_MODELS[d.model]
        built["display"] = dataclasses.replace(d, width=d.width or w, height=d.height or h)
    config = Config(**built)
    if not {k for k, _ in problems} & {"display.width", "display.height", "display.model"}:
        problems.extend(_panel_problems(config, raw))
    problems.extend(_cross_checks(config))
    return config, problems


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check a TOML value against a field type; ints widen to float, lists to tuples."""
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if hint is Secret:
        if isinstance(value, Secret):
            return True, value
        return isinstance(value, str), Secret(value) if isinstance(value, str) else value
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_convert(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config type {hint}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Secret: "a string"}
    return names[hint]


#: Folders no file of the device may be in: device nodes and the kernel's views.
FORBIDDEN_FOLDERS = ("/dev", "/proc", "/sys")
#: Path keys the device only reads (the file must exist); empty means "none" for these.
READ_PATHS = frozenset({"upload.ca_bundle"})
#: Path keys that may be empty (the feature is then off).
OPTIONAL_PATHS = frozenset({"upload.ca_bundle"})
#: Keys that end like a path key but name something else (a serial device, not a file).
NOT_FILE_PATHS = frozenset({"console.port"})
#: The longest path accepted (Linux's PATH_MAX).
MAX_PATH = 4096
#: No number of any key is larger than this, whatever its own range (a backstop for keys added later).
MAX_NUMBER = 1e9


def is_path_key(key: str) -> bool:
    """Whether ``section.key`` names a file of the device (the outbox, a key, the settings, a CA bundle).

    By name, so that a key added later (``upload.private_key_file``) is checked
    like the others without a list to keep: ``path``, ``*_path``, ``*_file``,
    ``ca_bundle``.
    """
    name = key.partition(".")[2]
    if key in NOT_FILE_PATHS:
        return False
    return name in ("path", "ca_bundle") or name.endswith(("_path", "_file"))


def path_problem(key: str, value: str) -> str | None:
    """Why ``value`` cannot be the file of path key ``key``, or None.

    A path key names an absolute, plain path (no ``..``, ``.``, ``//`` or a
    trailing ``/``) of a regular file, or of a file that does not exist yet,
    outside ``/dev``, ``/proc`` and ``/sys`` (after symbolic links), whose
    folder is writable (for a file the device only reads, the file must
    exist and be readable). So ``/dev/null``, a folder, a fifo, a relative
    path or an empty one are refused.
    """
    if not value:
        return None if key in OPTIONAL_PATHS else "must not be empty: an absolute path of a file"
    if "\0" in value or not value.isprintable():
        return "must not contain control characters"
    if len(value) > MAX_PATH:
        return f"must be at most {MAX_PATH} characters"
    if not value.startswith("/"):
        return f"must be an absolute path (starting with /), not {value!r}"
    if os.path.normpath(value) != value or value.startswith("//") or "/../" in value + "/":
        return f"must be a plain absolute path (no '..', '.', '//' or trailing '/'), not {value!r}"
    real = os.path.realpath(value)
    for folder in FORBIDDEN_FOLDERS:
        if real == folder or real.startswith(folder + "/"):
            shown = value if real == value else f"{value} (= {real})"
            return f"must not be under {folder}: {shown} is not a file of the device's own"
    examined = True
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except PermissionError:
        # Another user's folder (the service's, read by a tool run as someone else): its owner's start checks it.
        st, examined = None, False
    except OSError as e:
        return f"{value} cannot be examined: {e.strerror}"
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "a fifo" if stat.S_ISFIFO(st.st_mode) else (
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
            stat.S_ISBLK(st.st_mode) else "not a regular file")
        return f"{value} is {what}, not a regular file"
    if not examined:
        return None
    if key in READ_PATHS:
        if st is None:
            return f"no such file: {value}"
        if not os.access(real, os.R_OK):
            return f"{value} cannot be read"
        return None
    # The nearest folder that exists must be a folder the device may write in (the rest is made at start).
    folder = os.path.dirname(real)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"its folder {folder} is not a folder"
    if _may_judge(folder) and not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable"
    return None


def _may_judge(folder: str) -> bool:
    """Whether this process can tell if the device may write in ``folder``.

    As root (the installer, ``sudo evaluator --check``) or as the folder's
    owner (the service itself): yes. A tool run by another user cannot speak
    for the service's permissions; the service's own start checks them.
    """
    euid = os.geteuid()
    try:
        return euid == 0 or os.stat(folder).st_uid == euid
    except OSError:
        return False


def _value_problem(key: str, value: Any) -> str | None:
    """Rules every key of a type follows, before its own check: finite numbers, printable text, paths."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    if isinstance(value, str):
        if not value.isprintable():
            return "must not contain control characters (newlines, tabs ...)"
        if is_path_key(key):
            return path_problem(key, value)
    if isinstance(value, tuple):
        for item in value:
            problem = _value_problem(key, item)
            if problem:
                return problem
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _panel_problems(config: Config, raw: Layer) -> list[tuple[str, str]]:
    """``display.width``/``height`` only as the panel table allows for the model."""
    d = config.display
    model = panels.models().get(d.model)
    sizes = None if model is None else model.all_sizes
    if sizes is None or (d.width, d.height) in sizes:
        return []
    asked = raw.get("display", {})
    keys = [k for k in ("width", "height") if k in asked] or ["width", "height"]
    allowed = ", ".join(f"{w}x{h}" for w, h in sizes)
    return [(f"display.{k}", f"the {d.model} drives {allowed} only (0: its own size); "
             f"{d.width}x{d.height} is not one of them") for k in keys]


def _cross_checks(config: Config) -> list[tuple[str, str]]:
    problems = []
    pins = config.buttons.pins
    if len(set(pins)) != len(pins):
        twice = sorted({p for p in pins if pins.count(p) > 1})
        problems.append(("buttons.pins", f"pin {', '.join(map(str, twice))} used twice"))
    if config.session.source == "staff_button" and config.buttons.staff_pin in pins:
        problems.append(("buttons.staff_pin", f"pin {config.buttons.staff_pin} is also a rating button"))
    if config.display.interface == "spi":
        for key in ("gpio_dc", "gpio_rst"):
            pin = getattr(config.display, key)
            if pin in pins:
                problems.append((f"display.{key}", f"pin {pin} is also a rating button"))
    problems.extend(_hardware_checks(config))
    if config.upload.backoff_max_s < config.upload.backoff_min_s:
        problems.append(("upload.backoff_max_s", "must be >= upload.backoff_min_s"))
    if _plain_http_elsewhere(config.upload.server) and not config.upload.insecure_http:
        problems.append(("upload.server", "plain http:// only to this machine (127.0.0.1, localhost); "
                                          "use https://, or set upload.insecure_http = true"))
    return problems


#: Display models with no I²C interface on the chip (SPI or parallel only).
SPI_ONLY_MODELS = tuple(name for name, m in panels.models().items() if "i2c" not in m.interfaces)
#: The interface, and pins the kernel or the panel holds given what the configuration turns on (device/pinmap.py).
_hardware_checks = pinmap.problems


def _plain_http_elsewhere(url: str) -> bool:
    """Whether ``url`` is plain HTTP to a host that is not a loopback address."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme.lower() != "http" or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def frame_size(config: Config) -> tuple[int, int]:
    """The frame size the configured panel draws: its size (the model's own when 0), turned by ``rotate``."""
    d = config.display
    w, h = d.width, d.height
    if not (w and h):
        w, h = DISPLAY_MODELS.get(d.model, (128, 64))
    return (h, w) if d.rotate in (90, 270) else (w, h)


def as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of a Config (secrets stay :class:`Secret`)."""
    return {name: {f.name: getattr(getattr(config, name), f.name) for f in dataclasses.fields(cls)}
            for name, cls in sections().items()}


# --- which keys only a new build applies (field metadata ``restart``) ---------------------

#: Sections whose every key only takes effect when the device is built again (the pins, the console's
#: port, the outbox, logging) and the keys of other sections that do; kept as each field's
#: ``metadata["restart"]`` below, so :func:`restart_keys` reads the schema, not a list of prefixes.
_RESTART_SECTIONS = ("buttons", "console", "outbox", "log", "audio", "led")
_RESTART_FIELDS = {"display": ("model", "width", "height", "rotate", "interface", "i2c_port", "i2c_address",
                               "spi_port", "spi_device", "gpio_dc", "gpio_rst"),
                   "session": ("source",)}


def _mark_restart() -> None:
    for name, cls in sections().items():
        for f in dataclasses.fields(cls):
            restart = name in _RESTART_SECTIONS or f.name in _RESTART_FIELDS.get(name, ())
            f.metadata = types.MappingProxyType({**f.metadata, "restart": restart})


_mark_restart()


def needs_restart(key: str) -> bool:
    """Whether a change of ``section.key`` only takes effect when the device is built again."""
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(sections()[section])}
    return bool(fields[name].metadata.get("restart", False))


def restart_keys(old: Config, new: Config) -> list[str]:
    """The keys changed from ``old`` to ``new`` that only a restart applies."""
    before, after = as_dict(old), as_dict(new)
    return [f"{s}.{k}" for s in after for k in after[s] if after[s][k] != before[s][k] and needs_restart(f"{s}.{k}")]
