"""Does the install on a Raspberry Pi resolve without building anything? For armv7l and aarch64, Python 3.11.

On the Pi, the venv (``--system-site-packages``) gets the compiled
distributions from the Pi's own packages (``deploy/debian-packages.txt``)
and every other one as a pinned wheel (``deploy/requirements-pi.txt``,
installed with ``--only-binary=:all: --no-deps``). This check, for each
architecture:

1. downloads the pinned wheels as pip would for that platform and Python
   3.11 with ``--only-binary=:all:`` (a source-only pin fails here);
2. requires each to be pure (``*-none-any``) or built for that architecture;
3. resolves every requirement of each wheel and of Window Evaluator itself
   (its ``install_requires`` and the ``pi`` extra, with that platform's
   markers) against the pins and the Pi's packages: a requirement nobody
   satisfies, or a version outside its range, is a problem.

    python tools/pi_install.py            (exit 1 naming each problem)
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PINS = REPO / "deploy" / "requirements-pi.txt"
DEBIAN = REPO / "deploy" / "debian-packages.txt"

#: pip's platform tags for each Raspberry Pi OS architecture.
PLATFORMS = {
    "armv7l": ("linux_armv7l", "manylinux2014_armv7l", "manylinux_2_36_armv7l"),
    "aarch64": ("linux_aarch64", "manylinux2014_aarch64", "manylinux_2_36_aarch64"),
}
PYTHON = "3.11"


def pins(path: Path = PINS) -> dict[str, Version]:
    """``{name: version}`` of the pinned wheels."""
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            found[canonicalize_name(req.name)] = Version(spec.version)
    return found


def debian(path: Path = DEBIAN) -> dict[str, Version]:
    """``{Python distribution: version}`` the Pi's packages provide."""
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[1] != "-":
            found[canonicalize_name(fields[1])] = Version(fields[2])
    return found


def own_requirements(setup_py: Path = REPO / "setup.py") -> list[Requirement]:
    """Window Evaluator's ``install_requires`` and its ``pi`` extra, read from setup.py."""
    tree = ast.parse(setup_py.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            found += ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == "extras_require" and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "pi":
                    found += ast.literal_eval(value)
    return [Requirement(r) for r in found]


def environment(machine: str) -> dict[str, str]:
    return {"python_version": PYTHON, "python_full_version": f"{PYTHON}.2", "platform_machine": machine,
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def download(machine: str, dest: Path, pinned: Path = PINS) -> subprocess.CompletedProcess[str]:
    platforms = [arg for tag in PLATFORMS[machine] for arg in ("--platform", tag)]
    return subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                           "--only-binary=:all:", "--no-deps", *platforms, "--python-version", PYTHON,
                           "--implementation", "cp", "--abi", "cp311", "-r", str(pinned), "-d", str(dest)],
                          capture_output=True, text=True, timeout=300)


def wheel_requirements(wheel: Path) -> tuple[list[Requirement], str | None]:
    """A wheel's ``Requires-Dist`` and ``Requires-Python``."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode())
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []], meta.get("Requires-Python")


def check(machine: str, pinned: Path = PINS) -> list[str]:
    """The problems of the install on ``machine`` (empty: it resolves, nothing built)."""
    problems = []
    have = {**debian(), **pins(pinned)}
    env = environment(machine)
    with tempfile.TemporaryDirectory(prefix=f"wheels-{machine}-") as folder:
        done = download(machine, Path(folder), pinned)
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if "ERROR" in ln] or done.stderr.splitlines()[-3:]
            return [f"{machine}: pip download --only-binary=:all: failed: {' '.join(errors)}"]
        wanted: list[tuple[str, Requirement]] = [("window-evaluator", r) for r in own_requirements()]
        got = set()
        for wheel in sorted(Path(folder).glob("*.whl")):
            name, version, _, tags = parse_wheel_filename(wheel.name)
            got.add(name)
            if not all(t.platform == "any" or t.platform.endswith(machine) for t in tags):
                problems.append(f"{machine}: {wheel.name} is not for {machine}")
            requires, requires_python = wheel_requirements(wheel)
            if requires_python and Version(f"{PYTHON}.2") not in SpecifierSet(requires_python):
                problems.append(f"{machine}: {wheel.name} needs Python {requires_python}")
            wanted += [(f"{name} {version}", r) for r in requires]
        for missing in set(pins(pinned)) - got:
            problems.append(f"{machine}: no wheel for the pin {missing}")
    for who, req in wanted:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name not in have:
            problems.append(f"{machine}: {who} needs {req}: neither pinned nor a Pi package")
        elif not req.specifier.contains(have[name], prereleases=True):
            problems.append(f"{machine}: {who} needs {req}, the Pi has {name} {have[name]}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    problems = [p for machine in PLATFORMS for p in check(machine)]
    for problem in problems:
        print(problem)
    print(f"{len(pins())} pinned wheels, {len(debian())} distributions from the Pi's packages: "
          + ("resolves for " + " and ".join(PLATFORMS) + f" with Python {PYTHON}" if not problems else
             f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
