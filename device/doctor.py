"""``evaluator doctor``: what is wrong with this device, one line per part, with the fix.

The hall technician's one command. Each check looks at one part the way the
device uses it — settings, the panel on its bus, the pin library and each
button pin, the font, the data folder, the outbox's integrity and hash chain,
the hall server (a signed heartbeat, its answer verified), the clock, the
console's port, the service — and prints one line: ``ok``, ``warn`` or
``FAIL``, what it found and, when not ok, what fixes it. Exit status 1 when
any check fails.

Nothing is changed: the panel is probed, never drawn on (a running service
keeps its frame), pins are read, not driven, the database is opened
read-only. Run it as root (``sudo evaluator doctor``): permissions are
judged for the service user, whoever runs the doctor. Every part a check
reaches comes in through :class:`Parts`, so tests swap in failing ones.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import grp
import os
import pwd
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from gpiozero import Button

from device import __version__, integrity, panels, pinmap
from device import config as config_mod
from device.app import http_transport
from device.checks import check_screens, configured_size, load_key
from device.clock import kernel_clock_synced
from device.drivers.pins import open_pin_factory
from device.errors import ConfigError, FontError
from device.layout import SERVICE_USER, STATE_DIR, SYSTEM_CONFIG, UNIT
from device.queue.health import uplink_check
from device.settings import SettingsStore
from device.ui import fonts

if TYPE_CHECKING:
    from device.config import Config, Secret

OK, WARN, FAIL = "ok", "warn", "FAIL"

#: BCM GPIO number -> pin on the 40-pin header.
HEADER_PIN = {2: 3, 3: 5, 4: 7, 14: 8, 15: 10, 17: 11, 18: 12, 27: 13, 22: 15, 23: 16, 24: 18, 10: 19, 9: 21,
              25: 22, 11: 23, 8: 24, 7: 26, 0: 27, 1: 28, 5: 29, 6: 31, 12: 32, 13: 33, 19: 35, 16: 36, 26: 37,
              20: 38, 21: 40}

PIN_FIX = ("install the pin library: sudo apt-get install python3-lgpio (deploy/install.sh makes the venv see it), "
           "or pip install lgpio; the service user needs the gpio group")
KEY_FIX = "DeviceKey <key> on the console, the key the hall server has for this device id (evaluator-provision sets it)"


@dataclass(frozen=True)
class Result:
    """One check's verdict."""

    name: str
    status: str
    message: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        """``status  name      message -> fix``, on one line whatever the message holds."""
        fix = f" -> {self.fix}" if self.fix and self.status != OK else ""
        return " ".join(f"{self.status:<4}  {self.name:<9} {self.message}{fix}".split("\n"))


class User(NamedTuple):
    """Whose permissions count: the service user's, not root's."""

    name: str
    uid: int
    gids: frozenset[int]


def _run(command: Sequence[str]) -> tuple[int, str]:
    """Run a command; ``(127, "")`` when it is not installed."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 127, ""
    return done.returncode, done.stdout


def _smbus(port: int) -> Any:
    import smbus2  # noqa: PLC0415 -- Pi-only (the pi extra): imported when the panel's bus is probed

    return smbus2.SMBus(port)


def _spidev(port: int, device: int) -> Any:
    import spidev  # noqa: PLC0415 -- Pi-only (the pi extra): imported when the panel's bus is probed

    spi = spidev.SpiDev()
    spi.open(port, device)
    return spi


def _pin_factory() -> Any:
    return open_pin_factory()


def service_user(name: str = SERVICE_USER) -> User:
    """The service user when it exists and root asks; else whoever runs the doctor."""
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            pass
        else:
            gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
            return User(name, entry.pw_uid, frozenset(gids))
    uid = os.geteuid()
    who = next((p.pw_name for p in pwd.getpwall() if p.pw_uid == uid), str(uid))
    return User(who, uid, frozenset(os.getgroups()) | {os.getegid()})


@dataclass
class Parts:
    """Everything the checks reach; tests replace what should fail.

    Attributes:
        open_i2c: ``port -> bus`` with ``write_quick(address)`` and ``close()`` (smbus2).
        open_spi: ``(port, device) -> bus`` with ``close()`` (spidev).
        pin_factory: ``() -> gpiozero pin factory``; raises when no pin library loads.
        make_transport: ``(config, key, timeout) -> transport`` to the hall (default: the device's own).
        run: ``command -> (returncode, stdout)``; 127 when the program is missing.
        user: whose permissions count (default :func:`service_user`).
        clock_synced: whether the kernel says the clock is synchronised.
        cmdline: the kernel's command line file.
        unit_path: where the installed unit is (its sandbox limits where the service may write).
        font_dir: the font folder (default: the device's).
        device_tree: where the kernel shows the device tree (the buses' status, the I²C clock).
    """

    open_i2c: Callable[[int], Any] = _smbus
    open_spi: Callable[[int, int], Any] = _spidev
    pin_factory: Callable[[], Any] = _pin_factory
    make_transport: Callable[[Config, Secret, float], Any] | None = None
    run: Callable[[Sequence[str]], tuple[int, str]] = _run
    user: User = field(default_factory=service_user)
    clock_synced: Callable[[], bool] | None = None
    cmdline: str = "/proc/cmdline"
    unit_path: str = f"/etc/systemd/system/{UNIT}"
    font_dir: str | None = None
    device_tree: str = pinmap.DEVICE_TREE


def _may(st: os.stat_result, user: User, bits: int) -> bool:
    """Whether ``user`` has ``bits`` (4 read, 2 write, 1 search) by the file's mode; root always has."""
    if user.uid == 0:
        return True
    shift = 6 if st.st_uid == user.uid else 3 if st.st_gid in user.gids else 0
    return (st.st_mode >> shift) & bits == bits


def _owner(st: os.stat_result) -> str:
    return next((p.pw_name for p in pwd.getpwall() if p.pw_uid == st.st_uid), str(st.st_uid))


def _group(gid: int) -> str:
    return next((g.gr_name for g in grp.getgrall() if g.gr_gid == gid), str(gid))


def _problems(e: ConfigError) -> str:
    return "; ".join(f"{key}: {message}" for key, message in e.problems) or str(e)


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# --- the checks -------------------------------------------------------------------------------------

def check_settings(paths: list[str], overrides: list[str], parts: Parts) -> tuple[Config, Result]:
    """The configuration, the committed settings on top, and what the screens must show."""

    try:
        config = config_mod.load(paths, overrides)
    except ConfigError as e:
        where = ", ".join(paths) or "the built-in defaults"
        return config_mod.load(), Result("settings", FAIL, f"{where}: {_problems(e)}",
                                         "fix each key named in the file; evaluator --check says when it would start")
    try:
        config = SettingsStore(config.console.settings_path, paths, overrides).load()
    except ConfigError as e:
        return config, Result("settings", FAIL, f"committed settings ({config.console.settings_path}): {_problems(e)}",
                              "on the console: Set the key again and Commit, or Discard")
    try:
        check_screens(config, configured_size(config))
    except ConfigError as e:
        return config, Result("settings", FAIL, _problems(e), "Set each key named to something the panel can show, "
                              "then Commit")
    except FontError:
        pass  # the font's own line says so
    d = config.display
    return config, Result("settings", OK, f"device {config.device.id}, window {config.device.window_no}, "
                          f"session source {config.session.source}, {d.model} on {d.interface}")


def check_display(config: Config, parts: Parts) -> Result:
    """The panel on its bus: an I²C device must answer at its address; an SPI bus must open."""
    d = config.display
    if d.interface == "i2c":
        node = f"/dev/i2c-{d.i2c_port}"
        try:
            bus = parts.open_i2c(d.i2c_port)
        except ImportError as e:
            return Result("display", FAIL, f"no I2C library: {e}", "pip install smbus2 (the pi extra)")
        except OSError as e:
            return _bus_failure(node, e, "i2c", "dtparam=i2c_arm=on in config.txt and i2c-dev loaded")
        try:
            bus.write_quick(d.i2c_address)
        except OSError as e:
            if e.errno == errno.EBUSY:
                return Result("display", FAIL, f"0x{d.i2c_address:02X} on {node} is held by a kernel driver "
                              f"(i2cdetect -y {d.i2c_port} shows UU)",
                              "take the dtoverlay that claims that address out of config.txt, or wire the panel "
                              "to another address and set display.i2c_address")
            return Result("display", FAIL, f"nothing answers at 0x{d.i2c_address:02X} on {node} ({_why(e)})",
                          f"check the panel's wiring (SDA to pin 3, SCL to pin 5, VCC to 3.3 V pin 1, GND to pin 9) "
                          f"and display.i2c_address: i2cdetect -y {d.i2c_port} lists the addresses that answer")
        finally:
            bus.close()
        return Result("display", OK, f"{d.model}: a device answers at 0x{d.i2c_address:02X} on {node}")
    node = f"/dev/spidev{d.spi_port}.{d.spi_device}"
    try:
        parts.open_spi(d.spi_port, d.spi_device).close()
    except ImportError as e:
        return Result("display", FAIL, f"no SPI library: {e}",
                      "sudo apt-get install python3-spidev (deploy/install.sh)")
    except OSError as e:
        return _bus_failure(node, e, "spi", "dtparam=spi=on in config.txt")
    return Result("display", OK, f"{d.model}: {node} opens (SPI has no acknowledgement: Test display on the "
                  f"console shows whether the panel draws)")


#: Each bus the firmware may have on: its device-tree alias, and the pins its kernel driver then holds.
_BUSES = {"I2C1": ("i2c1", pinmap.I2C_PINS[1]), "SPI0": ("spi0", pinmap.SPI_PINS[0]),
          "the UART": (pinmap.UART_ALIAS, pinmap.UART_PINS)}
REINSTALL_FIX = "sudo deploy/install.sh (or reinstall the package) sets config.txt from the configuration, then reboot"


def check_bus(config: Config, parts: Parts) -> Result:
    """The buses as the firmware turned them on: the panel's I²C clock (400 kHz), and no bus the config does not use."""
    d = config.display
    tree = parts.device_tree
    on = pinmap.buses(config)
    extra = []
    for name, (alias, pins) in _BUSES.items():
        used = {"I2C1": on.i2c == 1, "SPI0": on.spi == 0, "the UART": on.uart}[name]
        if not used and pinmap.enabled(alias, tree):
            extra.append(f"{name} (GPIO {', '.join(map(str, sorted(pins)))} held by the kernel)")
    also = f"; also on, unused: {', '.join(extra)}" if extra else ""
    if d.interface != "i2c":
        speed = f"SPI{d.spi_port} for the panel"
        return Result("bus", WARN if extra else OK, speed + also, REINSTALL_FIX)
    hz = pinmap.i2c_hz(d.i2c_port, tree)
    if hz is None:
        return Result("bus", WARN, f"I2C{d.i2c_port}: no clock-frequency in the device tree ({tree}){also}",
                      "dtparam=i2c_arm_baudrate=400000 in config.txt (deploy/install.sh sets it), then reboot")
    try:
        w, h = panels.get(d.model).size
        bits = panels.get(d.model).bits_per_pixel
    except KeyError:
        w, h, bits = 128, 64, 1
    frame_ms = w * h * bits / 8 * 9 / hz * 1000
    speed = f"I2C{d.i2c_port} at {hz / 1000:g} kHz (a full {d.model} frame: {frame_ms:.0f} ms on the wire)"
    if hz < pinmap.I2C_FAST_HZ:
        return Result("bus", WARN, f"{speed}: the panel budget needs {pinmap.I2C_FAST_HZ // 1000} kHz{also}",
                      f"dtparam=i2c_arm_baudrate={pinmap.I2C_FAST_HZ} in config.txt (deploy/install.sh sets it), "
                      "then reboot")
    return Result("bus", WARN if extra else OK, speed + also, REINSTALL_FIX)


def _bus_failure(node: str, e: OSError, group: str, enable: str) -> Result:
    if e.errno == errno.ENOENT:
        return Result("display", FAIL, f"no {node}: the bus is off",
                      f"{enable} (deploy/install.sh does it), then reboot")
    if e.errno in (errno.EACCES, errno.EPERM):
        return Result("display", FAIL, f"{node}: permission denied",
                      f"the service user needs the {group} group: sudo usermod -aG {group} {SERVICE_USER}")
    return Result("display", FAIL, f"{node}: {_why(e)}", "check the panel's wiring and display.interface")


def check_pins(config: Config, parts: Parts, service_running: bool) -> list[Result]:
    """The pin library, then each button pin read with its pull-up (a held pin is left alone)."""
    try:
        factory = parts.pin_factory()
    except Exception as e:
        return [Result("pins", FAIL, f"no pin library loads: {e}", PIN_FIX)]
    name = type(factory).__name__
    results = [Result("pins", WARN if "Native" in name else OK, f"pin library {name}",
                      "gpiozero fell back to its native driver: install lgpio (python3-lgpio)")]
    labels = [(f"button {n}", pin) for n, pin in enumerate(config.buttons.pins, start=1)]
    if config.session.source == "staff_button":
        labels.append(("staff key", config.buttons.staff_pin))
    for label, pin in labels:
        results.append(_check_pin(factory, label, pin, service_running))
    return results


def _check_pin(factory: Any, label: str, pin: int, service_running: bool) -> Result:
    where = f"GPIO {pin} (header pin {HEADER_PIN.get(pin, '?')})"
    try:
        button = Button(pin, pull_up=True, pin_factory=factory)
    except Exception as e:
        if service_running and ("busy" in str(e).lower() or "in use" in str(e).lower()):
            return Result(label, OK, f"{where}: held by the running service (stop it to read the pin)")
        return Result(label, FAIL, f"{where}: cannot be claimed: {type(e).__name__}: {e}",
                      "another program holds the pin, or buttons.pins names a pin the board lacks")
    try:
        closed = button.is_pressed
    finally:
        button.close()
    if closed:
        return Result(label, WARN, f"{where}: reads closed",
                      "if nobody is pressing it, the contact is stuck or the pin is wired to ground")
    return Result(label, OK, f"{where}: open, pulled up")


def check_font(parts: Parts) -> Result:

    try:
        fonts.check_fonts(parts.font_dir)
    except FontError as e:
        return Result("font", FAIL, str(e), "sudo apt-get install xfonts-wqy")
    return Result("font", OK, f"WenQuanYi Bitmap Song in {fonts.font_dir(parts.font_dir)}")


def check_data(config: Config, parts: Parts) -> list[Result]:
    """The data folder: inside the service's sandbox, writable by the service user, private."""
    return [*_sandbox(config, parts), _data_folder(config, parts)]


def _sandbox(config: Config, parts: Parts) -> list[Result]:
    """Under the unit's ProtectSystem=strict the service writes only in its state folder."""
    files = {"outbox.path": config.outbox.path, "console.settings_path": config.console.settings_path,
             "upload.key_file": config.upload.key_file}
    outside = [key for key, path in files.items() if not os.path.abspath(path).startswith(STATE_DIR + os.sep)]
    if not outside or not os.path.exists(parts.unit_path):
        return []
    return [Result("data", FAIL, f"{', '.join(outside)} outside {STATE_DIR}: the service's sandbox "
                   "(ProtectSystem=strict) cannot write there",
                   f"keep them under {STATE_DIR}, or allow the folder: sudo systemctl edit {UNIT} "
                   "(ReadWritePaths=...)")]


def _data_folder(config: Config, parts: Parts) -> Result:
    user = parts.user
    folder = os.path.dirname(os.path.abspath(config.outbox.path))
    if not os.path.isdir(folder):
        return _missing_folder(folder, user, parts)
    st = os.stat(folder)
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if not _may(st, user, 3):
        return Result("data", FAIL, f"{folder} is not writable for {user.name} (owner {_owner(st)}, mode {mode})",
                      f"sudo chown -R {user.name}: {folder} && sudo chmod 700 {folder}")
    key = config.upload.key_file
    if os.path.exists(key) and os.stat(key).st_mode & 0o077:
        return Result("data", FAIL, f"the device key {key} can be read by others", f"sudo chmod 600 {key}")
    free = os.statvfs(folder)
    free_mb = free.f_bavail * free.f_frsize // (1024 * 1024)
    if free_mb < config.outbox.min_free_mb:
        return Result("data", FAIL, f"{folder}: {free_mb} MB free, under the {config.outbox.min_free_mb} MB kept "
                      "in reserve: rating pauses", "free space on the SD card")
    if st.st_mode & 0o077:
        return Result("data", WARN, f"{folder} can be read by others (mode {mode})", f"sudo chmod 700 {folder}")
    return Result("data", OK, f"{folder}: {user.name} may write, private, {free_mb} MB free")


def _missing_folder(folder: str, user: User, parts: Parts) -> Result:
    if os.path.exists(parts.unit_path) and (folder + os.sep).startswith(STATE_DIR + os.sep):
        return Result("data", OK, f"{folder} is made by systemd at the first start (StateDirectory)")
    parent = folder
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if _may(os.stat(parent), user, 3):
        return Result("data", OK, f"{folder} is made at the first start")
    return Result("data", FAIL, f"{folder} does not exist and {user.name} cannot make it in {parent}",
                  f"sudo install -d -m 700 -o {user.name} {folder}, or set outbox.path to a folder "
                  f"{user.name} may write")


def check_database(config: Config) -> Result:
    """SQLite's integrity check and the outbox's hash chain (evaluator-verify's checks)."""

    path = config.outbox.path
    if not os.path.exists(path):
        return Result("database", OK, "no outbox yet: made at the first start")
    fix = (f"keep the file for analysis (evaluator-verify {path}); the device sets a damaged database aside, "
           "counts what was lost and reports it to the hall")
    try:
        _kind, sqlite_check, reports = integrity.verify(path)
    except (OSError, sqlite3.Error, ValueError) as e:
        return Result("database", FAIL, f"{path} cannot be read: {e}", fix)
    if sqlite_check != "ok":
        return Result("database", FAIL, f"SQLite finds damage: {sqlite_check[:120]}", fix)
    broken = [r for r in reports if not r.ok]
    if broken:
        return Result("database", FAIL, broken[0].line(), fix)
    return Result("database", OK, "; ".join(r.line() for r in reports) or "no events yet")


def check_hall(config: Config, parts: Parts) -> Result:
    """One signed heartbeat through the device's own uplink path; the answer must verify."""

    server = config.upload.server
    if not server:
        return Result("hall", FAIL, "upload.server is not set", "Server https://... on the console")
    try:
        key = load_key(config.upload.key_file)
    except ConfigError as e:
        return Result("hall", FAIL, f"the device key cannot be read: {e}",
                      "run the doctor as root: sudo evaluator doctor")
    if not key:
        return Result("hall", FAIL, f"no device key in {config.upload.key_file}", KEY_FIX)

    make_transport = parts.make_transport or http_transport
    transport = make_transport(config, key, min(config.upload.timeout_s, 10.0))
    try:
        answer = uplink_check(transport, config.device.id, {"firmware": __version__, "faults": [], "doctor": True})
    finally:
        transport.close()
    if answer.get("ok"):
        return Result("hall", OK, f"{server} answered {answer.get('status')} in {answer.get('elapsed_ms')} ms "
                      "to a signed heartbeat; the answer verified")
    status, message = answer.get("status"), str(answer.get("message", answer.get("error", "")))
    if status in (401, 403):
        return Result("hall", FAIL, f"{server} refused device {config.device.id}: {message}", KEY_FIX)
    if answer.get("error") == "unauthenticated_answer" or (
            status is None and any(w in message.lower() for w in ("signature", "verif", "authentic"))):
        return Result("hall", FAIL, f"the answer from {server} did not verify: {message}",
                      "the device key differs from the hall's for this device (DeviceKey on the console), or "
                      "something else answered (a proxy or a captive portal: open the address in a browser)")
    if status is None:
        return Result("hall", FAIL, f"cannot reach the hall server: {message}",
                      "check upload.server, the network (nmcli device status; ping the server) and the "
                      "hall's firewall")
    return Result("hall", FAIL, f"{server} answered {status}: {message}", "the hall server's log says why")


def check_clock(parts: Parts) -> Result:
    """Synchronised or not, and by what (the hall dates unsynced events by their clock events)."""

    synced = (parts.clock_synced or kernel_clock_synced)()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    code, out = parts.run(["timedatectl", "show", "--property=NTP", "--value"])
    source = "no time service known"
    if code == 0:
        source = "NTP on (timedatectl)" if out.strip() == "yes" else "NTP off (timedatectl)"
        code, server = parts.run(["timedatectl", "show-timesync", "--property=ServerName", "--value"])
        if code == 0 and server.strip():
            source += f", server {server.strip()}"
    if synced:
        return Result("clock", OK, f"synchronised ({source}); now {now}")
    return Result("clock", WARN, f"not synchronised ({source}); now {now}: ratings are stamped unsynced and "
                  "dated by the hall", "sudo timedatectl set-ntp true, and let NTP (UDP 123) through to a time "
                  "server (NTP= in /etc/systemd/timesyncd.conf for the hall's own)")


def check_console(config: Config, parts: Parts) -> Result:
    """The console's port: there, openable by the service user, no kernel console or login prompt on it."""
    port = config.console.port
    if "://" in port:
        return Result("console", OK, f"{port} (a network port)")
    usb = "ttyGS" in port
    if not os.path.exists(port):
        fix = ("dtoverlay=dwc2 in config.txt and g_serial in /etc/modules-load.d (deploy/install.sh), reboot; "
               "the cable goes in the Pi's USB data port" if usb else
               "enable_uart=1 in config.txt (deploy/install.sh), reboot; or set console.port")
        return Result("console", FAIL, f"no {port}", fix)
    real = os.path.realpath(port)
    st = os.stat(real)
    if not stat.S_ISCHR(st.st_mode):
        return Result("console", FAIL, f"{port} is not a serial port",
                      "set console.port to /dev/ttyGS0 or /dev/serial0")
    if not _may(st, parts.user, 6):
        group = _group(st.st_gid)
        return Result("console", FAIL, f"{parts.user.name} may not open {port} (group {group})",
                      f"sudo usermod -aG {group} {parts.user.name}")
    names = {os.path.basename(port), os.path.basename(real)}
    try:
        with open(parts.cmdline, encoding="utf-8") as f:
            consoles = {arg.split("=", 1)[1].split(",")[0] for arg in f.read().split() if arg.startswith("console=")}
    except OSError:
        consoles = set()
    if names & consoles:
        return Result("console", FAIL, f"the kernel's console writes on {port} (console= in cmdline.txt)",
                      "remove console=serial0,115200 from /boot/firmware/cmdline.txt (deploy/install.sh does), reboot")
    getty = f"serial-getty@{os.path.basename(real)}.service"
    _code, out = parts.run(["systemctl", "is-active", getty])
    if out.strip() == "active":
        return Result("console", FAIL, f"a login prompt ({getty}) answers on {port}",
                      f"sudo systemctl mask --now {getty}")
    shown = port if real == port else f"{port} ({real})"
    return Result("console", OK, f"{shown}, {config.console.baudrate} 8N1{', the USB gadget' if usb else ''}")


def check_service(parts: Parts) -> Result | None:
    """Whether systemd runs the device (None where there is no systemctl)."""
    code, out = parts.run(["systemctl", "is-active", UNIT])
    if code == 127:
        return None
    state = out.strip() or "unknown"
    if state == "active":
        return Result("service", OK, f"{UNIT} is running")
    return Result("service", WARN, f"{UNIT} is {state}",
                  f"sudo systemctl enable --now {UNIT}; journalctl -u {UNIT} -e says why it stopped")


def run_checks(paths: list[str], overrides: list[str], parts: Parts | None = None) -> list[Result]:
    """Every check, in the order a technician would look."""
    parts = parts or Parts()
    config, settings = check_settings(paths, overrides, parts)
    service = check_service(parts)
    running = service is not None and service.status == OK
    results = [settings, check_display(config, parts), check_bus(config, parts), *check_pins(config, parts, running),
               check_font(parts),
               *check_data(config, parts), check_database(config), check_hall(config, parts), check_clock(parts),
               check_console(config, parts)]
    return results + ([service] if service is not None else [])


def main(argv: Sequence[str] | None = None, parts: Parts | None = None) -> int:
    """``evaluator doctor``: print one line per check; 1 when any failed."""
    parser = argparse.ArgumentParser(prog="evaluator doctor", description="Check each part of this device, one "
                                     "line each, and say what fixes what is wrong; exit 1 if any check fails")
    parser.add_argument("--config", action="append", default=[], metavar="PATH",
                        help=f"a TOML configuration file (default {SYSTEM_CONFIG})")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                        help="override one configuration key")
    args = parser.parse_args(argv)
    paths = args.config or ([SYSTEM_CONFIG] if os.path.exists(SYSTEM_CONFIG) else [])
    parts = parts or Parts()
    print(f"evaluator doctor: {', '.join(paths) or 'built-in defaults'}; permissions judged for {parts.user.name}")
    results = run_checks(paths, args.overrides, parts)
    for result in results:
        print(result.line())
    failed = [r.name for r in results if r.failed]
    print(f"{len(results)} checks, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}")
    sys.stdout.flush()
    return 1 if failed else 0
