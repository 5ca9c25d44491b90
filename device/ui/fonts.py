"""The CJK bitmap fonts every screen is drawn with.

WenQuanYi Bitmap Song (Debian package ``xfonts-wqy``) ships PCF files that
are crisp in 1-bit at their native pixel sizes only; FreeType refuses any
other size, so the sizes below are the whole menu. Loaded fonts are cached:
a PCF file is a few MB and parsing it on every frame would be wasteful.

Text is measured without FreeType (:func:`text_bbox`): the PCF file's own
metrics give the same box FreeType does, so a face is loaded only for the
sizes that are really drawn (each loaded face costs 1.2 to 2 MB, and layouts
try every size while they look for the one that fits).

Glyph coverage is read from the PCF file's own encoding table rather than
guessed from rendered pixels, so a character that is really missing (an
emoji, a rare CJK Extension B character) is told apart from one whose glyph
happens to be blank (a space).
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import unicodedata

from PIL import ImageFont
from PIL.ImageFont import FreeTypeFont

from device.errors import FontError
from device.ui import pcf

logger = logging.getLogger(__name__)

#: Where Debian's xfonts-wqy installs its PCF files.
DEFAULT_FONT_DIR = "/usr/share/fonts/X11/misc"

#: Environment variable that overrides :data:`DEFAULT_FONT_DIR`.
FONT_DIR_ENV = "EVALUATOR_FONT_DIR"

#: Native pixel size -> PCF file name. FreeType accepts only these sizes.
FONT_FILES = {
    12: "wenquanyi_9pt.pcf",
    13: "wenquanyi_10pt.pcf",
    14: "wenquanyi_13px.pcf",
    15: "wenquanyi_11pt.pcf",
    16: "wenquanyi_12pt.pcf",
}

#: All native sizes, smallest first.
SIZES = tuple(sorted(FONT_FILES))

#: The smallest size text may shrink to; below it Chinese is unreadable.
MIN_SIZE = SIZES[0]
MAX_SIZE = SIZES[-1]

#: Code point ranges whose characters FreeType lays out one glyph after
#: another, with nothing a shaper (HarfBuzz, through Pillow's Raqm layout)
#: would reorder, compose or position: Latin, Greek, Cyrillic, general
#: punctuation and symbols, CJK and Hangul syllables, full-width forms.
#: Text with anything else is measured by FreeType itself.
_LINEAR_RANGES = ((0x0020, 0x058F), (0x2000, 0x2BFF), (0x2E80, 0xA4CF), (0xAC00, 0xD7A3),
                  (0xF900, 0xFAFF), (0xFE10, 0xFE1F), (0xFE30, 0xFE6F), (0xFF01, 0xFFEF))
#: Categories a shaper treats specially (marks, controls, format characters,
#: line and paragraph separators) or that are not characters at all.
_SHAPED_CATEGORIES = frozenset({"Mn", "Mc", "Me", "Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def font_dir(directory: str | None = None) -> str:
    """The directory the font files are read from.

    Args:
        directory: explicit directory; wins over the environment.

    Returns:
        ``directory``, else ``$EVALUATOR_FONT_DIR``, else the Debian default.
    """
    return directory or os.environ.get(FONT_DIR_ENV) or DEFAULT_FONT_DIR


def font_path(size: int, directory: str | None = None) -> str:
    """Path of the PCF file for a native pixel size.

    Raises:
        FontError: the size is not native, or the file is not installed.
    """
    if size not in FONT_FILES:
        raise FontError(
            f"no native WenQuanYi bitmap font of {size} px; "
            f"available sizes: {', '.join(map(str, SIZES))}")
    path = os.path.join(font_dir(directory), FONT_FILES[size])
    if not os.path.isfile(path):
        raise FontError(
            f"font file {path} not found: install xfonts-wqy "
            f"(apt install xfonts-wqy) or set {FONT_DIR_ENV}")
    return path


@functools.cache
def _load(path: str, size: int) -> FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise FontError(f"cannot load font {path} at {size} px: {exc}") from exc


def load_font(size: int, directory: str | None = None) -> FreeTypeFont:
    """The WenQuanYi bitmap font at a native pixel size, cached.

    Args:
        size: one of :data:`SIZES`.
        directory: font directory override (see :func:`font_dir`).

    Returns:
        PIL.ImageFont.FreeTypeFont: the font.

    Raises:
        FontError: the size is not native or the font is not installed.
    """
    return _load(font_path(size, directory), size)


def check_fonts(directory: str | None = None) -> None:
    """Check that every native size is installed, so a missing package fails at start.

    Only the smallest size is loaded here; the others are loaded when a
    screen first draws them (each face costs 1.2 to 2.2 MB), and each
    file's metrics are read when text is first measured at its size.

    Raises:
        FontError: naming the first file that is missing.
    """
    for size in SIZES:
        path = font_path(size, directory)
        if not os.path.exists(path):
            raise FontError(f"font file {path} is missing: install xfonts-wqy")
    load_font(min(SIZES), directory)


@functools.cache
def _read_pcf(path: str) -> pcf.PcfFont:
    try:
        return pcf.read(path)
    except (OSError, ValueError, struct.error) as exc:
        raise FontError(f"cannot read font {path}: {exc}") from exc


def pcf_font(size: int, directory: str | None = None) -> pcf.PcfFont:
    """The coverage and glyph metrics of the font at a native size, read once.

    Raises:
        FontError: the size is not native, or the file is missing or not a PCF font.
    """
    return _read_pcf(font_path(size, directory))


def _linear(char: str) -> bool:
    code = ord(char)
    return (any(low <= code <= high for low, high in _LINEAR_RANGES)
            and unicodedata.category(char) not in _SHAPED_CATEGORIES)


def text_bbox(text: str, size: int, directory: str | None = None) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of one line, equal to ``load_font(size).getbbox(text)``.

    Measured from the PCF file's metrics without loading the font into
    FreeType, when every character has a glyph of its own and is laid out
    glyph after glyph (:data:`_LINEAR_RANGES`); otherwise (a missing
    character, a combining mark, a right-to-left script) FreeType measures.

    Raises:
        FontError: the size is not native or the font is not installed.
    """
    font = pcf_font(size, directory)
    if not text:
        return 0, 0, 0, 0               # as Pillow answers for no text
    if all(_linear(char) and font.has_glyph(char) for char in text):
        return font.getbbox(text)
    left, top, right, bottom = load_font(size, directory).getbbox(text)
    return int(left), int(top), int(right), int(bottom)


@functools.cache
def _notdef_signature(font: FreeTypeFont) -> tuple[object, ...]:
    # A code point no font maps (last private-use code of plane 16)
    # renders as the font's default glyph.
    return _signature(font, "\U0010FFFD")


def _signature(font: FreeTypeFont, char: str) -> tuple[object, ...]:
    mask = font.getmask(char, mode="1")
    return font.getbbox(char), font.getlength(char), mask.size, bytes(mask)


def has_glyph(char: str, font: FreeTypeFont) -> bool:
    """Whether ``font`` has a glyph of its own for ``char``.

    PCF fonts are checked against their encoding table. Other fonts fall
    back to comparing the rendering with the font's default glyph, which is
    right except for characters drawn exactly like it.
    """
    if char in "\n\r\t\u200b":
        return True     # line breaks and break hints: never drawn as glyphs
    path = getattr(font, "path", None)
    if isinstance(path, str) and path.endswith((".pcf", ".pcf.gz")):
        try:
            return _read_pcf(path).has_glyph(char)
        except FontError as exc:
            logger.warning("cannot read encoding table of %s: %s", path, exc)
    return _signature(font, char) != _notdef_signature(font)


def missing_glyphs(text: str, font: FreeTypeFont) -> list[str]:
    """Characters of ``text`` that ``font`` cannot draw.

    Args:
        text: the text to check.
        font: a loaded font (see :func:`load_font`).

    Returns:
        list[str]: each missing character once, in order of appearance.
    """
    missing: list[str] = []
    for char in text:
        if char not in missing and not has_glyph(char, font):
            missing.append(char)
    return missing


def missing_chars(text: str, size: int, directory: str | None = None) -> list[str]:
    """Characters of ``text`` the font at ``size`` cannot draw, read from its encoding table.

    The same answer as :func:`missing_glyphs` with ``load_font(size)``,
    without loading the font into FreeType.

    Returns:
        list[str]: each missing character once, in order of appearance.

    Raises:
        FontError: the size is not native or the font is not installed.
    """
    font = pcf_font(size, directory)
    missing: list[str] = []
    for char in text:
        if char not in missing and char not in "\n\r\t\u200b" and not font.has_glyph(char):
            missing.append(char)
    return missing


def check_text(text: str, what: str, directory: str | None = None) -> None:
    """Make sure every character of ``text`` can be shown.

    Every native size comes from the same family, but each PCF file is
    checked, because a glyph missing from one size only would still be
    clipped to a blank box at that size.

    Args:
        text: the text, e.g. a staff name from the configuration.
        what: which setting or field it came from (``"staff.name"``), named
            in the error so the technician knows what to fix.
        directory: font directory override.

    Raises:
        FontError: naming the first missing character, its code point and
            ``what``; or when the fonts are not installed.
    """
    for size in SIZES:
        missing = missing_chars(text, size, directory)
        if missing:
            listed = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in missing)
            raise FontError(
                f"{what}: {text!r} contains characters the display font "
                f"cannot show: {listed}")
