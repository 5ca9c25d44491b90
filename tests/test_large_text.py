"""``display.large_text``: the prompt and the thank-you in large characters (issue 19), golden images."""

import pytest

from device.levels import Level
from device.ui import large
from device.ui.models import PromptScreen, ThanksScreen
from device.ui.screens import render
from golden_util import assert_golden
from helpers import tap

ROOMY = [(256, 64), (128, 128)]


@pytest.mark.parametrize("size", ROOMY, ids=lambda s: f"{s[0]}x{s[1]}")
def test_large_prompt_and_thanks_golden(size):
    name = f"{size[0]}x{size[1]}"
    assert_golden(render(PromptScreen("01", "张三", 27, "A012", large=True), size), f"large_prompt_{name}")
    assert_golden(render(ThanksScreen(large=True), size), f"large_thanks_{name}")
    assert_golden(render(ThanksScreen(Level.VERY_DISSATISFIED, large=True), size), f"large_thanks_level_{name}")


@pytest.mark.parametrize("size", ROOMY, ids=lambda s: f"{s[0]}x{s[1]}")
def test_large_characters_are_twice_the_usual_height(size):
    usual = render(ThanksScreen(), size).getbbox()
    big = render(ThanksScreen(large=True), size)
    lit = big.getbbox()
    assert lit is not None and lit[0] >= 1 and lit[1] >= 1 and lit[2] <= size[0] - 1 and lit[3] <= size[1] - 1
    # the first line's ink: rows lit from the top until the first blank row
    rows = [any(big.getpixel((x, y)) for x in range(size[0])) for y in range(size[1])]
    top = rows.index(True)
    first = rows[top:].index(False)
    assert first >= 26, f"large characters are {first} px high"
    assert usual is not None


def test_the_same_large_thanks_for_every_level():
    frames = {render(ThanksScreen(large=True), (256, 64)).tobytes() for _ in Level}
    assert len(frames) == 1


@pytest.mark.parametrize("size", [(128, 64), (64, 128)])
def test_panels_without_room_show_the_usual_screens(size):
    assert not large.has_room(size)
    for usual, big in ((PromptScreen("01", "张三", 27), PromptScreen("01", "张三", 27, large=True)),
                       (ThanksScreen(), ThanksScreen(large=True))):
        assert render(usual, size).tobytes() == render(big, size).tobytes()


def test_the_device_shows_large_text_when_configured(make_app):
    app, factory, _ = make_app('display.model="ssd1322"', 'display.interface="spi"', "display.large_text=true")
    tap(app, factory, 3)
    assert isinstance(app.model, ThanksScreen) and app.model.large
    frame = app.hardware.display.device.image.convert("1")
    expected = render(ThanksScreen(large=True), (256, 64))
    # the panel shows that frame (OLED care may have moved it by a pixel)
    assert frame.histogram() == expected.histogram()
    box, want = frame.getbbox(), expected.getbbox()
    assert box is not None and want is not None
    assert (box[2] - box[0], box[3] - box[1]) == (want[2] - want[0], want[3] - want[1])
