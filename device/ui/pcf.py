"""The few tables of a PCF bitmap font the device reads itself.

A PCF file (X11's compiled bitmap font format) holds a table of contents
and tables: the encoding (character code -> glyph index), each glyph's
metrics (side bearings, advance, ascent, descent), the accelerators (the
font's ascent and descent), the bitmaps. Reading the first three is enough
to tell whether a character has a glyph and to measure a line of text
exactly as FreeType lays it out, without loading the font into FreeType:
a loaded face costs 1.2 to 2 MB of memory, the tables kept here about a
fifth of that, and the device measures text at sizes it never draws.

Only the tables are read (by seeking), never the whole file, and the
numbers are kept in :mod:`array` objects, not in tuples of ints.
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

#: Fields of one glyph's metrics, in the order they are stored here.
LSB, RSB, ADVANCE, ASCENT, DESCENT = range(5)
_FIELDS = 5

#: ``(width, height, x_offset, y_offset)`` as Pillow's ``font.getsize`` gives it.
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PcfFont:
    """Which characters one PCF file has, and their metrics.

    Glyphs of a bitmap font share a few hundred distinct metrics (every
    Chinese character of a size has the same), so each code maps to a
    metrics class, and rows of 256 codes that map alike (a row of Chinese
    characters, a row the font lacks) are kept once: 15 to 60 KiB a font,
    where a table per glyph would take five bytes for each of 30,000 glyphs.
    """

    min_b2: int
    max_b2: int
    min_b1: int
    max_b1: int
    #: for each first byte of a code (from ``min_b1``), which row of :attr:`blocks` it uses
    rows: array.array
    #: rows of metrics classes, one per second byte of a code (from ``min_b2``; 0xFFFF: no glyph)
    blocks: array.array
    #: five signed numbers per class: see :data:`LSB` ... :data:`DESCENT`
    metrics: array.array
    #: class of the glyph drawn for a character the font lacks (FreeType's glyph 0)
    default_class: int
    #: the font's ascent in pixels (the baseline's distance from the top of a line)
    ascent: int
    descent: int

    def metrics_class(self, char: str) -> int | None:
        """Metrics class of ``char``'s glyph; None if the font has no glyph for it."""
        code = ord(char)
        if code > 0xFFFF:           # PCF codes are 16-bit: no astral glyphs
            return None
        b1, b2 = code >> 8, code & 0xFF
        if not (self.min_b1 <= b1 <= self.max_b1 and self.min_b2 <= b2 <= self.max_b2):
            return None
        found = self.blocks[self.rows[b1 - self.min_b1] * (self.max_b2 - self.min_b2 + 1) + b2 - self.min_b2]
        return None if found == _NO_GLYPH else found

    def has_glyph(self, char: str) -> bool:
        """Whether the font has a glyph of its own for ``char``."""
        return self.metrics_class(char) is not None

    def glyph_metrics(self, char: str) -> tuple[int, int, int, int, int]:
        """``(lsb, rsb, advance, ascent, descent)`` of the glyph drawn for ``char``."""
        found = self.metrics_class(char)
        base = _FIELDS * (self.default_class if found is None else found)
        lsb, rsb, advance, ascent, descent = self.metrics[base:base + _FIELDS]
        return lsb, rsb, advance, ascent, descent

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
        metrics = self.metrics
        pen = x_min = x_max = y_min = y_max = 0
        for char in text:
            found = self.metrics_class(char)
            base = _FIELDS * (self.default_class if found is None else found)
            lsb, rsb, advance, ascent, descent = metrics[base:base + _FIELDS]
            x_min = min(x_min, pen + lsb)
            x_max = max(x_max, pen + rsb, pen + advance)
            y_max = max(y_max, ascent)
            y_min = min(y_min, -descent)
            pen += advance
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

        glyph_class, values = _glyph_classes(_read(f, *tables[_PCF_METRICS]), path)

        data = _read(f, *tables[accel_kind])
        (fmt,) = struct.unpack_from("<i", data)
        order = ">" if fmt & _PCF_BYTE_MASK else "<"
        # format, 8 one-byte flags, then the font's ascent and descent
        if len(data) < 20:
            raise ValueError(f"{path}: accelerator table is short")
        ascent, descent = struct.unpack_from(order + "ii", data, 12)

    # One class per distinct metrics; each code points at its glyph's class.
    n_glyphs = len(glyph_class)
    classes = array.array("H", (glyph_class[g] if g < n_glyphs else _NO_GLYPH for g in indices))
    del indices
    # Rows that map alike are kept once.
    width = max_b2 - min_b2 + 1
    row_of: dict[bytes, int] = {}
    rows = array.array("H", (row_of.setdefault(classes[i:i + width].tobytes(), len(row_of))
                             for i in range(0, len(classes), width)))
    blocks = array.array("H")
    for row in row_of:
        blocks.frombytes(row)
    metrics = array.array("b" if all(-128 <= v < 128 for v in values) else "h", values)

    # FreeType makes the default character glyph 0 and draws it for any
    # character the font lacks; without a usable default, glyph 0 as it is.
    default_class = glyph_class[0] if n_glyphs else 0
    b1, b2 = default_char >> 8 & 0xFF, default_char & 0xFF
    if min_b1 <= b1 <= max_b1 and min_b2 <= b2 <= max_b2:
        index = classes[(b1 - min_b1) * width + (b2 - min_b2)]
        if index != _NO_GLYPH:
            default_class = index
    return PcfFont(min_b2, max_b2, min_b1, max_b1, rows, blocks, metrics, default_class, ascent, descent)


def _glyph_classes(data: bytes, path: str) -> tuple[array.array, list[int]]:
    """Each glyph's metrics class, and the five numbers of each class.

    Read from the metrics table's bytes without a Python object per glyph:
    reading the tables must not leave more memory behind than it keeps.

    Returns:
        ``(class of each glyph, [lsb, rsb, advance, ascent, descent of class 0, of class 1, ...])``.
    """
    (fmt,) = struct.unpack_from("<i", data)
    order = ">" if fmt & _PCF_BYTE_MASK else "<"
    compressed = bool(fmt & _PCF_COMPRESSED_METRICS)
    if compressed:                  # five bytes a glyph, each a number plus 0x80
        (n,) = struct.unpack_from(order + "H", data, 4)
        start, step, size = 6, 5, 5
    else:                           # six int16 a glyph, the sixth its attributes
        (n,) = struct.unpack_from(order + "i", data, 4)
        start, step, size = 8, 12, 10
    if len(data) < start + step * n:
        raise ValueError(f"{path}: metrics table is short")
    class_of: dict[bytes, int] = {}
    glyph_class = array.array("H", (class_of.setdefault(data[i:i + size], len(class_of))
                                    for i in range(start, start + step * n, step)))
    if len(class_of) >= _NO_GLYPH:
        raise ValueError(f"{path}: too many distinct glyph metrics")
    if compressed:
        return glyph_class, [b - 0x80 for key in class_of for b in key]
    return glyph_class, [v for key in class_of for v in struct.unpack(order + "5h", key)]
