"""The figures of docs/ARCHITECTURE.md, measured from the code: anyone can run it.

    python tools/architecture.py            # the figures, as the page shows them
    python tools/architecture.py --check    # exit 1 when the page and the code disagree

Prints, between the page's ``figures`` markers:

- the rating's path: modules and boundaries one rating crosses from the
  button to the hall (:mod:`tools.rating_path`, the real code on simulated pins);
- import circles among the project's modules (imports inside functions
  counted; ``if TYPE_CHECKING:`` imports apart), and project imports made
  inside functions, per package;
- who writes each file the device keeps, and which thread that is;
- sizes: modules over 500 lines and classes over 300.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import imports as imports_tool  # tools/imports.py, beside this file

ROOT = os.path.normpath(imports_tool.ROOT)
sys.path.insert(0, ROOT)

PAGE = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
BEGIN, END = "<!-- figures: begin (python tools/architecture.py) -->", "<!-- figures: end -->"
MODULE_LINES, CLASS_LINES = 500, 300

#: Who writes each file the device keeps: ``(file, the thread that writes it, through what)``.
#: The console asks; the owner changes (device/control.py). A test checks each entry against the code.
OWNERS = (
    ("outbox.db (+ -wal, witness)", "loop", "handlers/records.py (appends); the uploader marks delivery"),
    ("open-session.json", "loop", "handlers/records.py through session_marker.py"),
    ("assignment.json", "loop", "handlers/assignment.py (kept, forgotten at FactoryReset)"),
    ("settings.toml (+ .commit journal)", "supervisor (the loop runs on it)",
     "Commit/FactoryReset as requests: handlers/commands.py, Supervisor._serve in recovery"),
    ("device key file", "supervisor (the loop runs on it)", "the same Commit/FactoryReset requests"),
    ("start.json, settings.failed.json", "supervisor", "supervisor.py (last known good)"),
    ("console.pin", "console", "console/auth.py (the console's own file)"),
    ("device-ed25519.pem (+ .next)", "loop (RotateKey makes .next); uploader (promotes it after a verified answer)",
     "device/keys.py, one lock for both"),
    ("Supervisor.config", "supervisor (the loop runs on it)", "Supervisor.committed, Supervisor._serve"),
)


def modules() -> Iterator[tuple[str, str]]:
    """``(module name, path)`` of every Python module of the project's packages."""
    for module in imports_tool.find_modules(ROOT).values():
        yield module.name, module.path


def graph() -> tuple[dict[str, set[str]], dict[str, int]]:
    """The import graph (every import, inside functions too) and the function-level imports per module.

    Read by :mod:`imports` (tools/imports.py), the one reader of the project's imports.
    """
    read = imports_tool.read(ROOT)
    edges = {name: set(module.imports) for name, module in read.items()}
    inside = {name: len(module.local_imports) for name, module in read.items() if module.local_imports}
    return edges, inside


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module, each sorted."""
    return imports_tool.circles(edges)


def sizes() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Modules over :data:`MODULE_LINES` lines and classes over :data:`CLASS_LINES`, largest first."""
    big_modules, big_classes = [], []
    for module, path in modules():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines = text.count("\n")
        if lines > MODULE_LINES:
            big_modules.append((os.path.relpath(path, ROOT), lines))
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                span = node.end_lineno - node.lineno + 1
                if span > CLASS_LINES:
                    big_classes.append((f"{module}.{node.name}", span))
    return (sorted(big_modules, key=lambda x: (-x[1], x[0])), sorted(big_classes, key=lambda x: (-x[1], x[0])))


def rating_path() -> tuple[int, int]:
    """Modules and boundaries on one rating's path (helpers and the thank-you frame apart)."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "rating_path.py")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=False)
    if run.returncode != 0:
        raise SystemExit(f"tools/rating_path.py failed: {run.stderr[-2000:]}")
    line = next(x for x in run.stdout.splitlines() if x.startswith("the rating's path"))
    words = line.split(":")[1].split()
    return int(words[0]), int(words[2])


def figures(with_path: bool = True) -> str:
    """The page's figures, as Markdown."""
    edges, inside = graph()
    groups = circles(edges)
    big_modules, big_classes = sizes()
    out = []
    if with_path:
        steps, hops = rating_path()
        out.append(f"- The rating's path (`python tools/rating_path.py`): **{steps} modules, {hops} boundaries**.")
    out.append(f"- Import circles among {len(edges)} project modules (imports inside functions counted, "
               f"`TYPE_CHECKING` apart): **{len(groups)}**" + ("." if not groups else ":"))
    out += [f"  - {' ↔ '.join(group)}" for group in groups]
    by_package: dict[str, int] = {}
    for module, count in inside.items():
        top = module.split(".")[0] if not module.startswith("device.") else ".".join(module.split(".")[:2])
        by_package[top] = by_package.get(top, 0) + count
    out.append(f"- Project imports inside functions: **{sum(inside.values())}** ("
               + ", ".join(f"{name} {n}" for name, n in sorted(by_package.items(), key=lambda x: (-x[1], x[0])))
               + ").")
    out.append("- Who writes each file the device keeps:")
    out.append("")
    out.append("  | file | written by the thread of | through |")
    out.append("  |---|---|---|")
    out += [f"  | {name} | {thread} | {how} |" for name, thread, how in OWNERS]
    out.append("")
    out.append(f"- Modules over {MODULE_LINES} lines: "
               + ", ".join(f"`{path}` {n}" for path, n in big_modules) + ".")
    out.append(f"- Classes over {CLASS_LINES} lines: " + ", ".join(f"`{name}` {n}" for name, n in big_classes) + ".")
    return "\n".join(out)


def page_figures(path: str = PAGE) -> str:
    """The figures block of the page as it stands."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def main(argv: list[str]) -> int:
    measured = figures()
    if "--check" in argv:
        if page_figures() != measured:
            print("docs/ARCHITECTURE.md's figures differ from the code's; the code measures:\n" + measured)
            return 1
        print("docs/ARCHITECTURE.md's figures match the code")
        return 0
    print(BEGIN)
    print(measured)
    print(END)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
