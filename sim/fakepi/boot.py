"""What the fake Pi does as a child's interpreter starts (from ``libs/sitecustomize.py``).

- The device tree: reads of ``/proc/device-tree/...`` (gpiozero's board
  revision, the board model) go to the fake root's ``proc/device-tree``.
  Only ``open`` is redirected, and only under those prefixes.
- The control socket: :mod:`sim.fakepi.control` on the process's kernel.
"""

from __future__ import annotations

import builtins
import io
import os
from typing import Any

from sim.fakepi.control import SOCKET, serve
from sim.fakepi.kernel import kernel

DEVICE_TREE_PREFIXES = ("/proc/device-tree/", "/sys/firmware/devicetree/base/")


def install_device_tree(root: str) -> None:
    """Make ``open`` read the fake root's device tree for the Pi's paths."""
    tree = os.path.join(root, "proc", "device-tree")
    real_open = io.open

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike):
            path = os.fspath(file)
            if isinstance(path, str):
                for prefix in DEVICE_TREE_PREFIXES:
                    if path.startswith(prefix):
                        file = os.path.join(tree, path[len(prefix):])
                        break
        return real_open(file, *args, **kwargs)

    builtins.open = io.open = fake_open


def boot() -> None:
    """The device tree and the control socket of this process's fake Pi."""
    kern = kernel()
    install_device_tree(kern.root)
    serve(kern, os.path.join(kern.root, SOCKET))
