"""Display: luma's real chip drivers (and ours) on recording buses, decoded back into panel RAM.

The bytes a driver sends are replayed into a model of the panel's controller
(``sim.fakepi.panels``): the picture on the glass must be the frame we
rendered, bit for bit, for every supported model, interface and rotation.
"""

from typing import Any

import pytest
from luma.core.device import dummy
from luma.core.interface.serial import i2c, spi
from PIL import Image, ImageDraw

from device.config import DISPLAY_MODELS, SPI_ONLY_MODELS
from device.drivers.display import SUPPORTED_MODELS, Display, luma_rotation, make_panel
from device.drivers.paged import page_bytes
from device.errors import DisplayError
from device.ui import screens
from device.ui.models import PromptScreen, ThanksScreen
from golden_util import SAMPLES
from sim.fakepi.kernel import Kernel
from sim.fakepi.libs.smbus2 import SMBus
from sim.fakepi.libs.spidev import SpiDev
from sim.fakepi.panels import PANELS, decode, on_glass, same_picture
from sim.fakepi.pi import FakePi

pytestmark = pytest.mark.timeout(60)

ROTATIONS = (0, 90, 180, 270)
PAGED = ("ssd1306", "sh1106", "ssd1309")


class FakeBus:
    """Records ``command``/``data`` calls as luma's serial interfaces get them."""

    def __init__(self, fail=False):
        self.log = []
        self.fail = fail

    def command(self, *cmd):
        if self.fail:
            raise OSError(121, "Remote I/O error")
        self.log.append(("command", bytes(cmd)))

    def data(self, data):
        if self.fail:
            raise OSError(121, "Remote I/O error")
        self.log.append(("data", bytes(data)))

    def cleanup(self):
        pass

    def data_bytes(self):
        return sum(len(payload) for kind, payload in self.log if kind == "data")


def replay(model, log, panel=None):
    panel = panel or PANELS[model]()
    for kind, payload in log:
        (panel.data if kind == "data" else panel.command)(payload)
    return panel


def test_ssd1306_bytes_on_the_bus_are_the_rendered_frame():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus), "ssd1306")
    frame = screens.render(SAMPLES["idle"], display.size)
    display.show(frame)
    assert same_picture(replay("ssd1306", bus.log).glass(), frame)


def test_rotation_is_in_degrees_and_turns_the_frame_clockwise_onto_the_glass():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus, rotate=90), "ssd1306")
    assert display.size == (64, 128)
    frame = screens.render(SAMPLES["idle"], display.size)
    display.show(frame)
    assert same_picture(replay("ssd1306", bus.log).glass(), frame.rotate(-90, expand=True))
    assert [luma_rotation(d) for d in ROTATIONS] == [0, 1, 2, 3]
    with pytest.raises(DisplayError, match=r"display\.rotate.*degrees"):
        make_panel("ssd1306", FakeBus(), rotate=1)


def test_ssd1322_bytes_on_the_bus_are_the_rendered_frame():
    bus = FakeBus()
    display = Display(make_panel("ssd1322", bus), "ssd1322")
    assert display.size == (256, 64)
    frame = screens.render(SAMPLES["idle_indicators"], display.size)
    display.show(frame)
    assert same_picture(replay("ssd1322", bus.log).lit(), frame)


@pytest.mark.parametrize("model", sorted(SUPPORTED_MODELS))
def test_every_model_takes_a_frame_of_its_size(model):
    bus = FakeBus()
    display = Display(make_panel(model, bus), model)
    assert display.size == SUPPORTED_MODELS[model]
    before = len(bus.log)
    display.show(screens.render(SAMPLES["later"], display.size))
    assert len(bus.log) > before


def test_contrast_sleep_wake_commands():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus), "ssd1306")
    bus.log.clear()
    display.contrast(32)
    display.sleep()
    display.wake()
    assert bus.log == [("command", bytes([0x81, 32])), ("command", bytes([0xAE])), ("command", bytes([0xAF]))]


def test_bus_errors_become_display_errors_naming_the_model():
    bus = FakeBus()
    display = Display(make_panel("sh1106", bus), "sh1106")
    bus.fail = True
    with pytest.raises(DisplayError, match="sh1106"):
        display.show(screens.render(SAMPLES["thanks"], display.size))
    with pytest.raises(DisplayError, match="sh1106"):
        display.sleep()
    with pytest.raises(DisplayError, match=r"ssd1309.*initialise"):
        make_panel("ssd1309", FakeBus(fail=True))


def test_bad_model_missing_bus_wrong_size():
    with pytest.raises(DisplayError, match="supported"):
        make_panel("ili9341", FakeBus())
    with pytest.raises(DisplayError, match="no bus"):
        make_panel("ssd1306", None)
    display = Display(make_panel("ssd1306", FakeBus()), "ssd1306")
    with pytest.raises(DisplayError, match="128x128"):
        display.show(Image.new("1", (128, 128)))


@pytest.mark.parametrize("mode", ["1", "RGB"])
def test_dummy_device_keeps_the_frame(mode):
    device = dummy(width=128, height=64, mode=mode)
    display = Display(device)
    frame = screens.render(SAMPLES["thanks"], display.size)
    display.show(frame)
    assert same_picture(device.image, frame)


# --- only what changed, on the page-organised chips ---------------------------------------------


def test_page_bytes_are_the_controllers_layout():
    image = Image.new("1", (128, 64))
    image.putpixel((3, 9), 1)
    image.putpixel((127, 63), 1)
    pages = page_bytes(image)
    assert len(pages) == 8 and all(len(p) == 128 for p in pages)
    assert pages[1][3] == 0b10 and pages[7][127] == 0x80 and sum(map(sum, pages)) == 0x82


@pytest.mark.parametrize("rotate", ROTATIONS)
@pytest.mark.parametrize("model", PAGED)
def test_a_countdown_tick_sends_a_small_window_and_the_panel_shows_every_frame(model, rotate):
    bus = FakeBus()
    display = Display(make_panel(model, bus, rotate=rotate), model)
    panel = replay(model, bus.log)
    full = 128 * 64 // 8
    frames = [SAMPLES["idle"], PromptScreen("3", "张三丰", 28, "A023"), PromptScreen("3", "张三丰", 27, "A023"),
              ThanksScreen(), SAMPLES["idle"]]
    sent = []
    for model_shown in frames:
        bus.log.clear()
        frame = screens.render(model_shown, display.size)
        display.show(frame)
        replay(model, bus.log, panel)
        assert same_picture(panel.glass(), on_glass(frame, rotate)), model_shown
        sent.append(bus.data_bytes())
    tick = sent[2]
    assert 0 < tick <= full // 10, f"a countdown tick sent {tick} data bytes"
    assert max(sent) <= full


def test_after_a_failed_frame_the_next_goes_out_whole():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus), "ssd1306")
    display.show(screens.render(SAMPLES["idle"], display.size))
    panel = replay("ssd1306", bus.log)
    bus.fail = True
    with pytest.raises(DisplayError):
        display.show(screens.render(ThanksScreen(), display.size))
    bus.fail = False
    bus.log.clear()
    frame = screens.render(ThanksScreen(), display.size)
    display.show(frame)
    assert bus.data_bytes() == 1024
    assert same_picture(replay("ssd1306", bus.log, panel).glass(), frame)


def test_scattered_changes_on_an_ssd1306_share_windows_only_when_cheaper():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus), "ssd1306")
    blank = Image.new("1", display.size)
    display.show(blank)
    panel = replay("ssd1306", bus.log)
    frame = blank.copy()
    draw = ImageDraw.Draw(frame)
    draw.point([(0, 0), (127, 63)], fill=1)    # two far corners: two small windows, not the whole frame
    bus.log.clear()
    display.show(frame)
    replay("ssd1306", bus.log, panel)
    assert same_picture(panel.glass(), frame)
    assert bus.data_bytes() == 2
    assert [payload[0] for kind, payload in bus.log if kind == "command"] == [0x21, 0x21]


# --- luma's real I2C and SPI classes over the fake Pi's kernel, every supported combination -------


class KernelGPIO:
    """RPi.GPIO's calls that luma's ``spi`` makes, on a fake kernel's lines."""

    OUT, LOW, HIGH = 0, 0, 1

    def __init__(self, kern):
        self.kernel = kern
        self.chip = kern.gpiochip_open(0)

    def setup(self, pin, mode, initial=None):
        assert self.kernel.claim_output(self.chip, pin, 0, 0) == 0

    def output(self, pin, value):
        assert self.kernel.write(self.chip, pin, value) == 0

    def cleanup(self, pins=None):
        for pin in pins or ():
            self.kernel.free(self.chip, pin)


def combinations():
    for model in sorted(DISPLAY_MODELS):
        for interface in ("i2c", "spi"):
            if interface == "i2c" and model in SPI_ONLY_MODELS:
                continue
            for rotate in ROTATIONS:
                yield model, interface, rotate


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return FakePi(str(tmp_path_factory.mktemp("fakepi"))).root


@pytest.fixture
def fake_kernel(fake_root):
    """A freshly booted kernel: no line claimed, nothing on the buses yet."""
    return Kernel(fake_root)


@pytest.mark.parametrize("model, interface, rotate", list(combinations()))
def test_every_model_interface_and_rotation_shows_the_thank_you_screen(fake_kernel, model, interface, rotate):
    if interface == "i2c":
        bus: i2c | spi = i2c(bus=SMBus(1, kern=fake_kernel), address=0x3C)
        where: dict[str, Any] = dict(bus="i2c", port=1, target=0x3C)
    else:
        bus = spi(spi=SpiDev(kern=fake_kernel), gpio=KernelGPIO(fake_kernel), port=0, device=0,
                  gpio_DC=24, gpio_RST=25)
        where = dict(bus="spi", port=0, target=0)
    display = Display(make_panel(model, bus, rotate=rotate), model)
    try:
        display.show(screens.render(SAMPLES["idle"], display.size))
        frame = screens.render(ThanksScreen(), display.size)
        display.show(frame)
        panel = decode(model, fake_kernel.records(), **where)
        assert same_picture(panel.lit(), on_glass(frame, rotate))
    finally:
        bus.cleanup()


def test_rgb565_packs_as_luma_does():
    import random

    from device.drivers.rgb565 import rgb565

    rng = random.Random(12)
    image = Image.new("RGB", (16, 9))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16 * 9)])
    luma = bytearray()
    for r, g, b in image.convert("RGB").getdata():  # type: ignore[attr-defined]      # luma.oled's color_device, "65K format 1"
        luma += bytes([r & 0xF8 | g >> 5, g << 3 & 0xE0 | b >> 3])
    assert rgb565(image) == bytes(luma)


def test_the_bus_budget_bench_runs():
    import os
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench", "bench_bus.py")
    result = subprocess.run([sys.executable, bench, "--quick"], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "press→visible" in result.stdout and "ssd1351" in result.stdout
