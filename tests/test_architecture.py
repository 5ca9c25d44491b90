"""docs/ARCHITECTURE.md is true to the code: its figures are what ``tools/architecture.py`` measures."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))     # architecture.py imports imports.py beside it
spec = importlib.util.spec_from_file_location("architecture", TOOLS / "architecture.py")
assert spec is not None and spec.loader is not None
architecture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(architecture)

pytestmark = pytest.mark.timeout(60)

#: The modules of the loop's area: none may be part of an import circle.
LOOP_AREA = ("device.loop", "device.app", "device.control", "device.supervisor", "device.checks", "device.state",
             "device.screen", "device.hardware", "device.view", "device.worker", "device.session_marker",
             "device.notify", "device.console.staging", "device.handlers")


def test_the_pages_figures_equal_what_the_command_prints():
    assert architecture.page_figures() == architecture.figures(), \
        "run python tools/architecture.py and paste its block into docs/ARCHITECTURE.md"


def test_no_import_circle_runs_through_the_loops_area():
    edges, inside = architecture.graph()
    touching = [group for group in architecture.circles(edges)
                if any(m.startswith(LOOP_AREA) for m in group)]
    assert touching == []
    # Imports inside functions only for Pi-only modules, in hardware.py (each with its reason on the line).
    assert {m for m in inside if m.startswith(LOOP_AREA)} <= {"device.hardware"}


def test_a_circle_is_found_where_there_is_one():
    assert architecture.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
