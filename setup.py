import re
from pathlib import Path

from setuptools import find_packages, setup

# One version everywhere: the package, --version, the boot screen and the heartbeat read device/__init__.py.
VERSION = re.search(r'^__version__ = "([^"]+)"', Path(__file__).with_name("device").joinpath("__init__.py")
                    .read_text(encoding="utf-8"), re.M).group(1)

setup(
    name="window-evaluator",
    version=VERSION,
    description="Window Evaluator: the software of a 好差评 window evaluation device",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["device", "device.*", "sim", "sim.*", "provision", "provision.*", "hall",
                                    "hall.*"]),
    include_package_data=True,
    package_data={"hall": ["holidays.toml"]},
    install_requires=[
        "gpiozero>=2.0",
        "luma.oled>=3.13",
        "luma.core>=2.4",
        "Pillow>=9.4",  # Debian 12's python3-pil on the Pi (deploy/debian-packages.txt)
        "qrcode>=7.4",
        # RFC 9421 HTTP Message Signatures both ways on the uplink (contract v2); brings cryptography.
        "http-message-signatures>=3.0",
        # The device's own Ed25519 key pair (device/keys.py), used directly as well as through the above.
        "cryptography>=38",  # Bookworm ships 38.0.4 (python3-cryptography); Ed25519 is there since 2.6
        "pyserial>=3.5",
        "uuid6>=2024.1.12",
        # The stand-in hall's working days (statutory holidays, 调休) and China time where the OS has no tz data.
        "chinese-calendar>=1.11",
        "tzdata",
    ],
    extras_require={
        # Pin libraries gpiozero picks on a Pi; never needed to import or test elsewhere.
        "pi": [
            "lgpio>=0.2; platform_machine=='aarch64' or platform_machine=='armv7l'",
            "smbus2>=0.4; sys_platform=='linux'",
            "spidev>=3.6; sys_platform=='linux'",
            # RPi.GPIO's API over lgpio: luma's spi() drives the panel's DC and RST through it.
            "rpi-lgpio>=0.6; platform_machine=='aarch64' or platform_machine=='armv7l'",
        ],
        "test": [
            "pytest>=8",
            # The reference the outbox's schema is checked against (tests/test_memory.py): the device runs the
            # same SQL through sqlite3, without sqlite-utils' CLI stack (click, pluggy, dateutil: 3.7 MB resident).
            "sqlite-utils>=3.35",
            "pytest-timeout>=2.2",
            "requests>=2.31",  # the hall server's tests speak HTTP to it as any client would
            "hypothesis>=6.100",
            "zxing-cpp>=2.2",
            "selenium>=4.20",  # tests/test_phone_browser.py drives Debian's chromium through chromium-driver
            "ruff>=0.6",
            "mypy>=1.10",
            "types-requests",
            "types-pyserial",
            "types-qrcode",
            "packaging",  # tools/pi_install.py resolves the Pi's pinned wheels
        ],
        "bench": [
            "persist-queue>=1.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "evaluator = device.cli:main",
            "evaluator-sim = sim.cli:main",
            "evaluator-provision = provision.cli:main",
            "evaluator-verify = device.integrity:main",
        ],
    },
)
