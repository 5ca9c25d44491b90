"""The month's printable 通报 (rules, 第十四条): an HTML page with charts, and its PDF.

Rendered from the report's data (:func:`~hall.report.build_report`) and
its columns (:mod:`hall.columns`), the same that the text and CSV views
read, so the three never disagree. Charts are inline SVG (no script, no
network): 好评率 per window, the levels of each hall and the district, and the
差评 by reason and by matter. The PDF is printed by headless Chromium
(Debian's ``chromium`` package) with the fonts of ``fonts-wqy-zenhei``.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hall import columns
from hall.columns import Column
from hall.levels import LEVEL_TEXT, LEVELS
from hall.report_csv import bad_rows, window_rows

#: Fill colours of the five levels, 非常满意 to 非常不满意 (tell apart in grey print too).
LEVEL_COLOURS = ("#1a7f37", "#7cc47f", "#c9c9c9", "#f0a04b", "#c0392b")
FONT = "'WenQuanYi Zen Hei', 'Noto Sans CJK SC', sans-serif"
CSS = f"""
@page {{ size: A4; margin: 14mm 12mm; }}
body {{ font-family: {FONT}; font-size: 10pt; color: #111; }}
h1 {{ font-size: 17pt; text-align: center; margin: 0 0 2mm; }}
p.sub {{ text-align: center; margin: 0 0 5mm; color: #444; }}
h2 {{ font-size: 12pt; border-bottom: 1.5px solid #333; margin: 6mm 0 2mm; padding-bottom: 1mm; }}
table {{ border-collapse: collapse; width: 100%; margin: 1mm 0 3mm; font-size: 8.5pt; }}
th, td {{ border: 0.6px solid #888; padding: 0.8mm 1.2mm; text-align: left; vertical-align: top;
          white-space: nowrap; }}
td.w {{ white-space: normal; }}
th {{ background: #eee; }}
td.n {{ text-align: right; }}
.figures {{ display: flex; gap: 4mm; }}
.figure {{ border: 0.6px solid #888; padding: 2mm 3mm; flex: 1; }}
.figure b {{ font-size: 14pt; display: block; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 4mm; }}
.chart {{ break-inside: avoid; }}
.note {{ color: #444; font-size: 8.5pt; }}
"""
RATE_COLUMNS = ("ratings", "good", "good_rate", "bad", "unrated", "unrated_rate", "suspect", "overturned",
                "flagged", "open_bad")


class RenderError(RuntimeError):
    """The PDF could not be printed (no Chromium, or it failed); the message says why."""


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _pick(table: Sequence[Column], keys: Iterable[str]) -> list[Column]:
    wanted = list(keys)
    found = {column.key: column for column in table}
    return [found[key] for key in wanted if key in found]


def html_table(table: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    """A table of ``rows`` with ``table``'s columns, titles and shown values (as the CSV has them)."""
    head = "".join(f"<th>{_e(c.title)}</th>" for c in table)
    body = []
    for row in rows:
        cells = []
        for column in table:
            value = column.value(row)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f"<td{' class=n' if number else ''}>{_e(column.cell(row))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        body.append(f"<tr><td colspan={len(table)}>无</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def bar_chart(title: str, bars: Sequence[tuple[str, float, str]], *, maximum: float | None = None,
              percent: bool = False, width: int = 330) -> str:
    """A horizontal bar chart as inline SVG: ``(label, value, shown text)`` per bar."""
    row_h, label_w, top = 18, 96, 22
    height = top + row_h * max(1, len(bars)) + 6
    top_value = maximum if maximum is not None else max([v for _, v, _ in bars] + [1])
    span = width - label_w - 50
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="{_e(FONT)}" font-size="10">',
             f'<text x="0" y="13" font-size="11" font-weight="bold">{_e(title)}</text>']
    if not bars:
        parts.append(f'<text x="0" y="{top + 12}">无</text>')
    for i, (label, value, shown) in enumerate(bars):
        y = top + i * row_h
        length = 0 if not top_value else span * value / top_value
        parts.append(f'<text x="{label_w - 4}" y="{y + 12}" text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{length:.1f}" height="{row_h - 6}" fill="#2f6db5"/>')
        parts.append(f'<text x="{label_w + length + 3:.1f}" y="{y + 12}">{_e(shown)}</text>')
    if percent:
        parts.append(f'<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{height - 4}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)


def level_chart(title: str, groups: Sequence[tuple[str, Mapping[str, int]]], width: int = 330) -> str:
    """Stacked bars of the five levels per group (a hall, the district), with a legend."""
    row_h, label_w, top = 20, 96, 22
    height = top + row_h * max(1, len(groups)) + 22
    span = width - label_w - 10
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="{_e(FONT)}" font-size="10">',
             f'<text x="0" y="13" font-size="11" font-weight="bold">{_e(title)}</text>']
    for i, (label, counts) in enumerate(groups):
        y = top + i * row_h
        total = sum(counts.values())
        parts.append(f'<text x="{label_w - 4}" y="{y + 13}" text-anchor="end">{_e(label)}</text>')
        x = float(label_w)
        for level, colour in zip(LEVELS, LEVEL_COLOURS, strict=True):
            share = span * counts.get(level, 0) / total if total else 0
            if share:
                parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{share:.1f}" height="{row_h - 6}" '
                             f'fill="{colour}" stroke="#fff" stroke-width="0.5"/>')
            x += share
    y = top + row_h * max(1, len(groups)) + 8
    x = 0.0
    for level, colour in zip(LEVELS, LEVEL_COLOURS, strict=True):
        parts.append(f'<rect x="{x:.0f}" y="{y}" width="9" height="9" fill="{colour}"/>')
        parts.append(f'<text x="{x + 12:.0f}" y="{y + 8}" font-size="9">{LEVEL_TEXT[level]}</text>')
        x += 14 + 11 * len(LEVEL_TEXT[level]) + 6
    parts.append("</svg>")
    return "".join(parts)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def render_html(data: Mapping[str, Any]) -> str:
    """The 通报 page for the report ``data``."""
    district = data["district"]
    windows = [row for row in window_rows(data) if row["window_no"] not in ("合计", "")]
    out = ["<!DOCTYPE html><html lang=zh-CN><head><meta charset=utf-8>",
           f"<title>好差评通报 {_e(data['month'])}</title><style>{CSS}</style></head><body>",
           f"<h1>政务服务“好差评”情况通报（{_e(data['month'])}）</h1>",
           f"<p class=sub>按中国时间统计，状态截至 {_e(data['as_of'])}。可疑评价、申诉撤销的评价和系统标记的记录另列，"
           "不计入任何数字。</p>",
           "<h2>一、总体情况</h2><div class=figures>"]
    for label, value in (("评价数", district["ratings"]), ("好评率", _rate(district["good_rate"])),
                         ("差评", district["bad"]), ("未评率", _rate(district["unrated_rate"])),
                         ("未整改差评", district["open_bad"])):
        out.append(f"<div class=figure>{_e(label)}<b>{_e(value)}</b></div>")
    out.append("</div><div class=charts>")
    out.append(bar_chart("各窗口好评率", [
        (f"{w['hall']}/{w['window_no']}", (w["good_rate"] or 0) * 100, _rate(w["good_rate"])) for w in windows],
        maximum=100, percent=True))
    out.append(level_chart("评价等级分布", [*((h["hall"], h["totals"]["counts"]) for h in data["halls"]),
                                          ("区县合计", district["counts"])]))
    out.append(bar_chart("差评原因（共性问题）", [(r["code"], r["count"], str(r["count"]))
                                           for r in data["bad_by_reason"]]))
    out.append(bar_chart("差评事项（共性问题）", [(r["matter"], r["count"], str(r["count"]))
                                           for r in data["bad_by_matter"]]))
    out.append("</div>")
    window_table = _pick(columns.WINDOWS, ("hall", "window_no", "departments", *RATE_COLUMNS))
    out.append("<h2>二、各窗口</h2>" + html_table(window_table, window_rows(data)))
    staff_table = _pick(columns.STAFF, ("staff_no", "staff_name", "windows", *RATE_COLUMNS, "praised",
                                        "repeated_bad"))
    out.append("<h2>三、工作人员</h2>" + html_table(staff_table, data["staff"]))
    praised = "、".join(f"{p['staff_no']} {p['staff_name']}" for p in data["staff"] if p["praised"]) or "无"
    repeated = "、".join(f"{p['staff_no']} {p['staff_name']}（{p['bad']} 条）"
                         for p in data["staff"] if p["repeated_bad"]) or "无"
    out.append(f"<p>表扬：{_e(praised)}。反复被差评：{_e(repeated)}。</p>")
    out.append("<h2>四、差评及整改</h2>")
    bad_table = _pick(columns.BAD, ("source", "no", "time", "hall", "window_no", "level_text", "staff_name",
                                    "reason_codes", "verdict_text", "deadline", "state_text", "reply_text"))
    out.append("<p class=note>整改期限为评价日起 10 个工作日（中国法定节假日和调休），答复期限为 5 个工作日。</p>")
    out.append(html_table(bad_table, bad_rows(data)))
    out.append("<h2>五、另列（不计入数字）</h2>")
    out.append("<p class=note>可疑评价</p>" + html_table(_pick(columns.SUSPECT, (
        "no", "time", "hall", "window_no", "level_text", "staff_name")), data["suspect"]))
    out.append("<p class=note>系统标记的记录（链断裂、冲突、缺失等）</p>" + html_table(
        _pick(columns.FLAGGED, ("time", "hall", "window_no", "device_id", "seq", "type", "flag_text", "detail")),
        data["flagged"]))
    out.append("</body></html>\n")
    return "".join(out)


def chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html_path: Path, pdf_path: Path, timeout_s: float = 120.0) -> Path:
    """Print ``html_path`` to ``pdf_path`` with headless Chromium.

    Raises:
        RenderError: no Chromium, or it failed or timed out.
    """
    browser = chromium()
    if browser is None:
        raise RenderError("找不到 chromium：apt-get install -y chromium fonts-wqy-zenhei（或用 --no-pdf）")
    with tempfile.TemporaryDirectory(prefix="tongbao-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   f"--user-data-dir={profile}", "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
                   f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"chromium 超过 {timeout_s:.0f} 秒未完成") from None
    if done.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise RenderError(f"chromium 打印失败（退出码 {done.returncode}）：{done.stderr.strip()[-300:]}")
    return pdf_path


def write_tongbao(data: Mapping[str, Any], directory: Path, pdf: bool = True) -> tuple[Path, Path | None]:
    """Write ``haochaping-YYYY-MM-tongbao.html`` (and ``.pdf``) into ``directory``.

    Raises:
        RenderError: the PDF was asked for and could not be printed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"haochaping-{data['month']}-tongbao"
    html_path = stem.with_suffix(".html")
    html_path.write_text(render_html(data), encoding="utf-8")
    if not pdf:
        return html_path, None
    return html_path, print_pdf(html_path, stem.with_suffix(".pdf"))
