"""QR codes fitted to the space a screen gives them.

A QR code on a small OLED is only useful if a phone can read it, so the code
is never scaled by a fractional factor (that blurs modules into each other):
each module is a whole number of pixels, and the version, error correction
and quiet zone are chosen so the whole code fits the square it is given.
A URL that cannot fit is a configuration error (:class:`QRFitError`), not a
smaller, unreadable code.

Encoding is cached: a screen is redrawn often, the URL rarely changes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import qrcode
from PIL import Image
from qrcode.exceptions import DataOverflowError

from device.errors import QRFitError

logger = logging.getLogger(__name__)

# Most robust first: a scratched or dim screen loses modules like paper does.
_EC_LEVELS = (
    ("H", qrcode.constants.ERROR_CORRECT_H),
    ("Q", qrcode.constants.ERROR_CORRECT_Q),
    ("M", qrcode.constants.ERROR_CORRECT_M),
    ("L", qrcode.constants.ERROR_CORRECT_L),
)

#: Quiet zone widths in modules, preferred first. The standard asks for 4;
#: readers cope with 2, and on a small panel 2 often buys a bigger module.
QUIET_ZONES = (4, 3, 2)

#: Module size (px) below which a code is a last resort.
PREFERRED_MIN_MODULE = 2

#: Dark modules of a code, row by row, without the quiet zone.
_Matrix = tuple[tuple[bool, ...], ...]


@dataclasses.dataclass(frozen=True)
class QRFit:
    """How a URL is drawn in a given space.

    Attributes:
        module: pixels per module.
        ec: error correction level, one of ``"H" "Q" "M" "L"``.
        version: QR version (1..40).
        quiet: quiet zone width in modules.
        side: total side in pixels, quiet zone included.
    """

    module: int
    ec: str
    version: int
    quiet: int
    side: int


@functools.lru_cache(maxsize=64)
def _matrix(url: str, ec: str) -> _Matrix | None:
    """The module matrix (no quiet zone) for ``url`` at level ``ec``, or None."""
    code = qrcode.QRCode(version=None, error_correction=dict(_EC_LEVELS)[ec],
                         box_size=1, border=0)
    code.add_data(url)
    try:
        code.make(fit=True)
    except (DataOverflowError, ValueError):
        return None             # longer than version 40 holds at this level
    return tuple(tuple(bool(cell) for cell in row) for row in code.get_matrix())


def _draw(matrix: _Matrix, module: int, quiet: int) -> Image.Image:
    """Black modules on a white (lit) square, quiet zone included."""
    n = len(matrix)
    side = (n + 2 * quiet) * module
    small = Image.new("1", (n + 2 * quiet,) * 2, 255)
    pixels = small.load()
    assert pixels is not None   # an image made in memory always has pixel access
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if dark:
                pixels[x + quiet, y + quiet] = 0
    # NEAREST keeps every module a crisp block of whole pixels.
    return small.resize((side, side), Image.Resampling.NEAREST)


def _decodes(url: str, matrix: _Matrix, module: int, quiet: int) -> bool:
    """Whether an independent decoder reads the code; True if none installed."""
    try:
        import zxingcpp  # noqa: PLC0415 -- optional: verifies 1 px codes where installed
    except ImportError:
        logger.debug("zxing-cpp not installed; 1 px QR code not verified")
        return True
    image = _draw(matrix, module, quiet).convert("L")
    return any(r.text == url for r in zxingcpp.read_barcodes(image))


@functools.lru_cache(maxsize=1024)
def _try_fit(url: str, max_px: int, min_module: int) -> QRFit | None:
    for module in range(max_px // 21, min_module - 1, -1):
        for ec, _ in _EC_LEVELS:
            matrix = _matrix(url, ec)
            if matrix is None:
                continue
            n = len(matrix)
            for quiet in QUIET_ZONES:
                side = (n + 2 * quiet) * module
                if side > max_px:
                    continue
                if module < PREFERRED_MIN_MODULE and not _decodes(
                        url, matrix, module, quiet):
                    continue
                return QRFit(module, ec, (n - 17) // 4, quiet, side)
    return None


def min_side(url: str, module: int) -> int | None:
    """Smallest square (px) that shows ``url`` with ``module`` px modules.

    Uses the weakest error correction and the narrowest quiet zone; None if
    the URL is too long for any QR code.
    """
    matrix = _matrix(url, "L")
    if matrix is None:
        return None
    return (len(matrix) + 2 * min(QUIET_ZONES)) * module


def qr_fit(url: str, max_px: int, min_module: int = 1) -> QRFit:
    """Choose module size, error correction and quiet zone for a square.

    Bigger modules come first (they decide whether a phone reads a small
    screen), then stronger error correction, then a wider quiet zone.

    Args:
        url: the text to encode.
        max_px: side of the square available, in pixels.
        min_module: smallest module size allowed, in pixels.

    Returns:
        QRFit: the chosen parameters.

    Raises:
        QRFitError: the URL does not fit, stating the longest that would.
    """
    fit = _try_fit(url, max_px, min_module)
    if fit is None:
        limit = longest_url_for(max_px, min_module)
        raise QRFitError(
            f"QR code URL is {len(url.encode('utf-8'))} bytes, too long for "
            f"a {max_px}x{max_px} px QR code: this display can show a URL of "
            f"at most {limit} characters ({url!r})")
    if fit.module < PREFERRED_MIN_MODULE:
        logger.warning(
            "QR code for %r uses %d px modules in %d px; phones read it only "
            "up close (a URL of at most %d characters gets %d px modules)",
            url, fit.module, max_px,
            longest_url_for(max_px, PREFERRED_MIN_MODULE),
            PREFERRED_MIN_MODULE)
    return fit


@functools.lru_cache(maxsize=64)
def qr_image(url: str, max_px: int, min_module: int = 1) -> Image.Image:
    """The QR code for ``url``, as large as fits in ``max_px`` square.

    Args:
        url: the text to encode.
        max_px: side of the square available, in pixels.
        min_module: smallest module size allowed, in pixels.

    Returns:
        PIL.Image.Image: mode ``"1"``, square, black (0) modules on white (1)
        including the quiet zone. On an OLED white is lit, so the screen shows
        a lit square with dark modules, which is what phone readers expect.

    Raises:
        QRFitError: the URL cannot fit.
    """
    fit = qr_fit(url, max_px, min_module)
    matrix = _matrix(url, fit.ec)
    assert matrix is not None    # qr_fit found one at this level
    image = _draw(matrix, fit.module, fit.quiet)
    logger.debug("QR %r: %s", url, fit)
    return image


@functools.lru_cache(maxsize=64)
def longest_url_for(max_px: int, min_module: int = 1) -> int:
    """The longest URL (in ASCII characters) a square of ``max_px`` can show.

    Measured with lowercase letters, which need the QR byte mode like any
    ordinary URL (an all-uppercase URL can be somewhat longer), at the
    weakest error correction and the narrowest quiet zone.

    Args:
        max_px: side of the square available, in pixels.
        min_module: smallest module size allowed, in pixels.

    Returns:
        int: the length; 0 if not even one character fits.
    """
    modules = max_px // min_module - 2 * min(QUIET_ZONES)
    max_version = min(40, (modules - 17) // 4)
    if max_version < 1:
        return 0

    def fits(length: int) -> bool:
        code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_L)
        code.add_data(("https://" + "x" * length)[:length])
        try:
            # best_fit only sizes the data; no masks are evaluated.
            return code.best_fit() <= max_version
        except DataOverflowError:
            return False

    low, high = 0, 2953         # 2953 bytes: version 40-L, the QR maximum
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
