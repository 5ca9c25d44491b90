"""Which system calls the unit's ``SystemCallFilter`` allows, and which a traced run made that it denies.

The allowed set is derived from the unit itself: every ``SystemCallFilter=``
line, in order, with each ``@group`` expanded by ``systemd-analyze
syscall-filter`` (the same tables systemd applies). As systemd reads them:
when the first line allows (no ``~``), the set starts empty, later allowing
lines add to it and denying lines (``~``) take from it.

The calls made come from ``strace -f`` (children included, as seccomp
filters are inherited). A call the filter denies fails with
``SystemCallErrorNumber`` (EPERM in the shipped unit): no crash, but the
device quietly does without, as it did for ``clock_adjtime``, so that it
never saw its clock synchronised.

    python tools/syscalls.py deploy/window-evaluator.service -- python -m device doctor

prints each denied call made, and exits 1 when there is one.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

#: A line of strace's output: ``[pid] name(`` (also ``<... name resumed>``).
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:<\.\.\.\s+)?([a-z_][a-z0-9_]*)(?:\(|\s+resumed>)")


@functools.cache
def group(name: str) -> frozenset[str]:
    """The system calls of ``@name`` (nested groups expanded), as this machine's systemd knows them."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def expand(item: str) -> frozenset[str]:
    return group(item) if item.startswith("@") else frozenset({item})


def filter_lines(unit_text: str) -> list[str]:
    """The values of the unit's ``SystemCallFilter=`` lines, in order."""
    return [line.partition("=")[2].strip() for line in unit_text.splitlines()
            if line.strip().startswith("SystemCallFilter=")]


def allowed(unit_text: str) -> frozenset[str]:
    """The system calls the unit's filter allows (an allow-list unit; a deny-only unit is not supported)."""
    lines = filter_lines(unit_text)
    if not lines or lines[0].startswith("~"):
        raise ValueError("the unit's first SystemCallFilter= must be an allow-list")
    calls: set[str] = set()
    for value in lines:
        deny = value.startswith("~")
        items = value.lstrip("~").split()
        for item in items:
            if deny:
                calls -= expand(item)
            else:
                calls |= expand(item)
    return frozenset(calls)


def traced(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
           timeout: float = 120.0, until: float | None = None) -> tuple[set[str], str]:
    """Run ``command`` under ``strace -f``; the names of the system calls made, and the program's output.

    Args:
        until: stop the program (SIGTERM, as systemd does) after this many seconds; None: wait for it.
    """
    with tempfile.TemporaryDirectory(prefix="strace-") as folder:
        trace = os.path.join(folder, "trace")
        proc = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, *command], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=until if until is not None else timeout)
        except subprocess.TimeoutExpired:
            if until is None:
                proc.kill()
                raise
            proc.terminate()
            out, _ = proc.communicate(timeout=timeout)
        calls = calls_in(Path(trace).read_text(errors="replace"))
    return calls, out.decode(errors="replace")


def calls_in(trace: str) -> set[str]:
    """The names of the system calls in ``strace -f`` output."""
    return {m.group(1) for line in trace.splitlines() if (m := _CALL.match(line))}


def denied(unit_text: str, calls: set[str]) -> set[str]:
    """The calls made that the unit's filter denies."""
    return calls - allowed(unit_text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unit", help="the unit file whose SystemCallFilter= counts")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the program to trace")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    unit = Path(args.unit).read_text()
    calls, _ = traced(command)
    bad = sorted(denied(unit, calls))
    print(f"{len(calls)} system calls made, {len(allowed(unit))} allowed by {args.unit}")
    for name in bad:
        print(f"denied: {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
