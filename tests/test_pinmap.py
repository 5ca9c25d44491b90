"""What the configuration turns on in the firmware, the pins the kernel then holds, and the device tree read
back (device/pinmap.py, python -m device.firmware); the console refuses a button on a held pin at Set/Commit."""

import subprocess
import sys

import pytest
from test_console import Rig

from device import config as config_mod
from device import pinmap
from device.firmware import summary
from sim.fakepi.pi import FakePi


@pytest.mark.parametrize("overrides, lines, modules, held", [
    ([], ["dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000", "dtparam=spi=off", "enable_uart=0",
          "dtoverlay=dwc2"], ["i2c-dev", "dwc2", "g_serial"], [2, 3]),
    (['display.interface="spi"', 'display.model="ssd1351"'],
     ["dtparam=i2c_arm=off", "dtparam=spi=on", "enable_uart=0", "dtoverlay=dwc2"], ["dwc2", "g_serial"],
     [7, 8, 9, 10, 11]),
    (['console.port="/dev/serial0"'],
     ["dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000", "dtparam=spi=off", "enable_uart=1"], ["i2c-dev"],
     [2, 3, 14, 15]),
])
def test_the_firmware_turns_on_only_what_the_configuration_uses(overrides, lines, modules, held):
    config = config_mod.load(overrides=overrides)
    assert pinmap.firmware(config) == lines
    assert pinmap.modules(config) == modules
    assert sorted(pinmap.held(config)) == held


def test_python_m_device_firmware_prints_the_block_and_a_summary(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[display]\ninterface = "spi"\nmodel = "ssd1322"\n[console]\nport = "/dev/serial0"\n'
                      f'settings_path = "{tmp_path / "settings.toml"}"\n')
    # The technician's committed settings count: here the panel went back to I2C over the console.
    (tmp_path / "settings.toml").write_text('[display]\ninterface = "i2c"\nmodel = "ssd1306"\n')
    run = [sys.executable, "-m", "device.firmware"]
    out = subprocess.run([*run, "config-txt", "--config", str(config)], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout.split()
    assert out == ["dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000", "dtparam=spi=off", "enable_uart=1"]
    assert summary(config_mod.load([config])) == "turned on: SPI0, the UART; GPIO the kernel holds: " \
                                                 "7, 8, 9, 10, 11, 14, 15"
    bad = tmp_path / "bad.toml"
    bad.write_text('[display]\nmodel = "nope"\n')
    done = subprocess.run([*run, "summary", "--config", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "display.model" in done.stderr


def test_the_device_tree_says_what_is_on_and_how_fast_i2c_runs(tmp_path):
    tree = FakePi(str(tmp_path / "pi"), spi={(0, 0): {}}, i2c_hz=100_000).root + "/proc/device-tree"
    assert pinmap.i2c_hz(1, tree) == 100_000
    assert pinmap.enabled("i2c1", tree) is True and pinmap.enabled("spi0", tree) is True
    assert pinmap.enabled("serial0", tree) is False
    assert pinmap.i2c_hz(1, str(tmp_path / "no-tree")) is None and pinmap.enabled("spi0", str(tmp_path)) is None


@pytest.mark.parametrize("extra, command, key, says", [
    (['display.interface="spi"', 'display.model="ssd1351"'], "Set buttons.pins [7, 8, 13, 19, 26]",
     "buttons.pins", "pin 7 is SPI0 CE1"),
    (['console.port="/dev/serial0"'], "Set buttons.pins [5, 6, 13, 14, 26]", "buttons.pins", "pin 14 is UART TXD"),
])
def test_the_console_refuses_a_button_on_a_pin_the_kernel_holds(tmp_path, extra, command, key, says):
    rig = Rig(tmp_path, extra=extra)
    try:
        answer = rig.ask(command)
        if answer["ok"]:                            # staged: the whole is checked at Commit
            answer = rig.ask("Commit")
            assert answer["ok"] is False and answer["error"] == "invalid_config"
            assert any(p["key"] == key and says in p["message"] for p in answer["problems"]), answer
        else:
            assert answer["error"] == "invalid_value" and key in answer["message"] and says in answer["message"]
        assert rig.device.applied == []
    finally:
        rig.close()
