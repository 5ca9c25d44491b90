"""The printable 通报: an HTML page with inline SVG charts, printed to PDF by headless Chromium, rendered to
images with pdftoppm and compared with golden pages.

Golden pages are ``tests/golden/tongbao-2026-11-page-N.png``. After an intended change run
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_hall_tongbao.py``, look at the new pages, and commit
them (``docs/tongbao.png`` is page 1 at a higher resolution, refreshed the same way). Needs the Debian packages
``chromium poppler-utils fonts-wqy-zenhei`` (``make setup`` installs them).
"""

import os
import pathlib
import re
import subprocess

import hall_month
import pytest
from PIL import Image, ImageChops

from hall.report_csv import window_rows
from hall.tongbao import render_html, write_tongbao

pytestmark = pytest.mark.timeout(120)

GOLDEN = pathlib.Path(__file__).parent / "golden"
DOCS = pathlib.Path(__file__).parent.parent / "docs"
#: A page matches when at most this many of its pixels (100 dpi, grey) differ by more than :data:`LEVEL` grey
#: levels: room for anti-aliasing jitter; one changed digit in a table differs in about 17.
TOLERANCE = 8
LEVEL = 32
DPI = 100


@pytest.fixture(scope="module")
def november(tmp_path_factory):
    desk = hall_month.load_more(str(tmp_path_factory.mktemp("tongbao") / "hall.db"))
    try:
        yield desk.report("2026-11", hall_month.AS_OF)
    finally:
        desk.close()


def test_the_page_reads_the_same_data_as_the_text_and_csv(november):
    page = render_html(november)
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count("<svg") == 4  # 好评率 per window, levels, 差评 by reason, by matter
    # Every window row of the CSV view is a row of the page's window table, cell for cell.
    cells = re.findall(r"<tr>(.*?)</tr>", page.split("<h2>二、各窗口</h2>")[1].split("</table>")[0])
    shown = [found for row in cells if (found := re.findall(r"<td[^>]*>(.*?)</td>", row))]
    assert [row[:2] for row in shown] == [[r["hall"], r["window_no"]] for r in window_rows(november)]
    assert "区县合计" in page and "60.0%" in page and "反复被差评：1002 李四（2 条）" in page
    assert "内容与哈希不符" in page and "设备报告缺失" in page


def pages(pdf: pathlib.Path, resolution: int, gray: bool = True) -> list[Image.Image]:
    stem = pdf.with_name(f"page-{resolution}")
    subprocess.run(["pdftoppm", "-r", str(resolution), *(["-gray"] if gray else []), "-png", str(pdf), str(stem)],
                   check=True, timeout=60)
    return [Image.open(path).convert("L" if gray else "RGB")
            for path in sorted(pdf.parent.glob(f"page-{resolution}-*.png"))]


def differing(expected: Image.Image, actual: Image.Image) -> int:
    """How many pixels differ by more than :data:`LEVEL` grey levels."""
    return ImageChops.difference(expected, actual).point(lambda v: 255 if v > LEVEL else 0).histogram()[255]


def test_the_pdf_matches_the_golden_pages(november, tmp_path):
    _, pdf = write_tongbao(november, tmp_path)
    assert pdf is not None and pdf.read_bytes().startswith(b"%PDF")
    rendered = pages(pdf, DPI)
    assert len(rendered) == 2
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for n, page in enumerate(rendered, 1):
            page.save(GOLDEN / f"tongbao-2026-11-page-{n}.png")
        pages(pdf, 80, gray=False)[0].save(DOCS / "tongbao.png", optimize=True)
        return
    for n, page in enumerate(rendered, 1):
        path = GOLDEN / f"tongbao-2026-11-page-{n}.png"
        expected = Image.open(path).convert("L")
        assert expected.size == page.size, (n, expected.size, page.size)
        count = differing(expected, page)
        if count > TOLERANCE:
            page.save(path.with_name(path.stem + ".actual.png"))
        assert count <= TOLERANCE, f"page {n}: {count} pixels differ (actual saved beside the golden page)"
