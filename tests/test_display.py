"""Display: luma's real chip drivers on a recording fake bus.

The fake bus records what the driver would send over I2C/SPI. Decoding the
recorded bytes back into panel RAM proves the frame on the glass is the
frame we rendered, bit for bit, without any hardware.
"""

import pytest
from luma.core.device import dummy
from PIL import Image

from device.drivers.display import SUPPORTED_MODELS, Display, make_panel
from device.errors import DisplayError
from device.ui import screens
from golden_util import SAMPLES

pytestmark = pytest.mark.timeout(30)


class FakeBus:
    """Records ``command``/``data`` calls as luma's serial interfaces get them."""

    def __init__(self, fail=False):
        self.log = []
        self.fail = fail

    def command(self, *cmd):
        if self.fail:
            raise OSError(121, "Remote I/O error")
        self.log.append(("command", tuple(cmd)))

    def data(self, data):
        if self.fail:
            raise OSError(121, "Remote I/O error")
        self.log.append(("data", list(data)))

    def cleanup(self):
        pass


def decode_ssd1306(log, width=128, height=64):
    """Replay COLUMNADDR/PAGEADDR + data into page-organised GDDRAM."""
    ram = [[0] * width for _ in range(height // 8)]
    cols, pages, pos = (0, width - 1), (0, height // 8 - 1), None
    for kind, payload in log:
        if kind == "command" and payload[:1] == (0x21,):
            cols, pages = payload[1:3], payload[4:6]
            assert payload[3] == 0x22
            pos = (cols[0], pages[0])
        elif kind == "data":
            col, page = pos
            for byte in payload:
                ram[page][col] = byte
                col += 1
                if col > cols[1]:
                    col, page = cols[0], page + 1
            pos = (col, page)
    image = Image.new("1", (width, height), 0)
    for page in range(height // 8):
        for x in range(width):
            for bit in range(8):
                if ram[page][x] >> bit & 1:
                    image.putpixel((x, page * 8 + bit), 255)
    return image


def decode_ssd1322(log, width=256, height=64):
    """Replay column/row windows and 4-bit pixel data into SSD1322 RAM."""
    ram = {}
    expect, cols, rows = None, (0, 0), (0, 0)
    for kind, payload in log:
        if kind == "command":
            expect = payload[0]
            if expect == 0x5C:
                x, y = cols[0] * 4, rows[0]
            continue
        if expect == 0x15:
            cols = tuple(payload)
        elif expect == 0x75:
            rows = tuple(payload)
        elif expect == 0x5C:
            for byte in payload:
                for nibble in (byte >> 4, byte & 0x0F):     # first pixel high
                    ram[x, y] = nibble
                    x += 1
                    if x > cols[1] * 4 + 3:
                        x, y = cols[0] * 4, y + 1
    offset = (480 - width) // 2
    image = Image.new("1", (width, height), 0)
    for (x, y), nibble in ram.items():
        if nibble and 0 <= x - offset < width and y < height:
            image.putpixel((x - offset, y), 255)
    return image


def same(a, b):
    return a.convert("1").tobytes() == b.convert("1").tobytes()


def test_ssd1306_bytes_on_the_bus_are_the_rendered_frame():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus), "ssd1306")
    frame = screens.render(SAMPLES["idle"], display.size)
    bus.log.clear()
    display.show(frame)
    assert same(decode_ssd1306(bus.log), frame)


def test_ssd1306_rotated_portrait_frame():
    bus = FakeBus()
    display = Display(make_panel("ssd1306", bus, rotate=1), "ssd1306")
    assert display.size == (64, 128)
    frame = screens.render(SAMPLES["idle"], display.size)
    bus.log.clear()
    display.show(frame)
    # luma turns the portrait frame a quarter clockwise onto the glass
    assert same(decode_ssd1306(bus.log), frame.rotate(-90, expand=True))


def test_ssd1322_bytes_on_the_bus_are_the_rendered_frame():
    bus = FakeBus()
    display = Display(make_panel("ssd1322", bus), "ssd1322")
    assert display.size == (256, 64)
    frame = screens.render(SAMPLES["idle_indicators"], display.size)
    display.show(frame)
    assert same(decode_ssd1322(bus.log), frame)


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
    assert bus.log == [("command", (0x81, 32)), ("command", (0xAE,)),
                       ("command", (0xAF,))]


def test_bus_errors_become_display_errors_naming_the_model():
    bus = FakeBus()
    display = Display(make_panel("sh1106", bus), "sh1106")
    bus.fail = True
    with pytest.raises(DisplayError, match="sh1106"):
        display.show(Image.new("1", display.size))
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
    assert same(device.image, frame)
