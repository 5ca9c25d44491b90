"""Large text (``display.large_text``): the prompt and the thank-you in big characters.

For citizens who cannot read 12-16 px characters. The bitmap font is crisp
only at its native sizes (12-16 px), so large characters are native glyphs
drawn at twice their size, pixel for pixel (30-32 px characters), as sharp
as the small ones, only bigger. Only panels with room get them
(:func:`has_room`: 256x64 and 128x128); on a 128x64 panel the usual screens
show, because the prompt would not fit.

What is shown is the same as on the usual screens, fewer words per line:

- prompt, 256x64: 请您对本次服务 / 进行评价, the seconds left small at the right;
- prompt, 128x128: 请您对 / 本次服务 / 进行评价, the seconds left small below;
- thanks: 感谢您的评价 and 提交成功 (or the level, where the hall shows levels),
  one line less on the wide panel.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from device.ui import fonts
from device.ui.layout import SAFE_MARGIN
from device.ui.models import PromptScreen, ThanksScreen
from device.ui.typeset import measure

#: How much the glyphs are enlarged.
SCALE = 2
#: The smallest native size enlarged (28 px characters); below it the line is shown small.
MIN_BASE = 14
#: Size of the small lines (the countdown; a level's name too long to enlarge).
SMALL = 16
#: The thank-you's second line when the level is not shown (as on the usual screen).
RECEIVED_TEXT = "提交成功"


def has_room(size: Sequence[int]) -> bool:
    """Whether a panel of ``size`` (after rotation) fits the large prompt: 256x64, 128x128 and larger."""
    width, height = size[0], size[1]
    return (width >= 256 and height >= 64) or (width >= 128 and height >= 128)


def _glyphs(text: str, size: int) -> Image.Image:
    """``text`` in the bitmap font at native ``size``, cropped to its ink box's height."""
    left, top, width, height = measure(text, size)
    image = Image.new("1", (max(1, width), max(1, height)), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    draw.text((-left, -top), text, font=fonts.load_font(size), fill=255)
    return image


def _big(text: str, base: int) -> Image.Image:
    """``text`` at native size ``base``, enlarged :data:`SCALE` times, pixel for pixel."""
    small = _glyphs(text, base)
    return small.resize((small.width * SCALE, small.height * SCALE), Image.Resampling.NEAREST)


def _fit(size: tuple[int, int], texts: Sequence[str], small_rows: int) -> list[Image.Image] | None:
    """``texts`` enlarged from the largest native size at which they fit with ``small_rows`` below them.

    None when even :data:`MIN_BASE` glyphs enlarged do not fit.
    """
    width, height = size[0] - 2 * SAFE_MARGIN, size[1] - 2 * SAFE_MARGIN
    for base in sorted((s for s in fonts.SIZES if s >= MIN_BASE), reverse=True):
        lines = [_big(t, base) for t in texts]
        rows = len(lines) + small_rows
        need = sum(line.height for line in lines) + small_rows * SMALL + 2 * (rows - 1)
        if max(line.width for line in lines) <= width and need <= height:
            return lines
    return None


def _lines(size: tuple[int, int], texts: Sequence[str], small: str) -> list[Image.Image]:
    """``texts`` large; ``small`` too where it fits, else in small characters below them."""
    lines = _fit(size, [*texts, small], 0)
    if lines is not None:
        return lines
    return [*(_fit(size, texts, 1) or [_glyphs(t, SMALL) for t in texts]), _glyphs(small, SMALL)]


def _stack(size: tuple[int, int], lines: Sequence[Image.Image], corner: Image.Image | None = None,
           corner_below: bool = False) -> Image.Image:
    """Lines centred on the panel, one below the other; ``corner`` (the countdown) small.

    ``corner`` goes at the right end of the last line, or (``corner_below``) on a line of its own.
    """
    frame = Image.new("1", size, 0)
    width, height = size[0] - 2 * SAFE_MARGIN, size[1] - 2 * SAFE_MARGIN
    rows = list(lines) + ([corner] if corner is not None and corner_below else [])
    total = sum(r.height for r in rows)
    gap = max(0, min(6, (height - total) // (len(rows) + 1)))
    y = SAFE_MARGIN + max(0, (height - total - gap * (len(rows) - 1)) // 2)
    for row in rows:
        frame.paste(row, (SAFE_MARGIN + max(0, (width - row.width) // 2), y))
        y += row.height + gap
    if corner is not None and not corner_below:
        # bottom-aligned with the last line, at the right edge
        frame.paste(corner, (SAFE_MARGIN + width - corner.width, y - gap - corner.height))
    return frame


def render_prompt(model: PromptScreen, size: tuple[int, int]) -> Image.Image:
    """The prompt in large characters, with the seconds left."""
    seconds = _glyphs(f"{max(0, model.seconds_left)}秒", SMALL)
    if size[0] >= 256:
        texts, below = ["请您对本次服务", "进行评价"], False
    else:
        texts, below = ["请您对", "本次服务", "进行评价"], True
    lines = _fit(size, texts, 1 if below else 0) or [_glyphs(t, SMALL) for t in texts]
    return _stack(size, lines, seconds, corner_below=below)


def render_thanks(model: ThanksScreen, size: tuple[int, int]) -> Image.Image:
    """The thank-you in large characters: the same frame for every level unless the hall shows levels."""
    second = model.level.text if model.level is not None else RECEIVED_TEXT
    texts = ["感谢您的评价"] if size[0] >= 256 else ["感谢您", "的评价"]
    return _stack(size, _lines(size, texts, second))


def render(model: PromptScreen | ThanksScreen, size: tuple[int, int]) -> Image.Image:
    """The large frame for ``model`` (a panel with room; see :func:`has_room`)."""
    if isinstance(model, PromptScreen):
        return render_prompt(model, size)
    return render_thanks(model, size)
