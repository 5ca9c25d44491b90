"""The project's import graph: circles, imports inside functions, and private names used across modules.

    python tools/imports.py            # prints what it finds; exit 1 if anything is wrong

Reads the source of ``device``, ``sim``, ``provision`` and ``hall`` (where
present) with :mod:`ast`; nothing is imported or run. ``make test`` runs it
through ``tests/test_imports.py``.

- **Circles**: module A imports B (at module level or inside a function, as
  Python runs either) and B, directly or not, imports A. Importing
  ``from a.b import c`` is an edge to the module ``a.b.c`` (or to ``a.b`` when
  ``c`` is a name in it), not to the packages around it. Imports under
  ``if TYPE_CHECKING:`` never run and are left out.
- **Imports inside functions** of project modules are allowed only for a
  Pi-only or heavy module, with the reason on the line (a comment containing
  ``Pi-only`` or ``heavy``), so nobody hides a circle by moving an import
  into a function.
- **Private names**: a module that reads ``other._name`` where ``_name`` is
  defined only in another project module (a private function, method or
  attribute of someone else), or imports ``from other import _name``.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PACKAGES = ("device", "sim", "provision", "hall")
#: Words that explain an import inside a function (on its line, as a comment).
REASONS = ("Pi-only", "heavy")


@dataclass
class Module:
    name: str
    path: str
    is_package: bool
    #: imported module -> line numbers (module level and inside functions; TYPE_CHECKING apart)
    imports: dict[str, list[int]] = field(default_factory=dict)
    #: (line, imported module, the line's text) of imports inside a function
    local_imports: list[tuple[int, str, str]] = field(default_factory=list)
    #: private names defined here (def, class, assignment, self._x = ...)
    defines: set[str] = field(default_factory=set)
    #: (line, name) of ``expr._name`` reads with ``expr`` not self/cls, and ``from x import _name``
    private_uses: list[tuple[int, str, str]] = field(default_factory=list)


def find_modules(root: str = ROOT) -> dict[str, Module]:
    """Every module of the project's packages, by dotted name."""
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        top = os.path.join(root, package)
        if not os.path.isdir(top):
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            rel = os.path.relpath(folder, root)
            if not os.path.exists(os.path.join(folder, "__init__.py")):
                dirs[:] = []      # not a package (e.g. the fake Pi's library folder, put on a child's path)
                continue
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                parts = rel.split(os.sep) + ([] if name == "__init__.py" else [name[:-3]])
                dotted = ".".join(parts)
                modules[dotted] = Module(dotted, os.path.join(folder, name), name == "__init__.py")
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Reader(ast.NodeVisitor):
    def __init__(self, module: Module, known: set[str], lines: list[str]) -> None:
        self.module = module
        self.known = known
        self.lines = lines
        self.depth = 0

    def _target(self, name: str) -> str | None:
        """The project module ``name`` runs, or None when it is not the project's."""
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        return name or None

    def _add(self, node: ast.stmt, name: str) -> None:
        target = self._target(name)
        if target is None:
            return
        # The module named, not the packages around it: ``from device.console import auth`` needs
        # device/console/auth.py; a package's __init__ that gathers its modules is no circle of theirs.
        if target != self.module.name:
            self.module.imports.setdefault(target, []).append(node.lineno)
        entry = (node.lineno, target, self.lines[node.lineno - 1].strip())
        if self.depth and entry not in self.module.local_imports:
            self.module.local_imports.append(entry)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, node)
        for alias in node.names:
            full = f"{base}.{alias.name}" if base else alias.name
            self._add(node, full if full in self.known else base)
            if alias.name.startswith("_") and not alias.name.startswith("__") and self._target(base):
                self.module.private_uses.append((node.lineno, alias.name, f"from {base} import {alias.name}"))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.module.defines.add(node.name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.module.defines.add(node.name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.module.defines.add(node.id)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.module.defines.add(node.target.id)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        if isinstance(node.ctx, ast.Store):
            self.module.defines.add(name)
        elif name.startswith("_") and not name.startswith("__"):
            receiver = node.value
            if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")) and not (
                    isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name)
                    and receiver.func.id == "super"):
                self.module.private_uses.append((node.lineno, name, ast.unparse(node)))
        self.generic_visit(node)


def read(root: str = ROOT) -> dict[str, Module]:
    """Every project module with its imports, definitions and private reads."""
    modules = find_modules(root)
    known = set(modules)
    for module in modules.values():
        with open(module.path, encoding="utf-8") as f:
            text = f.read()
        _Reader(module, known, text.splitlines()).visit(ast.parse(text, module.path))
    return modules


def circles(modules: Mapping[str, Module] | Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted, smallest first.

    ``modules`` maps a name to its :class:`Module` or straight to the names it imports.
    """
    edges = {name: set(m.imports) if isinstance(m, Module) else set(m) for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(name: str) -> None:
        index[name] = low[name] = counter[0]
        counter[0] += 1
        stack.append(name)
        on_stack.add(name)
        for other in sorted(edges[name]):
            if other not in edges:
                continue
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for name in sorted(edges):
            if name not in index:
                visit(name)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found, key=lambda g: (len(g), g))


def cycle_path(modules: dict[str, Module], group: list[str]) -> list[str]:
    """One concrete circle through ``group``'s first module, for the message."""
    start = group[0]
    members = set(group)
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for other in sorted(modules[path[-1]].imports):
            if other == start:
                return [*path, start]
            if other in members and other not in seen:
                seen.add(other)
                paths.append([*path, other])
    return group


def unexplained_local_imports(modules: dict[str, Module]) -> Iterator[tuple[str, int, str]]:
    """Imports of project modules inside functions whose line gives no reason."""
    for module in modules.values():
        for line, _target, text in module.local_imports:
            comment = text.partition("#")[2]
            if not any(reason.lower() in comment.lower() for reason in REASONS):
                yield module.name, line, text


def private_reads(modules: dict[str, Module]) -> Iterator[tuple[str, int, str]]:
    """Reads of a private name that only another project module defines."""
    defined_in: dict[str, set[str]] = {}
    for module in modules.values():
        for name in module.defines:
            defined_in.setdefault(name, set()).add(module.name)
    for module in modules.values():
        for line, name, text in module.private_uses:
            owners = defined_in.get(name, set())
            if owners and module.name not in owners:
                yield module.name, line, text


def main(root: str = ROOT) -> int:
    modules = read(root)
    problems = 0
    for group in circles(modules):
        problems += 1
        print("circle: " + " -> ".join(cycle_path(modules, group)))
    for name, line, text in unexplained_local_imports(modules):
        problems += 1
        print(f"import inside a function without a reason: {name}:{line}: {text}")
    for name, line, text in private_reads(modules):
        problems += 1
        print(f"private name of another module: {name}:{line}: {text}")
    edges = sum(len(m.imports) for m in modules.values())
    print(f"{len(modules)} modules, {edges} imports, {problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
