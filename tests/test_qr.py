"""QR codes: fitted to their square, always decodable, too long is an error."""

import pytest
import zxingcpp

from device.errors import QRFitError
from device.ui import qr

pytestmark = pytest.mark.timeout(30)

URL = "https://hcp.example.cn/w/0801"


def decode(image):
    return [r.text for r in zxingcpp.read_barcodes(image.convert("L"))]


def quiet_modules(image, module):
    """Width of the all-white border, in modules."""
    w, _ = image.size
    px = image.load()
    n = 0
    while n < w // 2 and all(px[n, y] for y in range(w)):
        n += 1
    return n // module


@pytest.mark.parametrize("max_px", [29, 40, 58, 62, 87, 100, 126])
def test_fits_decodes_and_has_a_quiet_zone(max_px):
    image = qr.qr_image(URL, max_px)
    fit = qr.qr_fit(URL, max_px)
    assert image.mode == "1" and image.size == (fit.side, fit.side)
    assert fit.side <= max_px
    assert decode(image) == [URL]
    assert quiet_modules(image, fit.module) >= fit.quiet >= 2
    assert image.getpixel((0, 0))           # white (lit) quiet zone


def test_prefers_2px_modules_and_strong_correction_when_there_is_room():
    assert qr.qr_fit(URL, 62).module == 2               # 128x64 panel
    roomy = qr.qr_fit(URL, 126)
    assert roomy.module >= 4
    assert qr.qr_fit("https://a.cn/1", 120).ec == "H"     # v2-H at 4 px
    assert qr.qr_fit("https://a.cn/1", 99).quiet == 4     # v2-H at 3 px


@pytest.mark.parametrize("max_px", range(29, 130, 7))
def test_strongest_correction_and_widest_quiet_zone_for_the_module(max_px):
    fit = qr.qr_fit(URL, max_px)
    levels = "HQML"
    for stronger in levels[:levels.index(fit.ec)]:
        matrix = qr._matrix(URL, stronger)
        assert matrix is not None
        n = len(matrix)
        assert (n + 4) * fit.module > max_px, f"{stronger} would fit"
    matrix = qr._matrix(URL, fit.ec)
    assert matrix is not None
    n = len(matrix)
    if fit.quiet < 4:
        assert (n + 2 * fit.quiet + 2) * fit.module > max_px


def test_module_size_never_shrinks_for_error_correction():
    for max_px in range(30, 127):
        fit = qr.qr_fit(URL, max_px)
        bigger = [qr.qr_fit(URL, max_px, min_module=m) for m in (fit.module + 1,)
                  if (qr.min_side(URL, m) or max_px + 1) <= max_px]
        assert not bigger, f"{max_px}: module {fit.module} though larger fits"


def test_one_pixel_modules_only_as_last_resort_and_still_decode():
    long_url = "https://hcp.example.gov.cn/evaluate?window=0801&session=a1b2c3"
    fit = qr.qr_fit(long_url, 62)
    assert fit.module == 1
    assert decode(qr.qr_image(long_url, 62)) == [long_url]
    with pytest.raises(QRFitError):
        qr.qr_fit(long_url, 62, min_module=2)


def test_encoded_once_then_cached():
    qr.qr_image.cache_clear()
    first = qr.qr_image(URL, 62)
    assert qr.qr_image(URL, 62) is first
    assert qr.qr_image.cache_info().hits == 1


def test_too_long_url_states_the_longest_that_fits():
    limit = qr.longest_url_for(62)
    assert qr.qr_fit("https://" + "x" * (limit - 8), 62)
    with pytest.raises(QRFitError) as info:
        qr.qr_image("https://" + "x" * (limit - 7), 62)
    assert f"at most {limit} characters" in str(info.value)


def test_longest_url_grows_with_space():
    lengths = [qr.longest_url_for(px) for px in (25, 29, 62, 126, 256)]
    assert lengths == sorted(lengths) and lengths[0] > 0
    assert qr.longest_url_for(62, min_module=2) == 32   # version 2-L: 32 bytes
    assert qr.longest_url_for(24) == 0
