"""The README's commands run as written, and every page it links exists.

Every line of a ```sh block in README.md is run, in order, from a fresh folder
that has the project's `.venv` (as after `make setup`) and nothing else, so a
command that only works from a developer's own checkout fails here.
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.timeout(300)


def sh_commands(text: str) -> list[str]:
    """The command lines of the ```sh blocks, in order (comments and blank lines apart)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_the_readme_has_commands_to_run():
    commands = sh_commands(README)
    assert len(commands) >= 5
    assert all(shlex.split(c)[0].startswith((".venv/bin/", "make")) for c in commands), commands


def test_every_readme_command_runs_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "tools").symlink_to(REPO / "tools")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in sh_commands(README):
        done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_every_page_the_readme_links_exists():
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links no page"
    missing = [link for link in local if not (REPO / link).exists()]
    assert missing == []
