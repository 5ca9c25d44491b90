"""Every screen as a pure function from its model to a 1-bit frame.

``render(model, size)`` picks the screen by the model's type. Each
``render_<name>`` only says what the screen shows and in which order of
importance; ``layout.py`` decides sizes and places, the same way for every
panel. No clock is read and nothing but the font files is opened, so equal
models always give equal frames (the app redraws only on change, and the
tests compare against golden PNGs).

Frames are mode ``"1"`` with 1 = lit pixel; on an OLED that is white.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from device.ui import fonts, large
from device.ui.blocks import BREAK, Block, Icons, Row, Text
from device.ui.layout import Layout, draw_layout, layout_screen
from device.ui.models import (
    BootScreen,
    IdleScreen,
    Indicators,
    LaterScreen,
    PausedScreen,
    PromptScreen,
    ReasonsScreen,
    Screen,
    ServiceScreen,
    ThanksScreen,
)

logger = logging.getLogger(__name__)

#: The prompt, with its natural break for two lines.
PROMPT_TEXT = "请您对本次服务" + BREAK + "进行评价"
THANKS_TEXT = "感谢您" + BREAK + "的评价"
#: The private thank-you's second line: the press counted, whatever the level (large text says the same).
RECEIVED_TEXT = large.RECEIVED_TEXT
REASONS_TITLE = "请选择原因"
DETAIL_HINT = "5 扫码填写"


#: A panel's ``(width, height)`` as laid out (after rotation).
Size = tuple[int, int]


def _checked(text: str, what: str) -> str:
    """``text`` after making sure the font can draw it (FontError if not)."""
    fonts.check_text(text, what)
    return text


def _window_line(window_no: str, window_name: str = "") -> str:
    line = f"{window_no}号窗口" if window_no else ""
    if window_name:
        line = f"{line} {BREAK}{window_name}" if line else window_name
    return line


def layout_boot(model: BootScreen, size: Size) -> Layout:
    """Layout of the boot screen."""
    blocks: list[Block] = [
        Text("好差评" + BREAK + "窗口评价器", align="center", headline=True,
             key="title"),
        Text(_checked(model.message, "boot.message"), max_size=14,
             align="center", key="message", group="info"),
        Text(_checked(f"版本 {model.version}", "version"), max_size=14,
             align="center", key="version", group="info"),
    ]
    return layout_screen(size, [blocks])


def _indicator_icons(ind: Indicators) -> tuple[str, ...]:
    icons = []
    if ind.offline:
        icons.append("offline")
    if ind.backlog:
        icons.append(f"backlog:{ind.backlog}")
    if ind.clock_unset:
        icons.append("clock")
    if ind.storage_low:
        icons.append("storage")
    return tuple(icons)


def layout_idle(model: IdleScreen, size: Size) -> Layout:
    """Layout of the idle screen: who serves at this window, and its QR."""
    window = Text(_checked(_window_line(model.window_no, model.window_name),
                           "window"), max_size=14, key="window", group="info")
    window_no = Text(_checked(_window_line(model.window_no), "window"),
                     max_size=14, key="window", group="info")
    staff = Text(_checked(model.staff_name, "staff.name"), headline=True,
                 key="staff_name")
    staff_no = Text(_checked(f"工号{model.staff_no}", "staff.no"),
                    max_size=14, key="staff_no", group="info")
    icons = Icons(_indicator_icons(model.indicators))
    variants: list[list[Block]] = [
        [window, staff, staff_no, icons],
        # A long name on a small panel: the window name goes first, then
        # the window number (it is on the counter sign anyway); the staff
        # name, number and the indicators always stay.
        [window_no, staff, staff_no, icons],
        [staff, staff_no, icons],
    ]
    return layout_screen(size, variants, qr_url=model.qr_url)


def layout_prompt(model: PromptScreen, size: Size) -> Layout:
    """Layout of the prompt: please rate, with ticket and countdown."""
    who = " ".join(p for p in (_window_line(model.window_no),
                               model.staff_name) if p)
    bottom = (Text(_checked(f"{model.ticket}号", "ticket"), key="ticket",
                   group="info"),
              Text(f"{max(0, model.seconds_left)}秒", align="right",
                   key="countdown", group="info"))
    blocks: list[Block] = [
        Text(_checked(who, "window/staff"), max_size=14, key="who",
             group="info"),
        Text(PROMPT_TEXT, align="center", headline=True, key="prompt"),
        Row(bottom if model.ticket else bottom[1:], key="status",
            group="info", mode="split"),
    ]
    return layout_screen(size, [blocks])


def layout_thanks(model: ThanksScreen, size: Size) -> Layout:
    """Layout of the thank-you screen: the level chosen, or (private) that it was received."""
    second = (Text(model.level.text, align="center", key="level") if model.level is not None
              else Text(RECEIVED_TEXT, align="center", key="received"))
    blocks: list[Block] = [
        Text(THANKS_TEXT, align="center", headline=True, key="thanks"),
        second,
    ]
    return layout_screen(size, [blocks])


def layout_reasons(model: ReasonsScreen, size: Size) -> Layout:
    """Layout of the reason tags after a 差评: tags on 1-4, details on 5."""
    tags = [Text(_checked(f"{n} {text}", f"reasons[{code}]"), max_size=14,
                 key=f"reason{n}", group="tags")
            for n, (code, text) in enumerate(model.reasons[:4], start=1)]
    title = Text(REASONS_TITLE, max_size=14, align="center", key="title",
                 group="title")
    hint_cells: tuple[Text, ...] = (Text(DETAIL_HINT, key="hint", group="tags"),)
    if model.seconds_left > 0:
        hint_cells += (Text(f"{model.seconds_left}秒", align="right",
                            key="countdown", group="tags"),)
    hint = Row(hint_cells, key="hint", group="tags", mode="split")
    rows = [Row(tuple(tags[i:i + 2]), key=f"tags{i // 2 + 1}", group="tags")
            for i in range(0, len(tags), 2)]
    variants: list[list[Block]] = [
        [title, *tags, hint],       # tall panels: one tag per line
        [title, *rows, hint],
        [*rows, hint],              # 128x64: two tags per line, no title
    ]
    return layout_screen(size, variants)


def layout_later(model: LaterScreen, size: Size) -> Layout:
    """Layout of the later screen: the session's QR code to rate by phone."""
    blocks: list[Block] = [Text(_checked(model.message, "later.message"), headline=True,
                   key="message")]
    if model.ticket:
        blocks.append(Text(_checked(f"{model.ticket}号", "ticket"),
                           max_size=14, key="ticket"))
    return layout_screen(size, [blocks], qr_url=model.qr_url)


def layout_service(model: ServiceScreen, size: Size) -> Layout:
    """Layout of the technician's service screen: plain lines."""
    texts = [Text(_checked(line, "service"), max_size=13, key=f"line{n}", group="lines")
             for n, line in enumerate(model.lines, start=1)]
    pairs = [Row(tuple(texts[i:i + 2]), key=f"lines{i // 2 + 1}", group="lines")
             for i in range(0, len(texts), 2)]
    variants: list[list[Block]] = [list(texts), list(pairs)]
    return layout_screen(size, variants)


def layout_paused(model: PausedScreen, size: Size) -> Layout:
    """Layout of the paused/fault screen: what is wrong, and the QR code."""
    blocks: list[Block] = [
        Text("暂停评价", headline=True, key="title"),
        Text(_checked(model.reason, "paused.reason"), max_size=14,
             key="reason", group="info"),
        Text("请扫码评价", max_size=14, key="hint", group="info"),
    ]
    return layout_screen(size, [blocks], qr_url=model.qr_url)


# Each function takes the model type it is filed under.
_LAYOUTS: dict[type, Callable[[Any, Size], Layout]] = {
    BootScreen: layout_boot,
    IdleScreen: layout_idle,
    PromptScreen: layout_prompt,
    ThanksScreen: layout_thanks,
    ReasonsScreen: layout_reasons,
    LaterScreen: layout_later,
    ServiceScreen: layout_service,
    PausedScreen: layout_paused,
}


def layout(model: Screen, size: Sequence[int]) -> Layout:
    """The layout of any screen model (for tests and tools).

    Raises:
        TypeError: not a screen model.
    """
    try:
        make = _LAYOUTS[type(model)]
    except KeyError:
        raise TypeError(f"not a screen model: {model!r}") from None
    return make(model, (size[0], size[1]))


def render(model: Screen, size: Sequence[int]) -> Image.Image:
    """Draw any screen model.

    Args:
        model: one of the dataclasses in ``device.ui.models``.
        size: ``(width, height)`` of the panel as laid out; a 128x64 panel
            mounted rotated by 90 or 270 degrees is ``(64, 128)``.

    Returns:
        PIL.Image.Image: mode ``"1"``, 1 = lit.

    Raises:
        TypeError: not a screen model.
        FontError: a text has a character the font lacks.
        QRFitError: a QR code URL is too long for this panel.
        LayoutError: the texts cannot fit even at 12 px.
    """
    if isinstance(model, PromptScreen | ThanksScreen) and model.large and large.has_room(size):
        return _render_large(model, (size[0], size[1])).copy()
    try:
        frame = _render_cached(model, (size[0], size[1]))
    except TypeError:  # an unhashable model (a list where a tuple belongs): draw it anyway
        return draw_layout(layout(model, size))
    # A copy: the cached frame must never be changed by whoever draws on it next.
    return frame.copy()


@functools.lru_cache(maxsize=64)
def _render_cached(model: Screen, size: Size) -> Image.Image:
    # Screens are pure functions of frozen models: the thank-you frames, the
    # countdown seconds and the idle screen are drawn once, then reused.
    return draw_layout(layout(model, size))


@functools.lru_cache(maxsize=16)
def _render_large(model: PromptScreen | ThanksScreen, size: Size) -> Image.Image:
    # display.large_text (device.ui.large): drawn once per model, like the other frames.
    return large.render(model, size)


def render_boot(model: BootScreen, size: Sequence[int]) -> Image.Image:
    """Boot screen: product name, message, firmware version."""
    return draw_layout(layout_boot(model, (size[0], size[1])))


def render_idle(model: IdleScreen, size: Sequence[int]) -> Image.Image:
    """Idle screen: window, staff name and number, window QR, indicators."""
    return draw_layout(layout_idle(model, (size[0], size[1])))


def render_prompt(model: PromptScreen, size: Sequence[int]) -> Image.Image:
    """Prompt screen: 请您对本次服务进行评价, ticket, seconds left."""
    return draw_layout(layout_prompt(model, (size[0], size[1])))


def render_thanks(model: ThanksScreen, size: Sequence[int]) -> Image.Image:
    """Thank-you screen: 感谢您的评价 and the level chosen (or, private, 提交成功)."""
    return draw_layout(layout_thanks(model, (size[0], size[1])))


def render_reasons(model: ReasonsScreen, size: Sequence[int]) -> Image.Image:
    """Reasons screen: tags 1-4, 5 for the details QR code."""
    return draw_layout(layout_reasons(model, (size[0], size[1])))


def render_later(model: LaterScreen, size: Sequence[int]) -> Image.Image:
    """Later screen: the session QR code to rate on the phone."""
    return draw_layout(layout_later(model, (size[0], size[1])))


def render_service(model: ServiceScreen, size: Sequence[int]) -> Image.Image:
    """Service screen: the technician's lines."""
    return draw_layout(layout_service(model, (size[0], size[1])))


def render_paused(model: PausedScreen, size: Sequence[int]) -> Image.Image:
    """Paused screen: why rating is paused, and the QR code instead."""
    return draw_layout(layout_paused(model, (size[0], size[1])))
