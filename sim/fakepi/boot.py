"""What the fake Pi does as a child's interpreter starts (from ``libs/sitecustomize.py``).

- The device tree and sysfs: reads of ``/proc/device-tree/...`` (gpiozero's
  board revision, the board model, the buses' status and the I²C clock) and
  listings and reads under ``/sys/bus/gpio/devices`` (where rpi-lgpio picks
  its chip) go to the fake root. Only ``open``, ``os.scandir`` and
  ``os.stat`` are redirected, and only under those prefixes.
- The control socket: :mod:`sim.fakepi.control` on the process's kernel,
  unless another process on the same fake root serves it already (a second
  process on the same Pi: the doctor while the service runs).
"""

from __future__ import annotations

import builtins
import io
import os
import socket
from typing import Any

from sim.fakepi.control import SOCKET, serve
from sim.fakepi.kernel import kernel

#: Where each redirected prefix lives under the fake root.
REDIRECTS = {
    "/proc/device-tree/": os.path.join("proc", "device-tree", ""),
    "/sys/firmware/devicetree/base/": os.path.join("proc", "device-tree", ""),
    "/sys/bus/gpio/devices": os.path.join("sys", "bus", "gpio", "devices"),
}


def redirect(root: str, path: str) -> str:
    """``path`` under the fake root, when it is one of the redirected prefixes."""
    for prefix, inside in REDIRECTS.items():
        if path.startswith(prefix):
            return os.path.join(root, inside + path[len(prefix):])
    return path


def install_device_tree(root: str) -> None:
    """Make ``open`` and ``os.scandir`` read the fake root's device tree and sysfs for the Pi's paths."""
    real_open = io.open
    real_scandir = os.scandir
    real_stat = os.stat

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike):
            path = os.fspath(file)
            if isinstance(path, str):
                file = redirect(root, path)
        return real_open(file, *args, **kwargs)

    def fake_scandir(path: Any = ".") -> Any:
        if isinstance(path, str | os.PathLike):
            name = os.fspath(path)
            if isinstance(name, str):
                return real_scandir(redirect(root, name))
        return real_scandir(path)

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, str | os.PathLike):
            name = os.fspath(path)
            if isinstance(name, str):
                path = redirect(root, name)
        return real_stat(path, *args, **kwargs)

    builtins.open = io.open = fake_open
    os.scandir = fake_scandir
    os.stat = fake_stat


def _served(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def boot() -> None:
    """The device tree, sysfs and the control socket of this process's fake Pi."""
    kern = kernel()
    install_device_tree(kern.root)
    path = os.path.join(kern.root, SOCKET)
    if not _served(path):
        serve(kern, path)
