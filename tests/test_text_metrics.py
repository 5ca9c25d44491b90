"""Text measured from the PCF metrics is exactly what FreeType measures, and measuring loads no face."""

import gzip
import os
import shutil

import pytest
from PIL import ImageFont, features

from device.errors import FontError
from device.ui import fonts, pcf, typeset

pytestmark = pytest.mark.timeout(60)


def gb2312_chars() -> list[str]:
    """Every character of GB2312 (rows 0xA1-0xF7, cells 0xA1-0xFE)."""
    chars = []
    for row in range(0xA1, 0xF8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


GB2312 = gb2312_chars()
ASCII = [chr(c) for c in range(0x20, 0x7F)]
MIXED = [
    "张三丰", "欧阳娜娜", "买买提·艾力", "迪丽热巴·迪力木拉提", "Li Wei 李伟", "gjpqy_ 好差评",
    "请您对本次服务进行评价", "感谢您的评价", "12345号窗口", "5 扫码填写", "工号 A0123",
    "https://zwfw.example.gov.cn/pj?d=A1", "（非常满意）", "“引号”《书名》", "…—～",
    "　全角空格　", " leading and trailing ", "ÀÉÎõü Ωλ Жд", "①②③ ㈠㈡", "ＡＢＣ１２３",
    "\U0001F600 emoji", "A\u9FD0B", "\U00020000", "a\u0301", "e\u200bf", "\u05d0\u05d1 RTL",
    "tab\there", "\u00a0nbsp\u00a0", "",
]
ENGINES = [ImageFont.Layout.BASIC] + ([ImageFont.Layout.RAQM] if features.check("raqm") else [])


@pytest.fixture(scope="module", params=fonts.SIZES)
def size(request):
    return request.param


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_every_gb2312_and_ascii_glyph_measures_as_freetype(size, engine):
    face = ImageFont.truetype(fonts.font_path(size), size, layout_engine=engine)
    metrics = fonts.pcf_font(size)
    assert metrics.ascent == face.getmetrics()[0]
    differ = [(c, face.getbbox(c), metrics.getbbox(c))
              for c in GB2312 + ASCII if face.getbbox(c) != metrics.getbbox(c)]
    assert differ == []


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_strings_measure_as_freetype(size, engine, monkeypatch):
    face = ImageFont.truetype(fonts.font_path(size), size, layout_engine=engine)
    # text_bbox's own fallback uses this engine's face too
    monkeypatch.setattr(fonts, "load_font", lambda s, d=None: face)
    texts = MIXED + ["".join(GB2312[i::97]) for i in range(0, 97, 7)] + ["".join(ASCII)]
    assert [fonts.text_bbox(t, size) for t in texts] == [face.getbbox(t) for t in texts]


def test_every_glyph_of_the_font_in_the_linear_ranges_measures_as_freetype(size):
    """Beyond GB2312: every character the font has that text_bbox measures itself."""
    face = fonts.load_font(size)
    metrics = fonts.pcf_font(size)
    chars = [chr(c) for c in range(0x20, 0x10000) if metrics.has_glyph(chr(c))]
    assert len(chars) > 20000
    differ = [c for c in chars if fonts.text_bbox(c, size) != face.getbbox(c)]
    assert differ == []


def test_measuring_every_size_loads_no_face(monkeypatch):
    loaded = []
    monkeypatch.setattr(fonts, "load_font", lambda size, directory=None: loaded.append(size))
    typeset.measure.cache_clear()
    typeset.wrap.cache_clear()
    for s in fonts.SIZES:
        assert typeset.wrap("迪丽热巴·迪力木拉提 Li Wei 12345号窗口", 60, s)
        assert fonts.missing_chars("张三\U0001F600", s) == ["\U0001F600"]
        fonts.check_text("买买提·艾力", "staff.name")
    fonts.check_fonts()
    typeset.measure.cache_clear()
    typeset.wrap.cache_clear()
    assert loaded == [fonts.MIN_SIZE]       # check_fonts loads the smallest size, nothing else


def test_missing_chars_agrees_with_the_face(size):
    text = "张三 Li\U0001F600丰\U00020000　9\u9FD0\n\u200b"
    assert fonts.missing_chars(text, size) == fonts.missing_glyphs(text, fonts.load_font(size)) \
        == ["\U0001F600", "\U00020000", "\u9FD0"]


def test_gzipped_pcf_reads_the_same(tmp_path):
    path = fonts.font_path(12)
    packed = tmp_path / "font.pcf.gz"
    with open(path, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    plain, unpacked = pcf.read(path), pcf.read(str(packed))
    assert unpacked == plain


def test_metrics_are_compact():
    for s in fonts.SIZES:
        font = fonts.pcf_font(s)
        size = sum(a.itemsize * len(a) for a in (font.indices, font.metrics))
        assert size < 400 * 1024, (s, size)     # a loaded FreeType face: 1.2 to 2.2 MB


def test_not_a_pcf_file_is_a_font_error(tmp_path, monkeypatch):
    for name in fonts.FONT_FILES.values():
        (tmp_path / name).write_bytes(b"not a font at all")
    monkeypatch.setenv(fonts.FONT_DIR_ENV, str(tmp_path))
    with pytest.raises(FontError, match="cannot read font"):
        fonts.text_bbox("窗", 13)
    with pytest.raises(ValueError, match="not a PCF font"):
        pcf.read(os.path.join(tmp_path, fonts.FONT_FILES[12]))
