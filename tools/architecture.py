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

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

#: The packages whose modules the import graph covers.
PACKAGES = ("device", "sim", "provision")
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
    ("Supervisor.config", "supervisor (the loop runs on it)", "Supervisor.committed, Supervisor._serve"),
)


def modules() -> Iterator[tuple[str, str]]:
    """``(module name, path)`` of every Python module of the project's packages."""
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    yield rel.removesuffix(".__init__"), path


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: str, module: str, known: set[str]) -> list[tuple[str, bool]]:
    """``(imported project module, inside a function)`` of one file; ``TYPE_CHECKING`` blocks left out."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: list[tuple[str, bool]] = []
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]

    def target(name: str) -> str:
        # ``from device import state`` names a module; ``from device.x import y`` names x.
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    name = target(alias.name)
                    if name:
                        found.append((name, inner))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    name = target(f"{base}.{alias.name}") or target(base)
                    if name:
                        found.append((name, inner))
            visit(child, inner)

    visit(tree, False)
    return [(name, inner) for name, inner in found if name != module]


def graph() -> tuple[dict[str, set[str]], dict[str, int]]:
    """The import graph (every import, inside functions too) and the function-level imports per module."""
    paths = dict(modules())
    known = set(paths)
    edges: dict[str, set[str]] = {m: set() for m in paths}
    inside: dict[str, int] = {}
    for module, path in paths.items():
        for name, in_function in imports(path, module, known):
            edges[module].add(name)
            if in_function:
                inside[module] = inside.get(module, 0) + 1
    return edges, inside


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(groups)


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
