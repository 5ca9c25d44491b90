"""What the screen shows for a state: a pure function to a screen model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from device import state as st
from device.levels import Level
from device.ui.models import (
    FOLLOWUP_MESSAGE,
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

if TYPE_CHECKING:
    from device.config import Config


@dataclass(frozen=True)
class Identity:
    """Who is serving at this window, and the window's QR code."""

    window_no: str
    window_name: str
    staff_name: str
    staff_no: str
    qr_url: str

    @classmethod
    def from_config(cls, config: Config) -> Identity:
        """Who serves here, from the ``[device]``, ``[staff]`` and ``[qr]`` settings."""
        return cls(config.device.window_no, config.device.window_name, config.staff.name,
                   config.staff.no, config.qr.url)


@dataclass(frozen=True)
class View:
    """What the view needs besides the state."""

    identity: Identity
    indicators: Indicators = field(default_factory=Indicators)
    #: The technician's lines (no secrets), read only while the service screen shows.
    service_lines: tuple[str, ...] = ()
    #: ``Rules.reasons_for``: the tags offered for a level.
    reasons: dict[Level, st.Reasons] = field(default_factory=dict)
    #: ``display.large_text``: prompt and thanks in large characters.
    large_text: bool = False


def view(state: st.State, info: View, now: float) -> Screen:
    """The screen model for ``state`` at monotonic time ``now``."""
    ident = info.identity
    if state.screen == st.SERVICE:
        return ServiceScreen(info.service_lines)
    if state.screen == st.REASONS and state.level is not None:
        seconds = max(0, int(state.screen_until - now + 0.999))
        return ReasonsScreen(state.level, info.reasons.get(state.level, ()), seconds)
    if state.screen == st.THANKS:
        # The state keeps the level only with show_level: None is the private thank-you.
        return ThanksScreen(state.level, large=info.large_text)
    if state.screen == st.PAUSED or state.storage_full:
        reason = state.fault or state.storage_full
        return PausedScreen(reason=_paused_text(reason), qr_url=state.later_qr or ident.qr_url)
    if state.screen == st.LATER:
        return LaterScreen(qr_url=state.later_qr or ident.qr_url)
    if state.screen == st.FOLLOWUP:
        return LaterScreen(qr_url=state.later_qr or ident.qr_url, message=FOLLOWUP_MESSAGE)
    if state.session is not None:
        seconds = max(0, int(state.session.deadline - now + 0.999))
        return PromptScreen(ident.window_no, ident.staff_name, seconds, state.session.ticket,
                            large=info.large_text)
    return IdleScreen(ident.window_no, ident.window_name, ident.staff_name, ident.staff_no,
                      ident.qr_url, info.indicators)


def _paused_text(reason: str) -> str:
    if "full" in reason:
        return "存储已满，评价暂停"
    return "评价暂停，请扫码评价"
