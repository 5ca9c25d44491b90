"""tools/imports.py finds circles, unexplained imports inside functions and private names read across modules."""

import importlib.util
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_tool():
    if "imports_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location("imports_tool", REPO / "tools" / "imports.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["imports_tool"] = module
        spec.loader.exec_module(module)
    return sys.modules["imports_tool"]


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path):
    tool = load_tool()
    tree(tmp_path, {
        "device/__init__.py": "",
        "device/a.py": "from device import b\n",
        "device/b.py": "def late():\n    from device import c\n",
        "device/c.py": "import device.a\n",
    })
    modules = tool.read(str(tmp_path))
    assert tool.circles(modules) == [["device.a", "device.b", "device.c"]]
    assert tool.cycle_path(modules, ["device.a", "device.b", "device.c"]) == [
        "device.a", "device.b", "device.c", "device.a"]
    assert [(m, line) for m, line, _ in tool.unexplained_local_imports(modules)] == [("device.b", 2)]


def test_type_checking_imports_and_explained_local_imports_are_allowed(tmp_path):
    tool = load_tool()
    tree(tmp_path, {
        "device/__init__.py": "",
        "device/a.py": """\
            from typing import TYPE_CHECKING
            from device import b
            if TYPE_CHECKING:
                from device import c
            """,
        "device/b.py": "",
        "device/c.py": "from device import a\n",
        "device/hw.py": "def open_bus():\n    from device import b  # Pi-only: smbus2 exists only on a Pi\n",
    })
    modules = tool.read(str(tmp_path))
    assert tool.circles(modules) == []
    assert list(tool.unexplained_local_imports(modules)) == []
    assert tool.main(str(tmp_path)) == 0


def test_a_private_name_of_another_module_is_found_but_a_class_reading_its_own_is_not(tmp_path):
    tool = load_tool()
    tree(tmp_path, {
        "sim/__init__.py": "",
        "sim/server.py": """\
            class Server:
                def _capture(self):
                    pass
            """,
        "sim/handler.py": """\
            class Handler:
                def handle(self, server):
                    server._capture()
            """,
        "sim/secret.py": """\
            class Secret:
                def __init__(self, value):
                    self._value = value
                def __eq__(self, other):
                    return other._value == self._value
            """,
    })
    modules = tool.read(str(tmp_path))
    assert [(m, text) for m, _, text in tool.private_reads(modules)] == [("sim.handler", "server._capture")]
    assert tool.main(str(tmp_path)) == 1


def test_the_project_has_no_circle_no_unexplained_import_inside_a_function_and_reads_no_private_name():
    tool = load_tool()
    modules = tool.read()
    assert [tool.cycle_path(modules, group) for group in tool.circles(modules)] == []
    assert list(tool.unexplained_local_imports(modules)) == []
    assert list(tool.private_reads(modules)) == []
