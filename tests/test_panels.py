"""One record per panel model (issue 15, item 3): a model registered in a test is accepted by the
configuration, sized by the supervisor, driven by the display driver and decoded by the fake Pi, without
editing config.py, drivers/display.py, supervisor.py or sim/fakepi/panels.py."""

import pytest
from luma.core.interface.serial import i2c

from device import config as config_mod
from device import panels
from device.drivers.display import Display, make_panel
from device.errors import ConfigError
from device.supervisor import configured_size
from device.ui import screens
from device.ui.models import ThanksScreen
from sim.fakepi.kernel import Kernel
from sim.fakepi.libs.smbus2 import SMBus
from sim.fakepi.panels import decode, on_glass, same_picture
from sim.fakepi.pi import FakePi

pytestmark = pytest.mark.timeout(60)

#: A 128x32 panel on the SSD1306 controller: a sixth-and-a-half model.
FAKE = panels.PanelModel("test128x32", (128, 32), "1", ("i2c",), "device.drivers.paged:SSD1306", "ssd1306")


@pytest.fixture
def fake_panel():
    panels.register(FAKE)
    yield FAKE
    panels.unregister(FAKE.name)


def test_a_registered_model_is_accepted_by_the_configuration_and_sized_by_the_supervisor(fake_panel):
    config = config_mod.load(overrides=[f'display.model="{fake_panel.name}"', "display.rotate=90"])
    assert (config.display.width, config.display.height) == (128, 32)
    assert configured_size(config) == (32, 128)
    assert config_mod.DISPLAY_MODELS[fake_panel.name] == (128, 32)


def test_a_registered_models_interfaces_are_what_the_configuration_allows(fake_panel):
    with pytest.raises(ConfigError) as e:
        config_mod.load(overrides=[f'display.model="{fake_panel.name}"', 'display.interface="spi"'])
    assert ("display.interface", f'the {fake_panel.name} has no SPI interface: wire it to I2C and set '
                                 'display.interface = "i2c"') in e.value.problems


def test_a_registered_model_is_driven_and_the_fake_pi_decodes_it_through_its_record(fake_panel, tmp_path):
    kern = Kernel(FakePi(str(tmp_path)).root)
    bus = i2c(bus=SMBus(1, kern=kern), address=0x3C)
    display = Display(make_panel(fake_panel.name, bus), fake_panel.name)
    try:
        assert display.size == (128, 32)
        frame = screens.render(ThanksScreen(), display.size)
        display.show(frame)
        panel = decode(fake_panel.name, kern.records(), bus="i2c", port=1, target=0x3C)
        assert (panel.width, panel.height) == (128, 32)
        assert same_picture(panel.lit(), on_glass(frame, 0))
    finally:
        bus.cleanup()


def test_an_unknown_model_is_refused_and_a_bad_record_is_refused_at_registration():
    with pytest.raises(ConfigError):
        config_mod.load(overrides=['display.model="ssd9999"'])
    with pytest.raises(ValueError, match="colour"):
        panels.PanelModel("x", (8, 8), "cmyk", ("i2c",), "m:C", "ssd1306")
    with pytest.raises(ValueError, match="interfaces"):
        panels.PanelModel("x", (8, 8), "1", ("usb",), "m:C", "ssd1306")


def test_every_supported_model_is_one_record_that_every_table_reads():
    assert sorted(panels.models()) == ["sh1106", "ssd1306", "ssd1309", "ssd1322", "ssd1327", "ssd1351"]
    assert config_mod.SPI_ONLY_MODELS == ("ssd1322", "ssd1351")
    assert {name: m.bits_per_pixel for name, m in panels.models().items()}["ssd1351"] == 16
