"""Run a command under a unit's ``SystemCallFilter``, enforced by the kernel (seccomp), as systemd would.

    /usr/bin/python3 tools/under_filter.py deploy/window-evaluator.service -- python -m device ...

The allowed set is :func:`syscalls.allowed` of the unit (its own filter,
expanded by ``systemd-analyze``); every other call fails with EPERM
(``SystemCallErrorNumber=EPERM``). The filter is loaded, then the command is
exec'd: it and its children run under it. Needs libseccomp's Python binding
(Debian's ``python3-seccomp``, for the system's python3) and
``systemd-analyze``; systemd itself need not run.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seccomp  # Debian's python3-seccomp
import syscalls


def load(unit_text: str) -> int:
    """Load the unit's filter into this process; returns how many calls it allows (those this machine knows)."""
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    allowed = 0
    for name in sorted(syscalls.allowed(unit_text)):
        try:
            f.add_rule(seccomp.ALLOW, name)
            allowed += 1
        except (RuntimeError, ValueError, OSError):
            pass            # not a call of this architecture (systemd lists every architecture's names)
    f.load()
    return allowed


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    load(Path(argv[0]).read_text())
    os.execvp(argv[2], argv[2:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
