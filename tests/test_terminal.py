"""The simulator's panel in a terminal: the densest view that fits, a redraw on resize, a clear note when too small.

The views are checked against frames of known pixels; then the interactive
simulator runs under tmux at 80x24 and 120x40 (and larger and smaller), and
the screen tmux holds is read back and compared with the frames the
simulator saved.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from sim.terminal import HELPS, TerminalScreen, braille, compose, half_blocks, needs, width

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(90)


def frame(size=(128, 64), lit=()):
    image = Image.new("1", size)
    for xy in lit:
        image.putpixel(xy, 1)
    return image


def test_braille_cells_hold_two_by_four_pixels_in_unicodes_dot_order():
    # Dots 1-3 and 7 down the left column, 4-6 and 8 down the right.
    assert braille(frame((2, 4), [(0, 0)])) == [chr(0x2801)]
    assert braille(frame((2, 4), [(1, 3)])) == [chr(0x2880)]
    assert braille(frame((2, 4), [(x, y) for x in range(2) for y in range(4)])) == [chr(0x28FF)]
    assert braille(frame((4, 4))) == ["  "]                    # an empty cell is a space
    assert [len(r) for r in braille(frame())] == [64] * 16     # 128x64 -> 64x16 cells


def test_half_blocks_hold_one_by_two_pixels():
    assert half_blocks(frame((3, 2), [(0, 0), (1, 1), (2, 0), (2, 1)])) == ["▀▄█"]
    assert [len(r) for r in half_blocks(frame())] == [128] * 32


def test_each_view_says_what_terminal_it_needs():
    assert [(n.view, n.columns, n.rows) for n in needs((128, 64))] == [("half blocks", 130, 36), ("braille", 66, 20)]
    assert [(n.columns, n.rows) for n in needs((256, 64))] == [(258, 36), (130, 20)]


@pytest.mark.parametrize("columns, rows, view", [
    (80, 24, "braille"), (120, 40, "braille"), (130, 36, "half blocks"), (200, 60, "half blocks")])
def test_the_densest_view_that_fits_is_chosen(columns, rows, view):
    image = frame(lit=[(0, 0), (127, 63)])
    lines = compose(image, "console /dev/pts/3", columns, rows)
    rows_drawn = (half_blocks if view == "half blocks" else braille)(image)
    assert lines[1:1 + len(rows_drawn)] == ["|" + r + "|" for r in rows_drawn]
    assert len(lines) <= rows and all(width(line) <= columns for line in lines)
    assert lines[-2] == HELPS[0] and lines[-1] == "console /dev/pts/3"


def test_a_terminal_too_small_says_what_is_missing():
    lines = compose(frame(), "status", 60, 15)
    text = " ".join(lines)
    assert "60x15" in text and "braille view needs 66x20" in text
    assert "6 more columns and 5 more rows" in text
    assert len(lines) <= 15 and all(width(line) <= 60 for line in lines)


def test_the_key_help_is_cut_to_the_width_counting_chinese_as_two_columns():
    assert width("非常满意") == 8
    assert width(compose(frame(), "", 66, 20)[-2]) <= 66
    assert compose(frame(), "", 66, 20)[-2] == HELPS[1]


class Terminal:
    def __init__(self):
        self.text = ""

    def write(self, data):
        self.text += data

    def flush(self):
        pass


def test_a_resize_redraws_for_the_new_size():
    size = [80, 24]
    out = Terminal()
    screen = TerminalScreen(out, size=lambda: (size[0], size[1]))  # type: ignore[arg-type]   # a test runs in the main thread: SIGWINCH is watched
    try:
        screen.show(frame(lit=[(5, 5)]))
        assert braille(frame(lit=[(5, 5)]))[1] in out.text
        out.text = ""
        size[:] = [140, 40]
        os.kill(os.getpid(), signal.SIGWINCH)
        expected = "|" + half_blocks(frame(lit=[(5, 5)]))[2] + "|"
        deadline = time.monotonic() + 5
        while expected not in out.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert expected in out.text
    finally:
        screen.close()


# --- the interactive demo under tmux ------------------------------------------------------

class Tmux:
    """A private tmux server running one program in a window of a given size."""

    def __init__(self, tmp: Path, command: str, columns: int, rows: int):
        self.socket = f"evaluator-test-{os.getpid()}"
        self.rc = tmp / "rc"
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        self.env = env
        self.tmux("new-session", "-d", "-s", "demo", "-x", str(columns), "-y", str(rows),
                  f"{command}; echo $? > {self.rc}; sleep 60")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-f", "/dev/null", "-L", self.socket, *args], env=self.env,
                              capture_output=True, text=True, check=True, timeout=10).stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "demo").splitlines()

    def resize(self, columns: int, rows: int) -> None:
        self.tmux("resize-window", "-t", "demo", "-x", str(columns), "-y", str(rows))

    def wait(self, predicate, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        screen: list[str] = []
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError("the screen never showed what was expected:\n" + "\n".join(screen))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def latest_frame(frames: Path) -> Image.Image | None:
    names = sorted(frames.glob("frame-*.png"))
    return Image.open(names[-1]) if names else None


def shows_the_panel(frames: Path, draw, cells_high: int):
    """The screen holds the last frame the simulator drew, bordered, in the view ``draw``."""
    def check(screen: list[str]) -> bool:
        image = latest_frame(frames)
        if image is None or len(screen) < cells_high + 4:
            return False
        return screen[1:1 + cells_high] == ["|" + row + "|" for row in draw(image)]
    return check


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make setup installs it)")
def test_the_interactive_demo_reads_well_in_80x24_and_120x40_and_follows_resizes(tmp_path):
    frames = tmp_path / "frames"
    command = f"cd {REPO} && {sys.executable} -m sim --data {tmp_path / 'data'} --frames {frames}"
    tmux = Tmux(tmp_path, command, 80, 24)
    try:
        screen = tmux.wait(shows_the_panel(frames, braille, 16))
        assert screen[0] == "+" + "-" * 64 + "+" and screen[17] == screen[0]
        assert screen[18] == HELPS[0] and screen[19].startswith("console /dev/pts/")
        assert all(width(line) <= 80 for line in screen)

        tmux.resize(120, 40)
        screen = tmux.wait(shows_the_panel(frames, braille, 16))   # 130 columns for half blocks: not yet
        assert all(width(line) <= 120 for line in screen)

        tmux.resize(140, 40)
        screen = tmux.wait(shows_the_panel(frames, half_blocks, 32))
        assert screen[0] == "+" + "-" * 128 + "+"

        tmux.resize(50, 15)
        screen = tmux.wait(lambda s: "too small" in " ".join(s))
        assert "16 more columns and 5 more rows" in " ".join(screen)

        tmux.resize(80, 24)
        tmux.wait(shows_the_panel(frames, braille, 16))
        tmux.tmux("send-keys", "-t", "demo", "q")
        deadline = time.monotonic() + 20
        while not tmux.rc.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tmux.rc.read_text().strip() == "0"
    finally:
        tmux.close()
