"""Fonts: native sizes load, missing glyphs are found and named."""

import pytest
from PIL import ImageFont

from device.errors import FontError
from device.ui import fonts
from device.ui.models import IdleScreen
from golden_util import SAMPLES

pytestmark = pytest.mark.timeout(30)

EMOJI = "\U0001F600"          # 😀: no bitmap CJK font has it
EXT_B = "\U00020000"          # 𠀀: CJK Extension B, beyond PCF's 16-bit codes
RARE_BMP = "\u9FD0"           # 鿐: CJK added in Unicode 9, after WenQuanYi


@pytest.mark.parametrize("size", fonts.SIZES)
def test_native_sizes_load_and_are_cached(size):
    font = fonts.load_font(size)
    assert isinstance(font, ImageFont.FreeTypeFont)
    assert fonts.load_font(size) is font
    assert font.getbbox("窗")[2] == size     # a CJK glyph is size px wide


def test_other_sizes_are_refused():
    with pytest.raises(FontError, match="available sizes"):
        fonts.load_font(20)


@pytest.mark.parametrize("size", fonts.SIZES)
def test_missing_glyphs_found_by_encoding_table(size):
    font = fonts.load_font(size)
    text = f"张三 Li{EMOJI}丰{EXT_B}　9"
    assert fonts.missing_glyphs(text, font) == [EMOJI, EXT_B]
    # a space's glyph is blank but it is a glyph, not the default box
    assert fonts.has_glyph(" ", font) and fonts.has_glyph("\u3000", font)


def test_missing_glyph_fallback_for_non_pcf_fonts(monkeypatch):
    """Fonts without an encoding table are compared with the default glyph."""
    font = fonts.load_font(12)
    monkeypatch.setattr(font, "path", "not-a-pcf.ttf")
    assert fonts.missing_glyphs(f"张{EMOJI}", font) == [EMOJI]


def test_check_text_names_the_character_and_the_key():
    with pytest.raises(FontError) as info:
        fonts.check_text(f"李{EMOJI}", "staff.name")
    message = str(info.value)
    assert "staff.name" in message and EMOJI in message and "U+1F600" in message


def test_rare_character_is_reported():
    with pytest.raises(FontError, match="U\\+9FD0"):
        fonts.check_text(f"王{RARE_BMP}", "staff.name")


IDLE = SAMPLES["idle"]
assert isinstance(IDLE, IdleScreen)


@pytest.mark.parametrize("name", ["张三丰", "欧阳娜娜", "买买提·艾力",
                                  "迪丽热巴·迪力木拉提", "Li Wei 李伟",
                                  IDLE.staff_name])
def test_every_char_of_staff_names_has_a_glyph(name):
    for size in fonts.SIZES:
        assert fonts.missing_glyphs(name, fonts.load_font(size)) == []
    fonts.check_text(name, "staff.name")


def test_screen_texts_have_glyphs():
    from device.levels import Level
    from device.ui import screens
    texts = [screens.PROMPT_TEXT, screens.THANKS_TEXT, screens.REASONS_TITLE,
             screens.DETAIL_HINT, "号窗口工号秒暂停评价请扫码好差评窗口评价器版本启动中"]
    texts += [level.text for level in Level]
    for text in texts:
        fonts.check_text(text, "screen text")


def test_missing_font_dir_says_install_xfonts_wqy(tmp_path, monkeypatch):
    with pytest.raises(FontError, match="install xfonts-wqy"):
        fonts.load_font(12, directory=str(tmp_path))
    monkeypatch.setenv(fonts.FONT_DIR_ENV, str(tmp_path))
    assert fonts.font_dir() == str(tmp_path)
    with pytest.raises(FontError, match="xfonts-wqy"):
        fonts.check_fonts()
