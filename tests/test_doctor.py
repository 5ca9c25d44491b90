"""``evaluator doctor``: one line per part, a fix for each failure, exit 1 if any failed.

A healthy simulated setup (a panel that answers on a fake I²C bus, MockFactory
pins, the stand-in hall server on loopback, a pty as the console) passes;
then each part a technician gets wrong is broken in turn, and the line that
fails must carry the hint that fixes it.
"""

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from device import doctor
from device.doctor import FAIL, HEADER_PIN, OK, WARN, Parts, User
from device.errors import PinLibraryError
from device.queue.outbox import Outbox
from helpers import rating
from sim.fakepi.kernel import Kernel
from sim.fakepi.libs.smbus2 import SMBus
from sim.fakepi.pi import FakePi
from sim.pty_port import PtyPort

KEY = "doctor-test-key"

pytestmark = pytest.mark.timeout(60)


class FakeI2C:
    """An I²C bus with devices at ``answering`` addresses (smbus2's write_quick, as i2cdetect probes)."""

    def __init__(self, answering=(0x3C,)):
        self.answering = set(answering)
        self.closed = False

    def write_quick(self, address):
        if address not in self.answering:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")

    def close(self):
        self.closed = True


def fake_run(service="active", ntp="yes", getty="inactive"):
    answers = {
        ("timedatectl", "show"): (0, ntp + "\n"),
        ("timedatectl", "show-timesync"): (0, "ntp.hall.example\n"),
        ("systemctl", "is-active", "window-evaluator.service"): (0 if service == "active" else 3, service + "\n"),
    }

    def run(command):
        if command[:2] == ["systemctl", "is-active"] and command[2].startswith("serial-getty@"):
            return (0 if getty == "active" else 3), getty + "\n"
        for prefix, answer in answers.items():
            if tuple(command[:len(prefix)]) == prefix:
                return answer
        return 127, ""
    return run


class Setup:
    """A healthy device on this machine: its files, its hall server, its console pty."""

    def __init__(self, tmp_path: Path, hall):
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.data.mkdir(mode=0o700)
        self.key_file = self.data / "device.key"
        self.key_file.write_text(KEY)
        self.key_file.chmod(0o600)
        hall.set_key("WE-0001", KEY)
        self.port = PtyPort()
        self.cmdline = tmp_path / "cmdline"
        self.cmdline.write_text("console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait\n")
        self.config = tmp_path / "config.toml"
        self.write_config(server=hall.url)
        self.factory = MockFactory()
        # The device tree of a Pi as the installer leaves it for an I2C panel: I2C1 on at 400 kHz, nothing else.
        self.tree = FakePi(str(tmp_path / "pi"), spi={}).root + "/proc/device-tree"
        self.parts = Parts(open_i2c=lambda port: FakeI2C(), pin_factory=lambda: self.factory, run=fake_run(),
                           clock_synced=lambda: True, cmdline=str(self.cmdline),
                           unit_path=str(tmp_path / "no-unit-here.service"), device_tree=self.tree)

    def write_config(self, **upload):
        u = {"server": "", **upload}
        self.config.write_text(
            f'[upload]\nserver = "{u["server"]}"\nkey_file = "{self.key_file}"\n'
            f'[outbox]\npath = "{self.data / "outbox.db"}"\n'
            f'[console]\nport = "{self.port.path}"\nsettings_path = "{self.data / "settings.toml"}"\n')

    def check(self, capsys):
        code = doctor.main(["--config", str(self.config)], self.parts)
        lines = capsys.readouterr().out.splitlines()
        return code, lines

    def close(self):
        self.port.close()
        self.factory.reset()


@pytest.fixture
def setup(tmp_path, hall):
    s = Setup(tmp_path, hall)
    yield s
    s.close()


def line(lines, name):
    """The line of check ``name``: ``(status, the rest)``."""
    for text in lines:
        if text[6:15].strip() == name:
            return text[:4].strip(), text[16:]
    raise AssertionError(f"no {name!r} line in {lines}")


def test_a_healthy_device_passes_every_check(setup, capsys):
    box = Outbox(setup.data / "outbox.db")
    box.append(rating(1, device_id="WE-0001"))
    box.append(rating(2, device_id="WE-0001"))
    box.close()
    code, lines = setup.check(capsys)
    assert code == 0, "\n".join(lines)
    names = ["settings", "display", "bus", "pins", *(f"button {n}" for n in range(1, 6)), "staff key", "font", "data",
             "database", "hall", "clock", "console", "service"]
    body = lines[1:-1]
    assert [text[6:15].strip() for text in body] == names
    for text in body:
        assert text.startswith(OK), text
        assert "->" not in text                      # ok lines carry no fix
    assert "a device answers at 0x3C on /dev/i2c-1" in line(body, "display")[1]
    assert "GPIO 5 (header pin 29): open, pulled up" in body[4]
    assert line(body, "bus")[1] == "I2C1 at 400 kHz (a full ssd1306 frame: 23 ms on the wire)"
    assert "ok, 2 events, seq 1..2" in line(body, "database")[1]
    assert "answer verified" in line(body, "hall")[1]
    assert "ntp.hall.example" in line(body, "clock")[1]
    assert lines[-1] == f"{len(names)} checks, 0 failed"


def test_no_panel_at_the_address(setup, capsys):
    setup.parts.open_i2c = lambda port: FakeI2C(answering=(0x3D,))
    code, lines = setup.check(capsys)
    status, text = line(lines, "display")
    assert code == 1 and status == FAIL
    assert "nothing answers at 0x3C on /dev/i2c-1" in text
    assert "i2cdetect -y 1" in text and "SDA to pin 3" in text and "display.i2c_address" in text
    assert lines[-1].endswith("1 failed: display")


def test_i2c_turned_off_or_not_permitted(setup, capsys):
    def missing(port):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    setup.parts.open_i2c = missing
    assert "dtparam=i2c_arm=on" in line(setup.check(capsys)[1], "display")[1]

    def denied(port):
        raise PermissionError(errno.EACCES, "Permission denied")

    setup.parts.open_i2c = denied
    assert "usermod -aG i2c evaluator" in line(setup.check(capsys)[1], "display")[1]


def test_no_pin_library(setup, capsys):
    def none():
        raise PinLibraryError("gpiozero could load none: Falling back from lgpio: No module named 'lgpio'")

    setup.parts.pin_factory = none
    code, lines = setup.check(capsys)
    status, text = line(lines, "pins")
    assert code == 1 and status == FAIL
    assert "No module named 'lgpio'" in text and "apt-get install python3-lgpio" in text


class GroundedPin(MockPin):
    """A pin wired straight to ground: it reads low whatever its pull."""

    def _set_pull(self, value):
        super()._set_pull(value)
        self._change_state(False)


def test_a_stuck_button_is_a_warning_naming_its_header_pin(setup, capsys):
    grounded = MockFactory(pin_class=GroundedPin)
    setup.parts.pin_factory = lambda: grounded
    try:
        code, lines = setup.check(capsys)
    finally:
        grounded.reset()
    status, text = line(lines, "button 3")
    assert code == 0 and status == WARN
    assert "GPIO 13 (header pin 33): reads closed" in text and "wired to ground" in text


def test_missing_font(setup, capsys, tmp_path):
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    setup.parts.font_dir = str(empty)
    code, lines = setup.check(capsys)
    status, text = line(lines, "font")
    assert code == 1 and status == FAIL
    assert "apt-get install xfonts-wqy" in text


def test_the_bus_speed_read_from_the_device_tree_and_buses_left_on(setup, capsys, tmp_path):
    slow = FakePi(str(tmp_path / "slow"), spi={(0, 0): {}}, uart=True, i2c_hz=100_000)
    setup.parts.device_tree = slow.root + "/proc/device-tree"
    _, lines = setup.check(capsys)
    status, text = line(lines, "bus")
    assert status == WARN
    assert text.startswith("I2C1 at 100 kHz (a full ssd1306 frame: 92 ms on the wire): the panel budget needs "
                           "400 kHz; also on, unused: SPI0 (GPIO 7, 8, 9, 10, 11 held by the kernel), "
                           "the UART (GPIO 14, 15 held by the kernel)")
    assert "dtparam=i2c_arm_baudrate=400000" in text


def test_a_panel_address_a_kernel_driver_holds(setup, capsys, tmp_path):
    pi = FakePi(str(tmp_path / "held"), i2c_held={1: (0x3C,)})     # say an overlay's driver bound 0x3C
    setup.parts.open_i2c = lambda port: SMBus(port, kern=Kernel(pi.root))
    _, lines = setup.check(capsys)
    status, text = line(lines, "display")
    assert status == FAIL and "0x3C on /dev/i2c-1 is held by a kernel driver" in text and "UU" in text


def test_unwritable_data_directory(setup, capsys):
    # Root may write anywhere; the service user may not: permissions are judged for it.
    setup.parts.user = User("evaluator", 4242, frozenset({4242}))
    code, lines = setup.check(capsys)
    status, text = line(lines, "data")
    assert code == 1 and status == FAIL
    assert f"{setup.data} is not writable for evaluator" in text
    assert f"sudo chown -R evaluator: {setup.data}" in text


def test_data_outside_the_services_sandbox_and_a_key_others_can_read(setup, capsys):
    unit = setup.tmp / "window-evaluator.service"
    unit.write_text("[Service]\n")
    setup.parts.unit_path = str(unit)
    setup.key_file.chmod(0o644)
    code, lines = setup.check(capsys)
    data = [t for t in lines if t[6:15].strip() == "data"]
    assert code == 1 and all(t.startswith(FAIL) for t in data)
    assert "ProtectSystem=strict" in data[0] and "ReadWritePaths" in data[0]
    assert "can be read by others" in data[1] and f"chmod 600 {setup.key_file}" in data[1]


def test_wrong_key(setup, capsys, hall):
    hall.set_key("WE-0001", "the-hall-has-another-key")
    code, lines = setup.check(capsys)
    status, text = line(lines, "hall")
    assert code == 1 and status == FAIL
    assert "DeviceKey" in text


def test_no_key_at_all(setup, capsys):
    setup.key_file.unlink()
    status, text = line(setup.check(capsys)[1], "hall")
    assert status == FAIL and "no device key" in text and "DeviceKey" in text


def test_unreachable_server(setup, capsys, hall):
    url = hall.url
    hall.close()
    setup.write_config(server=url)
    code, lines = setup.check(capsys)
    status, text = line(lines, "hall")
    assert code == 1 and status == FAIL
    assert "cannot reach the hall server" in text and "upload.server" in text and "firewall" in text


def test_clock_not_synchronised_is_a_warning(setup, capsys):
    setup.parts.clock_synced = lambda: False
    setup.parts.run = fake_run(ntp="no")
    code, lines = setup.check(capsys)
    status, text = line(lines, "clock")
    assert code == 0 and status == WARN
    assert "not synchronised (NTP off" in text and "timedatectl set-ntp true" in text


def test_console_port_taken_by_the_kernel_or_a_login_prompt_or_missing(setup, capsys):
    name = os.path.basename(setup.port.path)
    setup.cmdline.write_text(f"console={name},115200 console=tty1 rootwait\n")
    assert "remove console=serial0,115200" in line(setup.check(capsys)[1], "console")[1]
    setup.cmdline.write_text("console=tty1\n")
    setup.parts.run = fake_run(getty="active")
    assert f"systemctl mask --now serial-getty@{name}.service" in line(setup.check(capsys)[1], "console")[1]
    config = setup.config.read_text().replace(setup.port.path, "/dev/ttyGS0-not-here")
    setup.config.write_text(config)
    assert "dtoverlay=dwc2" in line(setup.check(capsys)[1], "console")[1]


def test_settings_that_cannot_start_name_the_key(setup, capsys):
    (setup.data / "settings.toml").write_text('[display]\nmodel = "ssd9999"\n')
    status, text = line(setup.check(capsys)[1], "settings")
    assert status == FAIL and "display.model" in text and "Commit" in text


def test_a_stopped_service_is_a_warning_and_pins_are_left_to_a_running_one(setup, capsys):
    setup.parts.run = fake_run(service="inactive")
    status, text = line(setup.check(capsys)[1], "service")
    assert status == WARN and "journalctl -u window-evaluator.service" in text

    # The running service holds the pins: busy is expected then.
    class Busy(MockFactory):
        def pin(self, name, pin_class=None, **kwargs):
            raise OSError("GPIO busy")

    busy = Busy()
    try:
        setup.parts.pin_factory = lambda: busy
        setup.parts.run = fake_run(service="active")
        code, lines = setup.check(capsys)
        assert code == 0
        assert "held by the running service" in next(t for t in lines if "GPIO 5 " in t)
    finally:
        busy.reset()


def test_the_evaluator_command_runs_the_doctor(setup, capsys, monkeypatch):
    from device import cli

    monkeypatch.setattr(doctor, "Parts", lambda: setup.parts)
    code = cli.main(["doctor", "--config", str(setup.config)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("evaluator doctor:") and "0 failed" in out


def test_results_are_one_line_each(setup, capsys):
    setup.parts.open_i2c = lambda port: FakeI2C(answering=())
    _, lines = setup.check(capsys)
    assert all("\n" not in t for t in lines)
    assert json.dumps(lines)   # plain text, nothing binary
    assert stat.S_ISCHR(os.stat(setup.port.path).st_mode)


# --- on D1's fake Pi: the production entry point, the real lgpio factory and smbus2 over fake kernels ---

def doctor_on_a_fake_pi(tmp_path, hall, **board):
    folder = tmp_path / "pi"
    folder.mkdir(parents=True)
    key = folder / "device.key"
    key.write_text(KEY)
    key.chmod(0o600)
    hall.set_key("WE-0001", KEY)
    data = folder / "data"
    data.mkdir(mode=0o700)
    config = folder / "evaluator.toml"
    config.write_text(f'[upload]\nserver = "{hall.url}"\nkey_file = "{key}"\n[outbox]\npath = "{data / "outbox.db"}"\n'
                      f'[console]\nport = "{folder / "no-console"}"\nsettings_path = "{data / "settings.toml"}"\n')
    pi = FakePi(**board)
    try:
        child = pi.start(["doctor", "--config", str(config)], cwd=str(folder), log_path=str(tmp_path / "doctor.log"))
        code = child.proc.wait(60)
        return code, child.log().splitlines()
    finally:
        pi.close()


def test_on_the_fake_pi_the_panel_and_every_pin_pass_and_a_missing_panel_fails(tmp_path, hall):
    code, lines = doctor_on_a_fake_pi(tmp_path / "one", hall)
    assert line(lines, "display") == (OK, "ssd1306: a device answers at 0x3C on /dev/i2c-1")
    assert line(lines, "pins") == (OK, "pin library LGPIOFactory")
    # The default fake Pi has SPI on too, as the installer before issue 17 left every Pi.
    assert line(lines, "bus") == (WARN, "I2C1 at 400 kHz (a full ssd1306 frame: 23 ms on the wire); also on, "
                                        "unused: SPI0 (GPIO 7, 8, 9, 10, 11 held by the kernel) -> "
                                        "sudo deploy/install.sh (or reinstall the package) sets config.txt from "
                                        "the configuration, then reboot")
    for n, pin in enumerate((5, 6, 13, 19, 26), start=1):
        assert line(lines, f"button {n}") == (OK, f"GPIO {pin} (header pin {HEADER_PIN[pin]}): open, pulled up")
    assert line(lines, "hall")[0] == OK and line(lines, "settings")[0] == OK
    # Only the console (no port here) fails on this machine.
    assert lines[-1].endswith("1 failed: console"), lines
    assert code == 1

    code, lines = doctor_on_a_fake_pi(tmp_path / "two", hall, i2c={1: ()})
    status, text = line(lines, "display")
    assert status == FAIL and "nothing answers at 0x3C on /dev/i2c-1" in text and "i2cdetect -y 1" in text
