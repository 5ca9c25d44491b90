"""Configuration: defaults in the code, then a TOML file, then ``--set`` overrides.

Each section is a frozen dataclass; its fields, types and defaults are the
schema. Loading checks everything and raises one :class:`ConfigError` that
lists every bad key, as Mopidy does, so a technician fixes them all at once.
``config.toml`` at the repository root documents every key with its default.
"""

import dataclasses
import os
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field

from device.errors import ConfigError

SESSION_SOURCES = ("free", "staff_button", "hall")
DISPLAY_MODELS = {
    # model: (width, height)
    "ssd1306": (128, 64),
    "sh1106": (128, 64),
    "ssd1309": (128, 64),
    "ssd1322": (256, 64),
    "ssd1327": (128, 128),
    "ssd1351": (128, 128),
}
#: BCM numbers of the Pi's 40-pin header GPIOs.
BCM_PINS = range(0, 28)


class Secret:
    """A string that prints as ``********`` (Mopidy's ``Secret``): the device key.

    Its value comes out only through :meth:`reveal`, so it never lands in a
    repr, a log line, an exception or a console answer by accident.
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


def _check(fn, message):
    """Field metadata: a validator and the message shown when it fails."""
    return {"check": fn, "message": message}


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _http_url(v):
    try:
        parts = urllib.parse.urlsplit(v)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in v


def _hhmm(v):
    try:
        h, m = v.split(":")
        return len(h) == 2 and len(m) == 2 and 0 <= int(h) <= 24 and 0 <= int(m) < 60
    except ValueError:
        return False


def _iso_date(v):
    import datetime

    try:
        datetime.date.fromisoformat(v)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class DeviceSection:
    id: str = field(default="WE-0001", metadata=_check(
        lambda v: 0 < len(v) <= 64 and v.isprintable() and "/" not in v and " " not in v,
        "must be 1 to 64 printable characters without spaces or '/'"))
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
    source: str = field(default="free", metadata=_check(
        lambda v: v in SESSION_SOURCES, "must be one of " + ", ".join(SESSION_SOURCES)))
    min_interval_s: float = field(default=10.0, metadata=_check(_non_negative, "must be >= 0"))
    rating_window_s: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))
    thanks_s: float = field(default=3.0, metadata=_check(_positive, "must be > 0"))
    later_s: float = field(default=20.0, metadata=_check(_positive, "must be > 0"))
    reasons_s: float = field(default=15.0, metadata=_check(_positive, "must be > 0"))
    #: Holding buttons 1 and 5 this long shows the technician's service screen.
    service_hold_s: float = field(default=5.0, metadata=_check(_positive, "must be > 0"))
    service_s: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))
    #: A rating this soon after the session opened is faster than a person.
    suspect_reaction_s: float = field(default=0.3, metadata=_check(_non_negative, "must be >= 0"))
    #: This many accepted ratings within ``suspect_window_s`` mark a burst.
    suspect_count: int = field(default=4, metadata=_check(lambda v: v >= 2, "must be >= 2"))
    suspect_window_s: float = field(default=60.0, metadata=_check(_positive, "must be > 0"))


@dataclass(frozen=True)
class ButtonsSection:
    pins: tuple[int, ...] = field(default=(5, 6, 13, 19, 26), metadata=_check(
        lambda v: len(v) == 5 and all(p in BCM_PINS for p in v),
        "must be five BCM pin numbers from 0 to 27, 非常满意 first"))
    staff_pin: int = field(default=21, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    bounce_ms: int = field(default=30, metadata=_check(lambda v: 0 <= v <= 1000, "must be 0 to 1000"))


@dataclass(frozen=True)
class DisplaySection:
    model: str = field(default="ssd1306", metadata=_check(
        lambda v: v in DISPLAY_MODELS, "must be one of " + ", ".join(DISPLAY_MODELS)))
    #: 0: the model's own size (see DISPLAY_MODELS).
    width: int = field(default=0, metadata=_check(_non_negative, "must be >= 0"))
    height: int = field(default=0, metadata=_check(_non_negative, "must be >= 0"))
    rotate: int = field(default=0, metadata=_check(lambda v: v in (0, 90, 180, 270), "must be 0, 90, 180 or 270"))
    interface: str = field(default="i2c", metadata=_check(lambda v: v in ("i2c", "spi"), "must be i2c or spi"))
    i2c_port: int = field(default=1, metadata=_check(_non_negative, "must be >= 0"))
    i2c_address: int = field(default=0x3C, metadata=_check(lambda v: 0x03 <= v <= 0x77, "must be a 7-bit I2C address"))
    spi_port: int = field(default=0, metadata=_check(_non_negative, "must be >= 0"))
    spi_device: int = field(default=0, metadata=_check(_non_negative, "must be >= 0"))
    gpio_dc: int = field(default=24, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    gpio_rst: int = field(default=25, metadata=_check(lambda v: v in BCM_PINS, "must be a BCM pin from 0 to 27"))
    contrast: int = field(default=255, metadata=_check(lambda v: 0 <= v <= 255, "must be 0 to 255"))
    dim_contrast: int = field(default=32, metadata=_check(lambda v: 0 <= v <= 255, "must be 0 to 255"))
    dim_after_s: float = field(default=120.0, metadata=_check(_positive, "must be > 0"))
    shift_every_s: float = field(default=180.0, metadata=_check(_positive, "must be > 0"))


@dataclass(frozen=True)
class HoursSection:
    """Opening hours: outside them the panel sleeps until a press."""

    open_days: tuple[int, ...] = field(default=(1, 2, 3, 4, 5, 6, 7), metadata=_check(
        lambda v: all(1 <= d <= 7 for d in v), "must be ISO weekdays 1 (Monday) to 7"))
    open_from: str = field(default="00:00", metadata=_check(_hhmm, "must be HH:MM"))
    open_until: str = field(default="24:00", metadata=_check(_hhmm, "must be HH:MM"))
    closed_dates: tuple[str, ...] = field(default=(), metadata=_check(
        lambda v: all(_iso_date(d) for d in v), "must be dates as YYYY-MM-DD"))


def _reason_list(v):
    return len(v) <= 4 and all(len(item.split(None, 1)) == 2 for item in v)


@dataclass(frozen=True)
class ReasonsSection:
    """Reason tags offered after a 差评, as "CODE 文本"; the hall server's list wins."""

    version: str = ""
    dissatisfied: tuple[str, ...] = field(default=(), metadata=_check(
        _reason_list, 'must be at most four entries like "401 办事效率低" (code, space, text)'))
    very_dissatisfied: tuple[str, ...] = field(default=(), metadata=_check(
        _reason_list, 'must be at most four entries like "501 服务态度差" (code, space, text)'))

    def by_level(self):
        """``{Level: ((code, text), ...)}`` for the levels that have tags."""
        from device.levels import Level

        out = {}
        for level in (Level.DISSATISFIED, Level.VERY_DISSATISFIED):
            items = getattr(self, level.value)
            if items:
                out[level] = tuple(tuple(item.split(None, 1)) for item in items)
        return out


@dataclass(frozen=True)
class QrSection:
    url: str = field(default="https://hcp.example.org/w/01", metadata=_check(_http_url, "must be an http(s) URL with a host"))


@dataclass(frozen=True)
class UploadSection:
    server: str = field(default="http://127.0.0.1:8080", metadata=_check(_http_url, "must be an http(s) URL with a host"))
    batch_size: int = field(default=250, metadata=_check(lambda v: 1 <= v <= 1000, "must be 1 to 1000"))
    heartbeat_s: float = field(default=300.0, metadata=_check(_non_negative, "must be >= 0 (0: no heartbeat)"))
    timeout_s: float = field(default=10.0, metadata=_check(_positive, "must be > 0"))
    backoff_min_s: float = field(default=1.0, metadata=_check(_positive, "must be > 0"))
    backoff_max_s: float = field(default=300.0, metadata=_check(_positive, "must be > 0"))
    #: File holding the device key (mode 0600); the key never lives in this file.
    key_file: str = "/var/lib/window-evaluator/device.key"
    verify_tls: bool = True
    ca_bundle: str = ""


@dataclass(frozen=True)
class OutboxSection:
    path: str = "/var/lib/window-evaluator/outbox.db"
    retain_days: int = field(default=90, metadata=_check(_positive, "must be > 0"))
    max_events: int = field(default=500_000, metadata=_check(_positive, "must be > 0"))
    #: Free disk kept in reserve: below it rating pauses; below four times it, a warning.
    min_free_mb: int = field(default=16, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class ConsoleSection:
    port: str = "/dev/ttyGS0"
    baudrate: int = field(default=115200, metadata=_check(_positive, "must be > 0"))
    #: What a technician commits over the console; loaded after the files and --set.
    settings_path: str = "/var/lib/window-evaluator/settings.toml"


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


def sections():
    """``{name: section class}`` in schema order."""
    return {f.name: f.type for f in dataclasses.fields(Config)}


def parse_override(text):
    """Split ``section.key=value``; the value is read as TOML, else as a string.

    So ``buttons.pins=[5,6,13,19,26]`` is a list and ``staff.name=李四`` a string.
    """
    name, sep, raw = text.partition("=")
    if not sep or "." not in name:
        raise ConfigError([(text, "an override must look like section.key=value")])
    section, _, key = name.strip().partition(".")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def read_toml(path):
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


def load(paths=(), overrides=()):
    """Build the configuration from defaults, files and ``section.key=value`` overrides.

    Raises:
        ConfigError: listing every bad key at once.
    """
    raw = {}
    problems = []
    for path in paths:
        try:
            data = read_toml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        for section, values in data.items():
            if not isinstance(values, dict):
                problems.append((section, "must be a [section] table"))
                continue
            raw.setdefault(section, {}).update(values)
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        raw.setdefault(section, {})[key] = value
    config, more = build(raw)
    problems.extend(more)
    if problems:
        raise ConfigError(problems)
    return config


def build(raw):
    """Validate a ``{section: {key: value}}`` dict; returns ``(Config, problems)``."""
    problems = []
    built = {}
    schema = sections()
    for section in raw:
        if section not in schema:
            problems.append((section, "unknown section"))
    for name, cls in schema.items():
        values = raw.get(name, {})
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            full = f"{name}.{key}"
            if key not in hints:
                problems.append((full, "unknown key"))
                continue
            ok, converted = _convert(value, hints[key])
            if not ok:
                problems.append((full, f"must be {_type_name(hints[key])}, not {value!r}"))
                continue
            kwargs[key] = converted
        for f in dataclasses.fields(cls):
            value = kwargs.get(f.name, f.default)
            check = f.metadata.get("check")
            if check and not check(value):
                problems.append((f"{name}.{f.name}", f"{f.metadata['message']} (got {value!r})"))
        built[name] = cls(**kwargs)
    d = built["display"]
    if d.model in DISPLAY_MODELS and not (d.width and d.height):
        w, h = DISPLAY_MODELS[d.model]
        built["display"] = dataclasses.replace(d, width=d.width or w, height=d.height or h)
    config = Config(**built)
    problems.extend(_cross_checks(config))
    return config, problems


def _convert(value, hint):
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
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        items = [_convert(v, item) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    raise TypeError(f"unsupported config type {hint}")


def _type_name(hint):
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _cross_checks(config):
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
    if config.upload.ca_bundle and not os.path.isfile(config.upload.ca_bundle):
        problems.append(("upload.ca_bundle", f"no such file: {config.upload.ca_bundle}"))
    if config.upload.backoff_max_s < config.upload.backoff_min_s:
        problems.append(("upload.backoff_max_s", "must be >= upload.backoff_min_s"))
    return problems


def to_toml_value(value):
    """Render a config value as TOML (for ``config.toml`` and the console)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def as_dict(config):
    """``{section: {key: value}}`` of a Config."""
    return {name: dataclasses.asdict(getattr(config, name)) for name in sections()}
