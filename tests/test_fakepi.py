"""The production program on the fake Pi: a press on a GPIO line becomes a rating at the hall and a thank-you
on the panel, read back from the bytes on the bus.

Each test starts ``python -m device`` (the ``evaluator`` entry point, not the
simulator) in a child process whose path begins with ``sim/fakepi/libs``:
gpiozero's real lgpio pin factory and luma's real i2c/spi classes run over
fake ``lgpio``, ``smbus2``, ``spidev`` and ``RPi.GPIO``.

Which combinations run end to end: every model × interface × rotation is
decoded in-process in ``test_display.py`` (luma's real bus classes over the
fake kernel, cheap). Here the default run takes :data:`REPRESENTATIVE`: each
model once, both interfaces, every rotation, one child each (about a second
apiece); ``-m slow`` (``make fakepi-matrix``) runs all 40 combinations.
"""

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from test_fakepi_kernel import second_process

from device import config as config_mod
from device.config import DISPLAY_MODELS, SPI_ONLY_MODELS
from device.drivers.pins import open_pin_factory, prepare_lgpio_workdir
from device.errors import ConfigError, DisplayError, PinLibraryError
from device.ui.models import ThanksScreen
from device.ui.screens import render
from sim.fakepi.panels import on_glass, same_picture
from sim.fakepi.pi import FakePi

KEY = "fakepi-test-key"
PINS = (5, 6, 13, 19, 26)
ROTATIONS = (0, 90, 180, 270)

pytestmark = pytest.mark.timeout(120)

#: Each model once, both interfaces, every rotation.
REPRESENTATIVE = [
    ("ssd1306", "i2c", 0),
    ("sh1106", "spi", 90),
    ("ssd1309", "i2c", 180),
    ("ssd1327", "i2c", 270),
    ("ssd1322", "spi", 180),
    ("ssd1351", "spi", 90),
]


def all_combinations():
    return [(m, i, r) for m in sorted(DISPLAY_MODELS) for i in ("i2c", "spi")
            if not (i == "i2c" and m in SPI_ONLY_MODELS) for r in ROTATIONS]


class Device:
    """The program on a fake Pi, with its configuration in a folder of its own."""

    def __init__(self, tmp_path, hall, *, model="ssd1306", interface="i2c", rotate=0, level="INFO",
                 cwd=None, env=None, pi=None, args=()):
        self.folder = tmp_path / "device"
        self.folder.mkdir(exist_ok=True)
        data = self.folder / "data"
        key = self.folder / "device.key"
        key.write_text(KEY)
        hall.set_key("WE-0001", KEY)
        self.model, self.interface, self.rotate = model, interface, rotate
        config: dict[str, dict[str, Any]] = {
            "device": {"id": "WE-0001"},
            "session": {"source": "free", "min_interval_s": 0, "thanks_s": 60},
            "display": {"model": model, "interface": interface, "rotate": rotate, "shift_every_s": 1e9},
            "upload": {"server": hall.url, "key_file": str(key), "backoff_min_s": 0.1, "backoff_max_s": 0.5},
            "outbox": {"path": str(data / "outbox.db")},
            "console": {"port": str(self.folder / "no-console"), "settings_path": str(data / "settings.toml")},
            "log": {"level": level},
        }
        self.config_path = self.folder / "evaluator.toml"
        self.config_path.write_text("\n".join(
            f"[{section}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
            for section, values in config.items()) + "\n")
        self.pi = pi or FakePi()
        self.child = self.pi.start(["--config", str(self.config_path), *args], cwd=str(cwd or self.folder),
                                   env=env, log_path=str(tmp_path / "device.log"))

    def panel(self):
        if self.interface == "i2c":
            return self.pi.panel(self.model, bus="i2c", port=1, target=0x3C)
        return self.pi.panel(self.model, bus="spi", port=0, target=0)

    def size(self):
        w, h = DISPLAY_MODELS[self.model]
        return (h, w) if self.rotate in (90, 270) else (w, h)

    def close(self):
        self.pi.close(graceful=False)     # a clean stop is not what these tests are about; it takes a second


@pytest.fixture
def device(tmp_path, hall):
    made = []

    def make(**kwargs):
        d = Device(tmp_path, hall, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def ratings(hall, count=1, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in hall.events("WE-0001") if e["type"] == "rating"]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def press_and_see_thanks(d, hall, gpio=PINS[0], ms=80):
    d.child.wait_for(r"screen: idle")
    mark = len(d.child.log())
    d.pi.press(gpio, ms)
    d.child.wait_for(r"screen: thanks", after=mark)
    thanks = render(ThanksScreen(), d.size())
    assert same_picture(d.panel().lit(), on_glass(thanks, d.rotate)), \
        f"the {d.model} ({d.interface}, {d.rotate}°) does not show the thank-you screen"
    got = ratings(hall)
    assert [e["level"] for e in got] == ["very_satisfied"], d.child.log()[-2000:]


@pytest.mark.parametrize("model, interface, rotate", REPRESENTATIVE)
def test_a_press_on_a_gpio_line_is_a_rating_at_the_hall_and_a_thank_you_on_the_glass(
        device, hall, model, interface, rotate):
    d = device(model=model, interface=interface, rotate=rotate)
    press_and_see_thanks(d, hall)
    lines = {ln["gpio"]: ln for ln in d.pi.lines()}
    for pin in PINS:       # gpiozero's buttons: inputs, pulled up, alerts on both edges
        assert lines[pin]["flags"] & 32 and lines[pin]["edges"] == 3 and not lines[pin]["output"]
    if interface == "spi":  # luma's DC and RST through RPi.GPIO: outputs, out of reset
        assert lines[24]["output"] and lines[25]["output"] and lines[25]["level"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("model, interface, rotate", all_combinations())
def test_every_model_interface_and_rotation_end_to_end(device, hall, model, interface, rotate):
    press_and_see_thanks(device(model=model, interface=interface, rotate=rotate), hall)


def test_noise_on_the_lines_is_counted_and_never_rated(device, hall):
    d = device(level="DEBUG")
    d.child.wait_for(r"screen: idle")
    d.pi.wave(PINS[0], [(0, 200), (None, 100_000)])                 # a 200 us spike on button 1
    for _burst in range(2):                                          # two 5 ms chatter bursts on button 2
        d.pi.wave(PINS[1], [(0, 500), (None, 500)] * 5 + [(None, 100_000)])
    d.child.wait_for(r"button 2 \(GPIO6\): noise.* 2 noise pulses")
    d.child.wait_for(r"button 1 \(GPIO5\): noise, not a press: closed 0\.\d ms.* 1 noise pulses")
    assert ratings(hall, timeout=0.5) == []
    mark = len(d.child.log())
    d.pi.press(PINS[2], ms=60)                                       # a real 60 ms press on button 3
    d.child.wait_for(r"screen: thanks", after=mark)
    assert [e["level"] for e in ratings(hall)] == ["basically_satisfied"]


def test_the_device_tree_tells_the_board(tmp_path):
    pi = FakePi()
    try:
        code = ("import gpiozero; gpiozero.Device.ensure_pin_factory(); "
                "print(open('/proc/device-tree/model').read().rstrip('\\0')); "
                "print(gpiozero.Device.pin_factory.board_info.model)")
        result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=pi.env(),
                                capture_output=True, text=True, timeout=60)
    finally:
        pi.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["Raspberry Pi Zero 2 W Rev 1.0", "Zero2W"]


def unwritable_folder(tmp_path):
    """A working directory that takes no pipe, as ``/`` for the service's user (root may write anywhere)."""
    if os.geteuid() == 0:
        return "/proc"
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


def test_the_fake_lgpio_fails_like_the_real_one_where_it_cannot_make_its_pipe(tmp_path):
    pi = FakePi()
    try:
        result = subprocess.run([sys.executable, "-c", "import lgpio"], cwd=unwritable_folder(tmp_path),
                                env=pi.env(), capture_output=True, text=True, timeout=60)
    finally:
        pi.close()
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr and ".lgd-nfy" in result.stderr


def test_an_unwritable_working_directory_still_gets_buttons(device, hall, tmp_path):
    cwd = unwritable_folder(tmp_path)
    runtime = tmp_path / "run"
    runtime.mkdir()
    pi = FakePi()
    env = pi.env()
    env["RUNTIME_DIRECTORY"] = str(runtime)          # what systemd's RuntimeDirectory= sets
    d = device(cwd=cwd, env=env, pi=pi)
    d.child.wait_for(r"takes no lgpio pipe; LG_WD=" + str(runtime))
    press_and_see_thanks(d, hall)
    assert d.pi.control()("notify_dir")["dir"] == str(runtime)
    assert any(name.startswith(".lgd-nfy") for name in os.listdir(runtime))


@pytest.mark.parametrize("pin_factory, expected", [
    # Asked for lgpio by name: it cannot open the chip.
    ("lgpio", r"gpiozero could load none: GPIOZERO_PIN_FACTORY=lgpio: error: 'can not open gpiochip'"),
    # gpiozero's own choice: lgpio fails, and so does RPi.GPIO (the real rpi-lgpio opens the chip in setmode).
    (None, r"gpiozero could load none: Falling back from lgpio: 'can not open gpiochip'; "
           r"Falling back from rpigpio: 'can not open gpiochip'"),
])
def test_no_pin_library_is_a_clear_fault_and_a_recovery_start(device, hall, pin_factory, expected):
    pi = FakePi(gpiochips=())                        # no /dev/gpiochip0: lgpio cannot open the chip
    d = device(pi=pi, env=pi.env(pin_factory=pin_factory))
    found = d.child.wait_for(r"recovery: the console answers; faults: pins: (.*)")
    assert re.search(expected, found.group(1)), found.group(1)
    assert "Traceback" not in d.child.log()
    time.sleep(0.3)
    assert d.child.proc.poll() is None               # the console stays up


# --- configurations that cannot work are errors naming the key ------------------------------------


@pytest.mark.parametrize("overrides, key, says", [
    (['display.model="ssd1351"'], "display.interface", "no I2C interface"),
    (['display.model="ssd1322"'], "display.interface", "no I2C interface"),
    (["buttons.pins=[2, 6, 13, 19, 26]"], "buttons.pins", "pin 2 is I2C1 SDA"),
    (["buttons.pins=[5, 3, 13, 19, 26]"], "buttons.pins", "pin 3 is I2C1 SCL"),
    (['display.interface="spi"', "buttons.pins=[5, 6, 13, 19, 11]"], "buttons.pins", "pin 11 is SPI0 SCLK"),
    (['display.interface="spi"', "buttons.pins=[7, 6, 13, 19, 26]"], "buttons.pins", "pin 7 is SPI0 CE1"),
    (['display.interface="spi"', 'session.source="staff_button"', "buttons.staff_pin=9"], "buttons.staff_pin",
     "pin 9 is SPI0 MISO"),
    (['display.interface="spi"', "display.gpio_dc=10"], "display.gpio_dc", "SPI0 MOSI"),
    (['display.interface="spi"', 'session.source="staff_button"', "buttons.staff_pin=25"], "display.gpio_rst",
     "pin 25 is also the staff key"),
    (['console.port="/dev/serial0"', "buttons.pins=[14, 6, 13, 19, 26]"], "buttons.pins", "pin 14 is UART TXD"),
    (['console.port="/dev/ttyAMA0"', 'session.source="staff_button"', "buttons.staff_pin=15"],
     "buttons.staff_pin", "UART RXD"),
])
def test_unsupported_combinations_are_configuration_errors_naming_the_key(overrides, key, says):
    with pytest.raises(ConfigError) as e:
        config_mod.load(overrides=overrides)
    assert any(k == key and says in message for k, message in e.value.problems), e.value.problems


@pytest.mark.parametrize("overrides", [
    [],
    ['display.interface="spi"', 'display.model="ssd1351"'],
    ["buttons.pins=[14, 6, 13, 19, 26]"],                          # the UART is free: the console is on USB
    ['display.interface="spi"', "buttons.pins=[2, 3, 13, 19, 26]"],  # I2C is free: the panel is on SPI
    ['session.source="free"', "buttons.staff_pin=2"],               # no staff key in use
])
def test_pins_free_in_this_configuration_are_accepted(overrides):
    config_mod.load(overrides=overrides)


def test_evaluator_check_names_the_key_of_an_unsupported_combination(tmp_path):
    config = tmp_path / "evaluator.toml"
    config.write_text('[display]\nmodel = "ssd1351"\ninterface = "i2c"\n'
                      f'[console]\nsettings_path = "{tmp_path / "settings.toml"}"\n')
    result = subprocess.run([sys.executable, "-m", "device", "--config", str(config), "--check"],
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2
    assert "display.interface: the ssd1351 has no I2C interface" in result.stderr


# --- the fixes at the hardware boundary, in-process --------------------------------------------


def test_spi_without_a_gpio_module_says_what_to_install():
    from device.hardware import open_panel

    config = config_mod.load(overrides=['display.interface="spi"', 'display.model="ssd1351"'])
    try:
        import RPi.GPIO  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("RPi.GPIO is installed here")
    with pytest.raises(DisplayError, match=r"spi bus for the ssd1351.*RPi.*install rpi-lgpio"):
        open_panel(config)


def test_no_pin_library_raises_one_error_naming_it(monkeypatch):
    from gpiozero import Device as GpioDevice

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "lgpio")
    monkeypatch.setattr(GpioDevice, "pin_factory", None)
    with pytest.raises(PinLibraryError, match=r"GPIOZERO_PIN_FACTORY=lgpio: .*lgpio") as e:
        open_pin_factory()
    assert isinstance(e.value, ImportError)


def test_lgpio_gets_a_working_directory_that_takes_its_pipes(monkeypatch, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.delenv("LG_WD", raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    monkeypatch.chdir(tmp_path)
    assert prepare_lgpio_workdir() is None and "LG_WD" not in os.environ   # a writable one stays
    monkeypatch.chdir(unwritable_folder(tmp_path))
    assert prepare_lgpio_workdir() == str(runtime) and os.environ["LG_WD"] == str(runtime)
    monkeypatch.setenv("LG_WD", "/somewhere")
    assert prepare_lgpio_workdir() is None                                 # the service's own choice stays


# --- as strict as the real kernel (issue 17) ----------------------------------------------------------

def test_a_second_process_cannot_claim_a_button_line_the_service_holds(device, hall):
    d = device()
    d.child.wait_for(r"screen: idle")
    for gpio, says in ((PINS[0], "refused: 'GPIO busy'"), (PINS[4], "refused: 'GPIO busy'"), (17, "claimed")):
        assert second_process(d.pi, gpio) == says
    # Two edges of the same level in a row (a bounce the kernel saw only half of) are still one rating.
    mark = len(d.child.log())
    d.pi.edge(PINS[0], 0)
    d.pi.press(PINS[0], ms=80)
    d.child.wait_for(r"screen: thanks", after=mark)
    assert [e["level"] for e in ratings(hall)] == ["very_satisfied"]
    time.sleep(0.3)
    assert len(ratings(hall, timeout=0)) == 1


def test_a_service_user_without_the_gpio_group_gets_a_clear_fault(device, hall):
    pi = FakePi(groups=("i2c", "spi", "dialout", "netdev"))
    d = device(pi=pi)
    found = d.child.wait_for(r"recovery: the console answers; faults: pins: (.*)")
    assert "can not open gpiochip" in found.group(1)
    assert "the service's user needs the gpio group" in found.group(1)
    assert d.child.proc.poll() is None


@pytest.mark.parametrize("overrides, key, says", [
    (['display.interface="spi"', 'display.model="ssd1351"', "buttons.pins=[7, 8, 13, 19, 26]"], "buttons.pins",
     "pin 7 is SPI0 CE1"),
    (['console.port="/dev/serial0"', "buttons.pins=[5, 6, 13, 14, 15]"], "buttons.pins", "pin 14 is UART TXD"),
])
def test_evaluator_check_refuses_buttons_on_pins_the_kernel_holds(tmp_path, overrides, key, says):
    config = tmp_path / "evaluator.toml"
    config.write_text(f'[console]\nsettings_path = "{tmp_path / "settings.toml"}"\n')
    args = [a for o in overrides for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "device", "--config", str(config), *args, "--check"],
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2 and f"{key}: {says}" in result.stderr, result.stderr


def press_to_visible_ms(d, hall, gpio=PINS[0]):
    """Finger down on the button → the last byte of the thank-you frame on the wire, in ms (on the child's clock)."""
    d.child.wait_for(r"screen: idle")
    time.sleep(0.3)
    since = len(d.pi.records())
    down = time.monotonic_ns()
    mark = len(d.child.log())
    d.pi.press(gpio, ms=80)
    d.child.wait_for(r"screen: thanks", after=mark)
    time.sleep(0.3)
    frame = [r for r in d.pi.records(since) if r.start_ns >= down]
    assert frame
    return (max(r.end_ns for r in frame) - down) / 1e6


def test_press_to_visible_on_the_fake_pi_at_100_and_400_khz(device, hall):
    at = {hz: press_to_visible_ms(device(pi=FakePi(i2c_hz=hz, spi={})), hall) for hz in (100_000, 400_000)}
    # The thank-you frame is about a full SSD1306 frame: 92 ms on the wire at 100 kHz, 23 ms at 400 kHz.
    assert at[100_000] - at[400_000] > 40, at
