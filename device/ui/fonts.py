"""The CJK bitmap fonts every screen is drawn with.

WenQuanYi Bitmap Song (Debian package ``xfonts-wqy``) ships PCF files that
are crisp in 1-bit at their native pixel sizes only; FreeType refuses any
other size, so the sizes below are the whole menu. Loaded fonts are cached:
a PCF file is a few MB and parsing it on every frame would be wasteful.

Glyph coverage is read from the PCF file's own encoding table rather than
guessed from rendered pixels, so a character that is really missing (an
emoji, a rare CJK Extension B character) is told apart from one whose glyph
happens to be blank (a space).
"""

from __future__ import annotations

import array
import functools
import gzip
import logging
import os
import struct
import sys

from PIL import ImageFont
from PIL.ImageFont import FreeTypeFont

from device.errors import FontError

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

# PCF table type of the encoding (character code -> glyph index) table.
_PCF_BDF_ENCODINGS = 1 << 5
# Format bit: the table's integers are big-endian.
_PCF_BYTE_MASK = 1 << 2
_NO_GLYPH = 0xFFFF

#: ``(min_b2, max_b2, min_b1, max_b1, glyph indices)`` of a PCF encoding table.
_Encoding = tuple[int, int, int, int, array.array]


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
    layout first asks for them (each face costs about a megabyte).

    Raises:
        FontError: naming the first file that is missing.
    """
    for size in SIZES:
        path = font_path(size, directory)
        if not os.path.exists(path):
            raise FontError(f"font file {path} is missing: install xfonts-wqy")
    load_font(min(SIZES), directory)


@functools.cache
def _pcf_encoding(path: str) -> _Encoding:
    """Read a PCF file's encoding table.

    Returns:
        ``(min_b2, max_b2, min_b1, max_b1, indices)``: the code ranges and
        the glyph index for each code in them (0xFFFF: no glyph).

    Raises:
        ValueError: the file is not a PCF font or has no encoding table.
    """
    with open(path, "rb") as raw:
        data = raw.read()
    if data[:2] == b"\x1f\x8b":     # fonts are often shipped as .pcf.gz
        data = gzip.decompress(data)
    if data[:4] != b"\x01fcp":
        raise ValueError(f"{path} is not a PCF font")
    (count,) = struct.unpack_from("<i", data, 4)
    for i in range(count):
        kind, _fmt, _size, offset = struct.unpack_from("<iiii", data, 8 + 16 * i)
        if kind != _PCF_BDF_ENCODINGS:
            continue
        (fmt,) = struct.unpack_from("<i", data, offset)
        order = ">" if fmt & _PCF_BYTE_MASK else "<"
        min_b2, max_b2, min_b1, max_b1, _default = struct.unpack_from(
            order + "5h", data, offset + 4)
        n = (max_b2 - min_b2 + 1) * (max_b1 - min_b1 + 1)
        # An array, not a tuple of ints: 64k entries a font, kept for the
        # life of the process, cost 128 KiB this way instead of megabytes.
        indices = array.array("H")
        indices.frombytes(data[offset + 14:offset + 14 + 2 * n])
        if (order == ">") != (sys.byteorder == "big"):
            indices.byteswap()
        return min_b2, max_b2, min_b1, max_b1, indices
    raise ValueError(f"{path} has no encoding table")


def _pcf_has_glyph(encoding: _Encoding, char: str) -> bool:
    min_b2, max_b2, min_b1, max_b1, indices = encoding
    code = ord(char)
    if code > 0xFFFF:               # PCF codes are 16-bit: no astral glyphs
        return False
    b1, b2 = code >> 8, code & 0xFF
    if not (min_b1 <= b1 <= max_b1 and min_b2 <= b2 <= max_b2):
        return False
    index = (b1 - min_b1) * (max_b2 - min_b2 + 1) + (b2 - min_b2)
    return indices[index] != _NO_GLYPH


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
            return _pcf_has_glyph(_pcf_encoding(path), char)
        except (OSError, ValueError, struct.error) as exc:
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
        missing = missing_glyphs(text, load_font(size, directory))
        if missing:
            listed = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in missing)
            raise FontError(
                f"{what}: {text!r} contains characters the display font "
                f"cannot show: {listed}")
