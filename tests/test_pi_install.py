"""The install on Raspberry Pi OS needs no compiler, on 32-bit (armv7l) and 64-bit (aarch64), Python 3.11.

``tools/pi_install.py`` downloads the pinned wheels for each platform with
``--only-binary=:all:`` and resolves every requirement against the pins and
the Pi's own packages. It needs PyPI (about 2 s); without it the tests skip.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import pi_install  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def reachable() -> bool:
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                "--only-binary=:all:", "-d", folder, "pyserial==3.5"],
                               capture_output=True, text=True, timeout=120)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def pypi():
    if not reachable():
        pytest.skip("PyPI is not reachable from here")


@pytest.mark.parametrize("machine", ["armv7l", "aarch64"])
def test_the_pinned_install_resolves_without_building_anything(pypi, machine):
    assert pi_install.check(machine) == []


def test_a_pin_with_no_wheel_for_the_pi_is_caught(pypi, tmp_path):
    pinned = tmp_path / "requirements.txt"
    shutil.copy(pi_install.PINS, pinned)
    with pinned.open("a") as f:
        f.write("lgpio==0.2.2.0\n")        # source only on aarch64: it would need a compiler and swig
    problems = pi_install.check("aarch64", pinned)
    assert problems and "only-binary" in problems[0], problems


def test_a_requirement_nobody_provides_is_caught(pypi, tmp_path):
    pinned = tmp_path / "requirements.txt"
    pinned.write_text(pi_install.PINS.read_text().replace("tzdata==", "# tzdata=="))
    problems = pi_install.check("armv7l", pinned)
    assert any("needs tzdata" in p and "neither pinned nor a Pi package" in p for p in problems), problems


def test_the_pis_packages_cover_what_pip_must_not_build():
    compiled = {"pillow", "cryptography", "cffi", "cbor2", "lgpio", "spidev"}
    assert compiled <= set(pi_install.debian())
    assert not compiled & set(pi_install.pins())
    pillow = next(r for r in pi_install.own_requirements() if r.name == "Pillow")
    assert pillow.specifier.contains(pi_install.debian()["pillow"])
