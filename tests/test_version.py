"""``--version`` on every console script, one version for all; the terminal demo in an ASCII-only locale;
no import circle between the device's command line and its doctor."""

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import device
from device import cli as device_cli
from device import integrity
from provision import cli as provision_cli
from sim import cli as sim_cli
from sim.terminal import TerminalScreen, encodable

REPO = Path(__file__).resolve().parent.parent
ASCII_LOCALE = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


@pytest.mark.parametrize("prog, main", [
    ("evaluator", device_cli.main), ("evaluator-sim", sim_cli.main),
    ("evaluator-provision", provision_cli.main), ("evaluator-verify", integrity.main),
])
def test_every_console_script_says_its_version(prog, main, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"{prog} {device.__version__}\n"


def test_one_version_for_the_package_and_the_program():
    # setup.py reads device/__init__.py; nothing else spells the number.
    setup_py = (REPO / "setup.py").read_text()
    assert "device/__init__.py" in setup_py.replace('" / "', "/") and device.__version__ not in setup_py


def test_evaluator_version_in_an_ascii_only_locale():
    env = {**os.environ, **ASCII_LOCALE, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "device", "--version"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == f"evaluator {device.__version__}\n", done.stderr


def test_the_terminal_panel_draws_in_ascii_where_the_terminal_has_no_unicode():
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    screen = TerminalScreen(out, size=lambda: (140, 40), watch_resize=False)
    frame = Image.new("1", (128, 64))
    frame.paste(1, (0, 0, 64, 31))
    screen.show(frame)
    screen.status = "已发送 3 条"
    screen.redraw()
    text = raw.getvalue().decode("ascii")
    assert "#" * 64 in text                          # the lit block, as ASCII
    assert "?? 3 ??" in text.replace("????", "??")   # Chinese as ?? per wide character, widths kept
    assert encodable("██▀▄ 请", "ascii") == '##", ??'
    assert encodable("⠿⠀", "ascii") == "# "
    assert encodable("请", "utf-8") == "请"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make setup installs it)")
def test_the_interactive_demo_survives_an_ascii_only_locale(tmp_path):
    rc = tmp_path / "rc"
    sock = f"evaluator-ascii-{os.getpid()}"
    env = {**os.environ, **ASCII_LOCALE, "PYTHONPATH": str(REPO)}
    command = f"cd {tmp_path} && {sys.executable} -m sim --data {tmp_path / 'data'}; echo $? > {rc}; sleep 30"

    def tmux(*args):
        return subprocess.run(["tmux", "-f", "/dev/null", "-L", sock, *args], env=env, capture_output=True,
                              text=True, check=True, timeout=10).stdout

    tmux("new-session", "-d", "-s", "demo", "-x", "140", "-y", "45", command)
    try:
        deadline = time.monotonic() + 60
        screen = ""
        while time.monotonic() < deadline and "#" not in screen:
            time.sleep(0.2)
            screen = tmux("capture-pane", "-p", "-t", "demo")
        assert "#" in screen and "Traceback" not in screen, screen
        tmux("send-keys", "-t", "demo", "1")
        time.sleep(1.0)
        tmux("send-keys", "-t", "demo", "q")
        while time.monotonic() < deadline and not rc.exists():
            time.sleep(0.2)
        screen = tmux("capture-pane", "-p", "-t", "demo")
        assert rc.exists() and rc.read_text().strip() == "0", screen
        assert "Traceback" not in screen and "UnicodeEncodeError" not in screen, screen
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=10)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside functions (TYPE_CHECKING ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if re.match(r"(device|sim|provision)\b", n)}


def test_the_doctor_does_not_import_the_command_line_and_imports_inside_functions_say_why():
    doctor, command_line = REPO / "device" / "doctor.py", REPO / "device" / "cli.py"
    assert not {"device.cli", "device.cli.SYSTEM_CONFIG"} & imports_of(doctor)
    assert "device.doctor" in imports_of(command_line)
    # Inside functions only the Pi-only bus modules (doctor) and the heavy doctor itself (cli: the console must
    # start even when a part of the program cannot be imported), each with its reason on the line.
    allowed = {doctor: {"smbus2", "spidev"}, command_line: {"device", "device.supervisor"}}
    for path, names_allowed in allowed.items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        assert name in names_allowed, f"{path.name}:{fn.name} imports {name} inside"
                        assert "#" in lines[node.lineno - 1], f"{path.name}:{node.lineno}: no reason given"


def test_the_command_line_imports_neither_the_doctor_nor_the_app_until_asked():
    code = "import sys, device.cli; print(sorted(m for m in ('device.doctor', 'device.app') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
