"""What each screen shows: small frozen models, the input of ``render``.

The state machine's view turns device state into one of these; the render
functions turn one into an image. Equal models give equal frames, so the app
redraws only when the model changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from device.levels import Level


@dataclass(frozen=True)
class Indicators:
    """Small marks on the idle screen."""

    offline: bool = False       # the hall server has not answered lately
    backlog: int = 0            # events waiting in the outbox
    clock_unset: bool = False   # wall clock not synchronised yet
    storage_low: bool = False   # outbox near its limit


@dataclass(frozen=True)
class BootScreen:
    """Shown while the device starts: the product name, a message and the version."""

    version: str
    message: str = "启动中"


@dataclass(frozen=True)
class IdleScreen:
    """Between services: who serves at this window, its QR code and the indicators."""

    window_no: str
    window_name: str
    staff_name: str
    staff_no: str
    qr_url: str
    indicators: Indicators = field(default_factory=Indicators)


@dataclass(frozen=True)
class PromptScreen:
    """请您对本次服务进行评价, with the ticket and a countdown."""

    window_no: str
    staff_name: str
    seconds_left: int
    ticket: str = ""
    #: ``display.large_text``: large characters where the panel has room (device.ui.large).
    large: bool = False


@dataclass(frozen=True)
class ThanksScreen:
    """感谢您的评价, and the level chosen only when the hall shows levels.

    ``level`` None (the default, privacy at the counter) is one frame for
    every level: the press counted, and nobody watching learns how.
    """

    level: Level | None = None
    #: ``display.large_text``: large characters where the panel has room (device.ui.large).
    large: bool = False


@dataclass(frozen=True)
class ReasonsScreen:
    """After a 差评: up to four reason tags on buttons 1-4, button 5 = details QR."""

    level: Level
    reasons: tuple[tuple[str, str], ...] = ()   # ((code, text), ...) at most four
    seconds_left: int = 0


#: The later screen after an unrated session: rate on the phone.
LATER_MESSAGE = "扫码评价"
#: The later screen after every rating (privacy at the counter): add details on the phone.
FOLLOWUP_MESSAGE = "扫码补充意见"


@dataclass(frozen=True)
class LaterScreen:
    """A QR code for the phone: to rate later, or to add details after any rating."""

    qr_url: str
    ticket: str = ""
    message: str = LATER_MESSAGE


@dataclass(frozen=True)
class ServiceScreen:
    """Technician's screen: plain lines, never secrets."""

    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class PausedScreen:
    """Rating is paused (storage full, fault): say what, offer the QR code."""

    reason: str
    qr_url: str


#: Any screen model ``render`` accepts.
Screen = (BootScreen | IdleScreen | PromptScreen | ThanksScreen | ReasonsScreen | LaterScreen
          | ServiceScreen | PausedScreen)
