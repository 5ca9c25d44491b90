"""``python -m device.firmware``: what the installer writes for the firmware and the kernel, from the configuration.

    python -m device.firmware config-txt --config /etc/window-evaluator/config.toml [--root DIR]
    python -m device.firmware modules --config ...
    python -m device.firmware summary --config ...

``config-txt`` prints the lines of the installer's block in ``config.txt``
(:func:`device.pinmap.firmware`: only what the configured panel and console
use, I²C at 400 kHz), ``modules`` the kernel modules to load at boot, and
``summary`` one line saying what is on and which pins the kernel holds. The
technician's committed settings (``console.settings_path``, under ``--root``)
count as they do when the device starts; they are read, never changed.
A configuration that does not load prints the error and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from device import config as config_mod
from device import pinmap
from device.errors import ConfigError


def load(paths: Sequence[str], root: str = "") -> config_mod.Config:
    """The configuration as the device would start with it: the files, then the committed settings."""
    config = config_mod.load(paths)
    overlay = Path(root + config.console.settings_path) if root else Path(config.console.settings_path)
    try:
        layer = tomllib.loads(overlay.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return config
    try:
        return config_mod.load(paths, layers=[layer])
    except ConfigError:
        return config      # settings that cannot start: the device falls back too


def summary(config: config_mod.Config) -> str:
    on = pinmap.buses(config)
    parts = []
    if on.i2c is not None:
        parts.append(f"I2C{on.i2c} at {pinmap.I2C_FAST_HZ // 1000} kHz")
    if on.spi is not None:
        parts.append(f"SPI{on.spi}")
    if on.uart:
        parts.append("the UART")
    if on.gadget:
        parts.append("the USB serial gadget")
    held = ", ".join(f"{pin}" for pin in sorted(pinmap.held(config)))
    return f"turned on: {', '.join(parts) or 'nothing'}; GPIO the kernel holds: {held or 'none'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.firmware", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("config-txt", "modules", "summary"))
    parser.add_argument("--config", action="append", default=[], metavar="PATH")
    parser.add_argument("--root", default="", help="a prefix for the committed settings' path (image builds)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, args.root.rstrip("/"))
    except ConfigError as e:
        print(f"device.firmware: {e}", file=sys.stderr)
        return 2
    if args.what == "config-txt":
        lines = pinmap.firmware(config)
    elif args.what == "modules":
        lines = pinmap.modules(config)
    else:
        lines = [summary(config)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
