"""Build ``window-evaluator_<version>_all.deb`` from this tree with ``dpkg-deb``: installable offline.

    python deploy/deb.py [--out DIR] [--wheelhouse DIR] [--version V]

The package holds what ``deploy/install.sh`` needs and nothing to compile:

- ``/opt/window-evaluator/wheels``: the program as a wheel and the pinned
  pure-Python wheels of ``deploy/requirements-pi.txt`` (from ``--wheelhouse``
  or downloaded now): the install needs no network;
- ``/opt/window-evaluator/deploy``: ``install.sh``, ``uninstall.sh`` and
  their lists; ``config.toml`` (the template of
  ``/etc/window-evaluator/config.toml``), ``README.md``, ``VERSION``;
- ``/lib/systemd/system/window-evaluator.service``.

Its ``Depends`` are ``deploy/debian-packages.txt`` (the compiled modules
among them: python3-lgpio from Raspberry Pi OS's archive). The maintainer
scripts call the installer, so the package lays out exactly what
``install.sh`` does: ``postinst configure`` runs ``install.sh --package``
(the venv with ``--system-site-packages`` and the wheels, the user, the
polkit rule, config.txt from the configuration, the unit enabled and
restarted); ``prerm`` stops the service (an upgrade: the rating in hand is
committed first, SIGTERM); ``prerm remove`` runs ``uninstall.sh --package``;
``postrm purge`` removes the data, the configuration and the user. Settings,
the device key and every rating (``/var/lib/window-evaluator``) are never
touched by an upgrade; the new program opens the old outbox and adds what
its schema lacks. The scripts honour ``$DPKG_ROOT`` (``dpkg --root`` with
``--force-script-chrootless``), as the tests use them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = "window-evaluator"
PREFIX = Path("opt") / APP
#: Debian's names for what some packages are called on older releases.
ALTERNATIVES = {"polkitd": "polkitd | policykit-1"}

POSTINST = """#!/bin/sh
# window-evaluator: set up the venv from the package's wheels, the user, config.txt and the service.
set -e
case "$1" in
    configure)
        ROOT="${DPKG_ROOT:-}" "${DPKG_ROOT:-}/opt/window-evaluator/deploy/install.sh" --package
        ;;
esac
exit 0
"""

PRERM = """#!/bin/sh
# window-evaluator: stop the service before its files change (SIGTERM: the rating in hand is committed).
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl stop window-evaluator.service || true
fi
case "$1" in
    remove|deconfigure)
        ROOT="${DPKG_ROOT:-}" "${DPKG_ROOT:-}/opt/window-evaluator/deploy/uninstall.sh" --package
        ;;
esac
exit 0
"""

POSTRM = """#!/bin/sh
# window-evaluator: on purge only, the ratings not delivered, the settings, the key, the configuration, the user.
set -e
ROOT="${DPKG_ROOT:-}"
case "$1" in
    purge)
        rm -rf "$ROOT/var/lib/window-evaluator" "$ROOT/etc/window-evaluator"
        if grep -q "^evaluator:" "$ROOT/etc/passwd" 2>/dev/null; then
            userdel ${ROOT:+--prefix "$ROOT"} evaluator || true
        fi
        ;;
esac
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"""


def version(tree: Path = REPO) -> str:
    text = (tree / "device" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert found, "no __version__ in device/__init__.py"
    return found.group(1)


def depends(tree: Path = REPO) -> str:
    names = [line.split()[0] for line in (tree / "deploy" / "debian-packages.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return ", ".join("python3 (>= 3.11)" if n == "python3" else ALTERNATIVES.get(n, n) for n in names)


def wheels(dest: Path, wheelhouse: Path | None, tree: Path = REPO) -> None:
    """The program's wheel, built now, and the pinned wheels (from ``wheelhouse``, else downloaded)."""
    dest.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(dest), str(tree)], check=True, capture_output=True, timeout=300)
    source = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    *source, "-r", str(tree / "deploy" / "requirements-pi.txt"), "-d", str(dest)],
                   check=True, capture_output=True, timeout=300)


def build(out: Path, *, wheelhouse: Path | None = None, version_: str | None = None,
          tree: Path = REPO) -> Path:
    """Build the package into ``out``; returns its path."""
    v = version_ or version(tree)
    with tempfile.TemporaryDirectory(prefix="deb-") as folder:
        root = Path(folder) / "root"
        opt = root / PREFIX
        (opt / "deploy").mkdir(parents=True)
        for name in ("install.sh", "uninstall.sh", "common.sh"):
            shutil.copy(tree / "deploy" / name, opt / "deploy" / name)
            (opt / "deploy" / name).chmod(0o755 if name != "common.sh" else 0o644)
        for name in ("requirements-pi.txt", "debian-packages.txt", "window-evaluator.service"):
            shutil.copy(tree / "deploy" / name, opt / "deploy" / name)
        shutil.copy(tree / "config.toml", opt / "config.toml")
        shutil.copy(tree / "README.md", opt / "README.md")
        (opt / "VERSION").write_text(v + "\n")
        unit_dir = root / "lib" / "systemd" / "system"
        unit_dir.mkdir(parents=True)
        shutil.copy(tree / "deploy" / "window-evaluator.service", unit_dir / "window-evaluator.service")
        wheels(opt / "wheels", wheelhouse, tree)
        debian = root / "DEBIAN"
        debian.mkdir()
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) // 1024
        (debian / "control").write_text(
            f"Package: {APP}\nVersion: {v}\nArchitecture: all\nSection: misc\nPriority: optional\n"
            f"Maintainer: Window Evaluator <window-evaluator@localhost>\nInstalled-Size: {size}\n"
            f"Depends: {depends(tree)}\n"
            "Description: 好差评 window evaluation device (Window Evaluator)\n"
            " The device program of a window evaluation device: five rating buttons, an OLED,\n"
            " a durable outbox and a signed uplink to the hall server, with its serial console.\n"
            " Installs offline: its Python wheels are in the package.\n")
        for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
            (debian / name).write_text(text)
            (debian / name).chmod(0o755)
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{APP}_{v}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(target)],
                       check=True, capture_output=True, timeout=300)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out", help="the folder for the .deb (default: out)")
    parser.add_argument("--wheelhouse", help="take the pinned wheels from this folder (offline)")
    parser.add_argument("--version", dest="version_", help="the package's version (default: device/__init__.py's)")
    args = parser.parse_args(argv)
    path = build(Path(args.out), wheelhouse=Path(args.wheelhouse) if args.wheelhouse else None,
                 version_=args.version_)
    print(path)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
