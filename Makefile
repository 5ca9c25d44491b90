# Set-up and runs for Window Evaluator. `make demo` and `make test` work on a
# fresh Debian (or Raspberry Pi OS) machine: they install what is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FONT := /usr/share/fonts/X11/misc/wenquanyi_9pt.pcf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: help setup demo sim test lint bench soak soak-crash gallery clean fakepi-matrix damage provision-hall syscalls pi-install-check deb deb-test bench-hall test-phone access-slow

# `make help` lists every target with the comment on its line (## ...).
help: ## This list
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+( [a-zA-Z_-]+)*:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

TMUX := /usr/bin/tmux
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

ESPEAK := /usr/bin/espeak-ng
# strace, systemd-analyze and libseccomp's Python binding: tests/test_syscalls.py checks the unit's filter.
PI_TOOLS := /usr/bin/strace /usr/bin/systemd-analyze /usr/share/doc/python3-seccomp

setup: $(STAMP) $(FONT) $(TMUX) $(CHROMIUM) $(CHROMEDRIVER) $(PI_TOOLS) $(ESPEAK) ## Install what is missing: Debian packages, the venv with the Python packages

# WenQuanYi Bitmap Song: the crisp CJK bitmap font (PCF, 12 and 16 px).
$(FONT):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y xfonts-wqy

# tmux: tests/test_terminal.py runs the interactive demo in it at 80x24 and 120x40 and reads the screen.
$(TMUX):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y tmux

# Headless Chromium prints the hall's monthly 通报 to PDF (hall/tongbao.py) with the WenQuanYi Zen Hei
# font; tests/test_hall_tongbao.py renders its pages with pdftoppm (poppler-utils) to compare with golden pages;
# chromedriver: tests/test_phone_browser.py drives it through Selenium (make test-phone). One install for both.
$(CHROMIUM) $(CHROMEDRIVER) &:
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium chromium-driver poppler-utils fonts-wqy-zenhei

# tests/test_syscalls.py: the unit's SystemCallFilter expanded (systemd-analyze), against the calls made (strace)
# and enforced by the kernel (seccomp, through the system python3's binding) while the device takes a rating.
$(PI_TOOLS):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends strace systemd python3-seccomp

# espeak-ng renders the voice prompts (Mandarin, offline); sox measures them in the tests;
# alsa-utils' aplay plays them (docs/accessibility.md).
$(ESPEAK):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y espeak-ng sox alsa-utils

$(STAMP): setup.py
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv python3-pip; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	# rpi-lgpio (pure Python, RPi.GPIO over lgpio, as on Bookworm): the fake Pi runs luma's RPi.GPIO through it.
	# --no-deps: its lgpio is the fake Pi's here (lgpio has no wheel for this machine).
	$(PY) -m pip install --quiet --no-deps rpi-lgpio==0.6
	touch $@

# With a terminal: the interactive simulator. Without one: the built-in scenario.
demo: setup ## The simulated device end to end (interactive in a terminal, the built-in scenario otherwise)
	@if [ -t 0 ] && [ -t 1 ]; then $(PY) -m sim; else $(PY) -m sim --demo; fi

sim: setup ## The simulator with ARGS (make sim ARGS='--help')
	$(PY) -m sim $(ARGS)

# The linter and the type checker first: code that fails them does not land.
test: setup lint ## Lint, type-check, then every test of the default run (what CI runs)
	$(PY) -m pytest -q

# The linter and the type checker (ruff.toml, mypy.ini); part of `make test`.
lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup ## Every budget of DESIGN.md as ratios measured in one run
	$(PY) bench/bench_render.py
	$(PY) bench/bench_outbox.py
	$(PY) bench/bench_uplink.py
	$(PY) bench/bench_device.py
	$(PY) bench/bench_voice.py
	$(PY) bench/bench_bus.py

# The hall back end under a hall's load: 50 devices posting while 300 long polls are held.
bench-hall: setup ## The hall back end under load: 50 devices posting while 300 long polls are held
	$(PY) bench/bench_hall.py

# The phone page in headless Chromium, fed by the simulator's QR codes (~15 s; kept out of the default run).
test-phone: setup ## The phone page and SMS in a real browser (headless Chromium, Selenium)
	$(PY) -m pytest -q -m slow tests/test_phone_browser.py

# Voice, beep and LED: the slow checks (the LED's slow blink on the fake Pi while the hall is away).
access-slow: setup ## Voice, beep and LED: the slow checks on the fake Pi
	$(PY) -m pytest -q -m slow tests/test_access_fakepi.py

# The production program on the fake Pi for every display model x interface x rotation (40 child processes).
fakepi-matrix: setup ## The production program on the fake Pi: every panel x interface x rotation
	$(PY) -m pytest -q -m slow tests/test_fakepi.py

# The unit's SystemCallFilter against every call the doctor and the device make on the fake Pi (strace -f).
syscalls: setup ## The unit's syscall filter against every call the doctor and the device make (strace)
	$(PY) -m pytest -q -m slow tests/test_syscalls.py

# The install on Raspberry Pi OS resolves for armv7l and aarch64 (Python 3.11) with no source build (needs PyPI).
pi-install-check: setup ## The Pi install resolves for armv7l and aarch64 with no source build (needs PyPI)
	$(PY) tools/pi_install.py

# The package: out/window-evaluator_<version>_all.deb, installable offline (its wheels inside).
deb: setup ## Build the .deb (with its wheelhouse) in out/
	$(PY) deploy/deb.py --out out

# The package installed into a throwaway root (dpkg --root), upgraded from the previous version with ratings
# pending, removed and purged; the program in the root's venv runs on the fake Pi. This machine's Debian
# packages stand in for the Pi's compiled modules (python3-lgpio excepted: the fake Pi's lgpio stands in).
deb-test: setup ## The .deb installed, upgraded with ratings pending, removed and purged in a throwaway root
	$(SUDO) apt-get install -y --no-install-recommends python3-venv python3-pil python3-cryptography \
	  python3-cbor2 python3-spidev python3-cffi-backend
	$(PY) -m pytest -q -m slow tests/test_deb.py

# The damage matrix, a line per case: damaged storage (lost WAL, flipped page, truncated file, poison row),
# a true ENOSPC (a loop-mounted ext4 when run as root), a moved outbox, FactoryReset, bad values,
# and 50 commits with the device key killed at random (tests/test_damage.py runs the same cases, 6 kills).
damage: setup ## The storage damage matrix, a line per case
	$(PY) tools/damage.py

# A hall's batch end to end: five simulators provisioned from one CSV in next-device mode, then rating (~15 s).
provision-hall: setup ## Five simulated devices provisioned from one CSV, their keys imported by the hall
	$(PY) -m pytest -q -m slow tests/test_provision_hall.py

# Power-cut soak: the simulator SIGKILLed during a press storm (CYCLES=200).
soak soak-crash: setup ## Power-cut soak: the simulator killed during a press storm (CYCLES=200)
	$(PY) tools/soak_crash.py --cycles $(or $(CYCLES),200)

# Every screen at every resolution as PNG, in out/gallery.
gallery: setup ## Every screen at every resolution as PNG in out/gallery
	$(PY) -m sim.gallery out/gallery

clean: ## Remove the venv and caches
	rm -rf $(VENV) *.egg-info .pytest_cache
