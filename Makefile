# Set-up and runs for Window Evaluator. `make demo` and `make test` work on a
# fresh Debian (or Raspberry Pi OS) machine: they install what is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FONT := /usr/share/fonts/X11/misc/wenquanyi_9pt.pcf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo sim test lint bench soak soak-crash gallery clean fakepi-matrix damage access-slow

TMUX := /usr/bin/tmux

ESPEAK := /usr/bin/espeak-ng

setup: $(STAMP) $(FONT) $(TMUX) $(ESPEAK)

# WenQuanYi Bitmap Song: the crisp CJK bitmap font (PCF, 12 and 16 px).
$(FONT):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y xfonts-wqy

# tmux: tests/test_terminal.py runs the interactive demo in it at 80x24 and 120x40 and reads the screen.
$(TMUX):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y tmux

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
	touch $@

# With a terminal: the interactive simulator. Without one: the built-in scenario.
demo: setup
	@if [ -t 0 ] && [ -t 1 ]; then $(PY) -m sim; else $(PY) -m sim --demo; fi

sim: setup
	$(PY) -m sim $(ARGS)

# The linter and the type checker first: code that fails them does not land.
test: setup lint
	$(PY) -m pytest -q

# The linter and the type checker (ruff.toml, mypy.ini); part of `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/bench_render.py
	$(PY) bench/bench_outbox.py
	$(PY) bench/bench_uplink.py
	$(PY) bench/bench_device.py
	$(PY) bench/bench_voice.py
	$(PY) bench/bench_bus.py

# Voice, beep and LED: the slow checks (the LED's slow blink on the fake Pi while the hall is away).
access-slow: setup
	$(PY) -m pytest -q -m slow tests/test_access_fakepi.py

# The production program on the fake Pi for every display model x interface x rotation (40 child processes).
fakepi-matrix: setup
	$(PY) -m pytest -q -m slow tests/test_fakepi.py

# The damage matrix, a line per case: damaged storage (lost WAL, flipped page, truncated file, poison row),
# a true ENOSPC (a loop-mounted ext4 when run as root), a moved outbox, FactoryReset, bad values,
# and 50 commits with the device key killed at random (tests/test_damage.py runs the same cases, 6 kills).
damage: setup
	$(PY) tools/damage.py

# Power-cut soak: the simulator SIGKILLed during a press storm (CYCLES=200).
soak soak-crash: setup
	$(PY) tools/soak_crash.py --cycles $(or $(CYCLES),200)

# Every screen at every resolution as PNG, in out/gallery.
gallery: setup
	$(PY) -m sim.gallery out/gallery

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
