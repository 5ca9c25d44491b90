"""The few tables of a PCF bitmap font the device reads itself.

A PCF file (X11's compiled bitmap font format) holds a table of contents
and tables: the encoding (character code -> glyph index), each glyph's
metrics (side bearings, advance, ascent, descent), the accelerators (the
font's ascent and descent), the bitmaps. Reading the first three is enough
to tell whether a character has a glyph and to measure a line of text
exactly as FreeType lays it out, without loading the font into FreeType:
a loaded face costs 1.2 to 2.2 MB of memory, the tables kept here about
300 KiB, and the device measures text at sizes it never draws.

Only the tables are read (by seeking), never the whole file; they are kept
as they are stored, in :mod:`array` objects (no Python object per glyph), so
reading a font takes about as long as FreeType takes to open it.
"""

from __future__ import annotations

import array
import gzip
import io
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

# PCF table types (from X11's pcf.h).
_PCF_ACCELERATORS = 1 << 1
_PCF_METRICS = 1 << 2
_PCF_BDF_ENCODINGS = 1 << 5
_PCF_BDF_ACCELERATORS = 1 << 8
# Format bits: integers are big-endian; metrics are compressed to 5 bytes.
_PCF_BYTE_MASK = 1 << 2
_PCF_COMPRESSED_METRICS = 0x100
_NO_GLYPH = 0xFFFF
_MAGIC = b"\x01fcp"

#: Numbers per glyph's metrics, in the order stored: left and right side bearing, advance, ascent, descent.
_FIELDS = 5

#: ``(width, height, x_offset, y_offset)`` as Pillow's ``font.getsize`` gives it.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PcfFont:
    """Which characters one PCF file has, and their glyphs' metrics."""

    min_b2: int
    max_b2: int
    min_b1: int
    max_b1: int
    #: glyph index of each code in the ranges above (0xFFFF: no glyph)
    indices: array.array
    #: five numbers per glyph, each plus :attr:`bias`: see :data:`_FIELDS`
    metrics: array.array
    #: what is added to each stored number (0x80 in compressed metrics tables, else 0)
    bias: int
    #: the glyph drawn for a character the font lacks (FreeType's glyph 0)
    default_glyph: int
    #: the font's ascent in pixels (the baseline's distance from the top of a line)
    ascent: int
    descent: int

    def glyph(self, char: str) -> int | None:
        """Glyph index of ``char``; None if the font has no glyph for it."""
        code = ord(char)
        if code > 0xFFFF:           # PCF codes are 16-bit: no astral glyphs
            return None
        b1, b2 = code >> 8, code & 0xFF
        if not (self.min_b1 <= b1 <= self.max_b1 and self.min_b2 <= b2 <= self.max_b2):
            return None
        found = self.indices[(b1 - self.min_b1) * (self.max_b2 - self.min_b2 + 1) + b2 - self.min_b2]
        return None if found == _NO_GLYPH or _FIELDS * found >= len(self.metrics) else found

    def has_glyph(self, char: str) -> bool:
        """Whether the font has a glyph of its own for ``char``."""
        return self.glyph(char) is not None

    def getbbox(self, text: str) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of ``text`` laid out one glyph after another.

        This is Pillow's ``FreeTypeFont.getbbox`` with anchor ``"la"`` (left,
        ascender) for text FreeType lays out glyph by glyph: each glyph
        advances the pen by its advance; the box spans the origin, every pen
        position and every glyph's ink box, measured down from the ascender
        line. PCF fonts have no kerning. A character the font lacks counts as
        the default glyph, as basic layout draws it (a shaper such as
        HarfBuzz may draw something else: see :func:`device.ui.fonts.measure_box`).
        """
        metrics, bias = self.metrics, self.bias
        # Positions are kept plus the bias (the stored numbers are), and it is
        # taken off at the end: pen - bias + (lsb + bias) is pen + lsb.
        pen = x_min = x_max = y_min = y_max = 0
        for char in text:
            found = self.glyph(char)
            base = _FIELDS * (self.default_glyph if found is None else found)
            lsb, rsb, advance, ascent, descent = metrics[base:base + _FIELDS]
            x_min = min(x_min, pen + lsb - bias)
            x_max = max(x_max, pen + rsb - bias, pen + advance - bias)
            y_max = max(y_max, ascent - bias)
            y_min = min(y_min, bias - descent)
            pen += advance - bias
        return x_min, self.ascent - y_max, x_max, self.ascent - y_min


def _open(path: str) -> BinaryIO:
    with open(path, "rb") as raw:
        packed = raw.read(2) == b"\x1f\x8b"   # fonts are often shipped as .pcf.gz
    if packed:
        with gzip.open(path, "rb") as unpacked:
            return io.BytesIO(unpacked.read())
    return open(path, "rb")         # the caller closes it


def _read(f: BinaryIO, offset: int, size: int) -> bytes:
    # A table's size in the table of contents may count padding past the
    # end of the file: what is really needed is checked where it is used.
    f.seek(offset)
    data = f.read(size)
    if len(data) < 4:
        raise ValueError("PCF table runs past the end of the file")
    return data


def read(path: str) -> PcfFont:
    """Read the encoding, metrics and accelerator tables of a PCF file.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not a PCF font or lacks one of the tables.
    """
    with _open(path) as f:
        head = f.read(8)
        if len(head) != 8 or head[:4] != _MAGIC:
            raise ValueError(f"{path} is not a PCF font")
        (count,) = struct.unpack_from("<i", head, 4)
        if not 0 < count < 64:
            raise ValueError(f"{path}: {count} PCF tables")
        toc = _read(f, 8, 16 * count)
        tables: dict[int, tuple[int, int]] = {}
        for i in range(count):
            kind, _fmt, size, offset = struct.unpack_from("<iiii", toc, 16 * i)
            tables[kind] = (offset, size)
        for needed in (_PCF_BDF_ENCODINGS, _PCF_METRICS):
            if needed not in tables:
                raise ValueError(f"{path} has no PCF table {needed}")
        accel_kind = _PCF_BDF_ACCELERATORS if _PCF_BDF_ACCELERATORS in tables else _PCF_ACCELERATORS
        if accel_kind not in tables:
            raise ValueError(f"{path} has no accelerator table")

        data = _read(f, *tables[_PCF_BDF_ENCODINGS])
        (fmt,) = struct.unpack_from("<i", data)
        order = ">" if fmt & _PCF_BYTE_MASK else "<"
        min_b2, max_b2, min_b1, max_b1, default_char = struct.unpack_from(order + "5h", data, 4)
        n = (max_b2 - min_b2 + 1) * (max_b1 - min_b1 + 1)
        indices = array.array("H")
        indices.frombytes(data[14:14 + 2 * n])
        if len(indices) != n:
            raise ValueError(f"{path}: encoding table is short")
        if (order == ">") != (sys.byteorder == "big"):
            indices.byteswap()
        del data

        metrics, bias = _glyph_metrics(_read(f, *tables[_PCF_METRICS]), path)

        data = _read(f, *tables[accel_kind])
        (fmt,) = struct.unpack_from("<i", data)
        order = ">" if fmt & _PCF_BYTE_MASK else "<"
        # format, 8 one-byte flags, then the font's ascent and descent
        if len(data) < 20:
            raise ValueError(f"{path}: accelerator table is short")
        ascent, descent = struct.unpack_from(order + "ii", data, 12)

    # FreeType makes the default character glyph 0 and draws it for any
    # character the font lacks; without a usable default, glyph 0 as it is.
    n_glyphs = len(metrics) // _FIELDS
    default_glyph = 0
    b1, b2 = default_char >> 8 & 0xFF, default_char & 0xFF
    if min_b1 <= b1 <= max_b1 and min_b2 <= b2 <= max_b2:
        index = indices[(b1 - min_b1) * (max_b2 - min_b2 + 1) + (b2 - min_b2)]
        if index < n_glyphs:
            default_glyph = index
    return PcfFont(min_b2, max_b2, min_b1, max_b1, indices, metrics, bias, default_glyph, ascent, descent)


def _glyph_metrics(data: bytes, path: str) -> tuple[array.array, int]:
    """Five numbers per glyph (lsb, rsb, advance, ascent, descent), as stored, and the bias added to each."""
    (fmt,) = struct.unpack_from("<i", data)
    order = ">" if fmt & _PCF_BYTE_MASK else "<"
    if fmt & _PCF_COMPRESSED_METRICS:   # five bytes a glyph, each a number plus 0x80
        (n,) = struct.unpack_from(order + "H", data, 4)
        if len(data) < 6 + 5 * n:
            raise ValueError(f"{path}: metrics table is short")
        packed = array.array("B")
        packed.frombytes(data[6:6 + 5 * n])
        return packed, 0x80
    (n,) = struct.unpack_from(order + "i", data, 4)
    if len(data) < 8 + 12 * n:
        raise ValueError(f"{path}: metrics table is short")
    wide = array.array("h")
    wide.frombytes(data[8:8 + 12 * n])
    if (order == ">") != (sys.byteorder == "big"):
        wide.byteswap()
    del wide[5::6]                      # the sixth number of each glyph is its attributes
    return wide, 0
