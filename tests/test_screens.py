"""Screens: golden frames, decodable QR codes, text that is never clipped."""

import dataclasses

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from device.errors import FontError, LayoutError, QRFitError
from device.ui import care, screens
from device.ui import layout as layout_mod
from device.ui.layout import SAFE_MARGIN, draw_line
from device.ui.models import IdleScreen, PromptScreen, ServiceScreen
from golden_util import QR_SAMPLES, SAMPLES, SIZES, WINDOW_URL, assert_golden

pytestmark = pytest.mark.timeout(60)


def sample(name, kind):
    """The gallery's sample screen ``name``, which must be a ``kind``."""
    model = SAMPLES[name]
    assert isinstance(model, kind)
    return model


def decode(frame):
    """Texts of every QR code zxing-cpp finds in a frame."""
    return [r.text for r in zxingcpp.read_barcodes(frame.convert("L"))]


def lit(image):
    return sum(image.convert("1").histogram()[1:])


def test_idle_128x64_matches_golden():
    assert_golden(screens.render(SAMPLES["idle"], (128, 64)), "idle_128x64")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_screen_matches_golden(name, size):
    frame = screens.render(SAMPLES[name], size)
    assert frame.mode == "1" and frame.size == size
    assert_golden(frame, f"{name}_{size[0]}x{size[1]}")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(QR_SAMPLES))
def test_qr_decodes_from_final_frame(name, size):
    frame = screens.render(SAMPLES[name], size)
    assert decode(frame) == [QR_SAMPLES[name]]


@pytest.mark.parametrize("shift", care.shift_cycle(1))
def test_qr_still_decodes_after_care_shift(shift):
    frame = care.apply_shift(screens.render(SAMPLES["idle"], (128, 64)),
                             shift)
    assert decode(frame) == [WINDOW_URL]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_layout_is_tidy(name, size):
    """Inside the care margin, no overlapping ink, each region's rim dark."""
    lay = screens.layout(SAMPLES[name], size)
    frame = layout_mod.draw_layout(lay)
    inner = layout_mod.safe_area(size)
    for item in lay.items:
        box = item.box
        assert (inner.x <= box.x and inner.y <= box.y
                and box.right <= inner.right and box.bottom <= inner.bottom), \
            f"{item.key} {box} leaves the safe area {inner}"
    for a in lay.items:
        for b in lay.items:
            if a is not b:
                assert not a.box.overlaps(b.box), f"{a.key} overlaps {b.key}"
    for item in lay.items:
        if item.kind != "qr":
            assert_rim_dark(frame, item.region, item.key)


def assert_rim_dark(frame, region, what):
    """No lit pixel on the one-pixel rim of ``region``."""
    px = frame.load()
    w, h = frame.size
    rim = [(x, y) for x in range(region.x, region.right)
           for y in (region.y, region.bottom - 1)]
    rim += [(x, y) for y in range(region.y, region.bottom)
            for x in (region.x, region.right - 1)]
    for x, y in rim:
        if 0 <= x < w and 0 <= y < h:
            assert not px[x, y], f"{what}: lit pixel on the region edge at {x},{y}"


def assert_block_unclipped(lay, key):
    """The block's pixels inside its region equal its pixels drawn freely."""
    item = lay.find(key)
    region = item.region
    # Draw only this block into an image exactly its region, and again into
    # a roomy canvas: equal pixel counts mean nothing crossed the region.
    boxed = Image.new("1", (region.w, region.h), 0)
    boxed_draw = ImageDraw.Draw(boxed)
    boxed_draw.fontmode = "1"
    free = Image.new("1", (region.w + 200, region.h + 200), 0)
    draw = ImageDraw.Draw(free)
    draw.fontmode = "1"
    for line in item.lines:
        moved = dataclasses.replace(line, box=dataclasses.replace(
            line.box, x=line.box.x - region.x, y=line.box.y - region.y))
        draw_line(boxed_draw, moved)
        draw_line(draw, dataclasses.replace(moved, box=dataclasses.replace(
            moved.box, x=moved.box.x + 100, y=moved.box.y + 100)))
    assert lit(boxed) == lit(free) > 0, f"{key}: text crosses its region"
    assert_rim_dark(boxed, layout_mod.Box(0, 0, region.w, region.h), key)


NAMES = [
    "王五", "张三丰", "欧阳娜娜", "司马相如文", "阿卜杜热合曼",
    "买买提·艾力", "Li Wei 李伟", "张3丰A", "迪丽热巴·迪力木拉提",
    "阿不都克尤木·阿不都", "ZHANG Xiaoming12", "慕容复西门吹雪欧阳克",
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("n", range(2, 13))
def test_names_of_2_to_12_chars_fit_unclipped(n, size):
    for base in NAMES:
        name = (base * 3)[:n]
        model = dataclasses.replace(sample("idle_indicators", IdleScreen),
                                    staff_name=name)
        lay = screens.layout(model, size)
        assert_block_unclipped(lay, "staff_name")
        shown = "".join(line.text for line in lay.find("staff_name").lines)
        assert shown.replace(" ", "") == name.replace(" ", ""), \
            "every character is shown, no ellipsis"
        frame = layout_mod.draw_layout(lay)
        assert_rim_dark(frame, lay.find("staff_name").region, name)


_NAME_CHARS = st.sampled_from(
    list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹"
         "袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚"
         "谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹黎易常武乔"
         "贺赖龚文·")
    + list("ABCXYZabcxyz0123456789 "))


@settings(max_examples=60, deadline=None)
@given(st.text(_NAME_CHARS, min_size=2, max_size=12)
       .filter(lambda s: s.strip() and s == s.strip()))
def test_any_name_fits_128x64(name):
    lay = screens.layout(dataclasses.replace(SAMPLES["idle_indicators"],
                                             staff_name=name), (128, 64))
    assert_block_unclipped(lay, "staff_name")


def test_frames_keep_care_margin_dark():
    for name, model in SAMPLES.items():
        frame = screens.render(model, (128, 64))
        w, h = frame.size
        inner = frame.crop((SAFE_MARGIN, SAFE_MARGIN, w - SAFE_MARGIN,
                            h - SAFE_MARGIN))
        assert lit(inner) == lit(frame), f"{name} draws in the care margin"


def test_staff_name_with_missing_glyph_raises_font_error():
    model = dataclasses.replace(sample("idle", IdleScreen), staff_name="李\U0001F600")
    with pytest.raises(FontError, match=r"staff\.name") as info:
        screens.render(model, (128, 64))
    assert "\U0001F600" in str(info.value)


def test_url_too_long_for_panel_raises_qr_fit_error():
    model = dataclasses.replace(sample("idle", IdleScreen),
                                qr_url="https://hcp.example.cn/" + "x" * 400)
    with pytest.raises(QRFitError, match="at most"):
        screens.render(model, (128, 64))


def test_too_many_service_lines_is_a_layout_error():
    with pytest.raises(LayoutError, match="fit"):
        screens.render(ServiceScreen(lines=tuple(f"行 {n}" for n in range(12))),
                       (128, 64))


def test_render_is_pure_and_dispatches_on_type():
    model = sample("prompt", PromptScreen)
    first = screens.render(model, (128, 64))
    assert first.tobytes() == screens.render(model, (128, 64)).tobytes()
    assert first.tobytes() == screens.render_prompt(model, (128, 64)).tobytes()
    with pytest.raises(TypeError):
        screens.render(object(), (128, 64))  # type: ignore[arg-type]


@pytest.mark.parametrize("n", range(2, 13))
def test_long_window_name_wraps_or_yields_never_clips(n):
    """A window name wraps; if it cannot fit it is left out, never cut."""
    model = IdleScreen("12", "社会保障医疗保险综合窗口"[:n], "王五", "1", WINDOW_URL)
    lay = screens.layout(model, (128, 64))
    shown = "".join(line.text for line in lay.find("window").lines)
    assert shown.replace(" ", "") in ("12号窗口" + model.window_name,
                                      "12号窗口")
    assert_block_unclipped(lay, "window")
    assert decode(layout_mod.draw_layout(lay)) == [WINDOW_URL]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_private_thanks_and_follow_up_name_no_level(size):
    """Privacy at the counter: what follows any rating by default says nothing of its level."""
    from device.levels import Level

    for name in ("thanks", "followup"):
        shown = "".join(line.text for item in screens.layout(SAMPLES[name], size).items for line in item.lines)
        assert shown and not any(level.text in shown for level in Level), (name, shown)
        assert "原因" not in shown
