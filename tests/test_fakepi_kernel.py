"""The fake Pi's kernel is as strict as the real one (issue 17): lines the kernel's drivers or another process
hold are busy, a missing group is a permission error, an I²C address a driver owns is busy, the bus takes the
time its clock implies, ``gpio_read`` claims, and two edges of the same level in a row arrive.

In-process, on a fake root laid out by :class:`FakePi`; the second-process cases start real processes."""

import errno
import importlib.util
import os
import subprocess
import sys
import time

import pytest

from sim.fakepi.kernel import BOTH_EDGES, GPIO_BUSY, NOTIFICATION, SET_PULL_UP, Kernel
from sim.fakepi.libs.smbus2 import SMBus
from sim.fakepi.libs.spidev import SpiDev
from sim.fakepi.pi import FakePi

pytestmark = pytest.mark.timeout(60)


def kernel(tmp_path, **board):
    return Kernel(FakePi(str(tmp_path / "pi"), **board).root)


@pytest.mark.parametrize("board, busy, free", [
    ({"spi": {(0, 0): {}}, "i2c": {}}, (7, 8, 9, 10, 11), (2, 3, 14, 15, 5)),          # SPI on
    ({"spi": {}, "i2c": {1: (0x3C,)}}, (2, 3), (7, 8, 14, 15, 5)),                       # I2C on
    ({"spi": {}, "i2c": {}, "uart": True}, (14, 15), (2, 3, 7, 8, 5)),                   # the UART on
])
def test_lines_the_kernels_bus_drivers_hold_are_busy(tmp_path, board, busy, free):
    kern = kernel(tmp_path, **board)
    chip = kern.gpiochip_open(0)
    for gpio in busy:
        assert kern.claim_input(chip, gpio, SET_PULL_UP) == GPIO_BUSY, gpio
        assert kern.read(chip, gpio) == GPIO_BUSY, gpio
    for gpio in free:
        assert kern.claim_input(chip, gpio, SET_PULL_UP) == 0, gpio


def test_gpio_read_claims_a_line_nobody_holds(tmp_path):
    kern = kernel(tmp_path)
    first, second = kern.gpiochip_open(0), kern.gpiochip_open(0)
    assert kern.read(first, 17) in (0, 1)
    assert [ln["owner"] for ln in kern.lines() if ln["gpio"] == 17] == [first]
    assert kern.claim_input(second, 17, 0) == GPIO_BUSY
    assert kern.read(second, 17) == GPIO_BUSY


def test_without_the_groups_the_nodes_do_not_open(tmp_path):
    kern = kernel(tmp_path, groups=("dialout",))
    assert kern.gpiochip_open(0) < 0
    with pytest.raises(PermissionError):
        SMBus(1, kern=kern)
    with pytest.raises(PermissionError):
        SpiDev(0, 0, kern=kern)
    assert kernel(tmp_path / "ok", groups=("gpio", "i2c", "spi")).gpiochip_open(0) >= 0


def test_an_address_a_kernel_driver_owns_is_busy_unless_forced(tmp_path):
    kern = kernel(tmp_path, i2c={1: (0x3C, 0x68)}, i2c_held={1: (0x68,)})
    bus = SMBus(1, kern=kern)
    with pytest.raises(OSError) as e:
        bus.write_byte_data(0x68, 0x00, 0x01)
    assert e.value.errno == errno.EBUSY
    bus.write_byte_data(0x68, 0x00, 0x01, force=True)
    bus.write_byte_data(0x3C, 0x00, 0xAF)


@pytest.mark.parametrize("hz, frame_ms", [(100_000, 92.3), (400_000, 23.1)])
def test_the_bus_takes_the_time_its_clock_implies(tmp_path, hz, frame_ms):
    kern = kernel(tmp_path, i2c_hz=hz)
    bus = SMBus(1, kern=kern)
    started = time.monotonic()
    kern.i2c_write(1, 0x3C, bytes(1025))     # a full SSD1306 frame and its control byte
    took_ms = (time.monotonic() - started) * 1000
    (record,) = kern.records()
    wire_ms = (record.end_ns - record.start_ns) / 1e6
    assert frame_ms <= wire_ms < frame_ms * 1.5 and took_ms >= frame_ms
    bus.close()


def test_two_edges_of_the_same_level_in_a_row_reach_the_listener(tmp_path):
    kern = kernel(tmp_path)
    os.chdir(tmp_path)
    chip, pipe = kern.gpiochip_open(0), kern.notify_open()
    assert kern.claim_alert(chip, 5, BOTH_EDGES, SET_PULL_UP, pipe) == 0
    kern.drive(5, 0)
    kern.edge(5, 0)                        # a bounce shorter than the kernel saw: falling, falling
    kern.drive(5, None)
    fd = os.open(os.path.join(kern.work_dir(), f".lgd-nfy{pipe}"), os.O_RDONLY | os.O_NONBLOCK)
    data = os.read(fd, 1024)
    os.close(fd)
    levels = [NOTIFICATION.unpack_from(data, i)[3] for i in range(0, len(data), NOTIFICATION.size)]
    assert levels == [0, 0, 1]


CLAIM = """
import lgpio
h = lgpio.gpiochip_open(0)
try:
    lgpio.gpio_claim_input(h, {gpio})
    print("claimed")
except lgpio.error as e:
    print("refused:", e)
"""


def second_process(pi, gpio):
    done = subprocess.run([sys.executable, "-c", CLAIM.format(gpio=gpio)], env=pi.env(), capture_output=True,
                          text=True, timeout=30, cwd=pi.root)
    return done.stdout.strip() or done.stderr


def test_a_line_another_process_holds_is_busy_and_free_again_when_it_ends(tmp_path):
    pi = FakePi(str(tmp_path / "pi"))
    holder = subprocess.Popen([sys.executable, "-c", CLAIM.format(gpio=17) + "import time; time.sleep(30)"],
                              env=pi.env(), stdout=subprocess.PIPE, text=True, cwd=pi.root)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        assert second_process(pi, 17) == "refused: 'GPIO busy'"
        assert second_process(pi, 18) == "claimed"
    finally:
        holder.kill()
        holder.wait()
    assert second_process(pi, 17) == "claimed"      # the kernel frees a dead process's lines


RPI_LGPIO = """
import RPi.GPIO as GPIO
print(GPIO._get_gpiochip_num(), "site-packages" in GPIO.__file__)
"""


@pytest.mark.parametrize("board, chip", [
    ({}, 0),                                                                   # a Zero 2 W, a Pi 4: gpiochip0
    ({"gpiochips": (0, 4), "gpio_compatible": {4: "raspberrypi,rp1-gpio"}}, 4),  # a Pi 5's RP1
])
def test_luma_s_rpi_gpio_is_the_real_rpi_lgpio_choosing_its_chip_from_sysfs(tmp_path, board, chip):
    if importlib.util.find_spec("RPi") is None:
        pytest.skip("rpi-lgpio is installed by make setup (pip install --no-deps rpi-lgpio)")
    pi = FakePi(str(tmp_path / "pi"), **board)
    done = subprocess.run([sys.executable, "-c", RPI_LGPIO], env=pi.env(), capture_output=True, text=True,
                          timeout=30, cwd=pi.root)
    assert done.stdout.split() == [str(chip), "True"], done.stderr
