# Set-up and runs for Window Evaluator. `make demo` and `make test` work on a
# fresh Debian (or Raspberry Pi OS) machine: they install what is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FONT := /usr/share/fonts/X11/misc/wenquanyi_9pt.pcf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup demo sim test lint bench soak soak-crash gallery clean

setup: $(STAMP) $(FONT)

# WenQuanYi Bitmap Song: the crisp CJK bitmap font (PCF, 12 and 16 px).
$(FONT):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y xfonts-wqy

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

# Power-cut soak: the simulator SIGKILLed during a press storm (CYCLES=200).
soak soak-crash: setup
	$(PY) tools/soak_crash.py --cycles $(or $(CYCLES),200)

# Every screen at every resolution as PNG, in out/gallery.
gallery: setup
	$(PY) -m sim.gallery out/gallery

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
