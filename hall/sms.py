"""Text messages to citizens (rules, 第八条: 服务办理完毕后系统会以短信方式提醒企业或群众评价).

The hall sends through a :class:`SmsGateway`: a real hall plugs in its
operator's or its province's SMS platform; :class:`RecordingGateway` is the
stand-in that keeps every message for tests and demos. A gateway raises
:class:`SmsError` when a message cannot be sent; the hall then tries again on
the next occasion and never sends one service's reminder twice.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Protocol

#: A mainland mobile number: 11 digits starting with 1 (an optional +86 or 86 in front is dropped).
_MOBILE = re.compile(r"(?:\+?86)?(1\d{10})")


class SmsError(Exception):
    """A message could not be sent (the gateway refused it, or could not be reached)."""


def normalise_mobile(value: str) -> str | None:
    """The 11-digit number in ``value`` (spaces and dashes ignored), or None when it is not a mobile number."""
    match = _MOBILE.fullmatch(re.sub(r"[\s-]", "", value or ""))
    return match.group(1) if match else None


def masked(mobile: str) -> str:
    """The number as logs and pages may show it: ``138****5678``."""
    return f"{mobile[:3]}****{mobile[-4:]}" if len(mobile) >= 7 else "****"


class SmsGateway(Protocol):
    """Where the hall's text messages go."""

    def send(self, mobile: str, text: str) -> None:
        """Send ``text`` to ``mobile`` (11 digits).

        Raises:
            SmsError: it was not sent.
        """


@dataclasses.dataclass(frozen=True)
class SentMessage:
    """One message as the stand-in gateway received it."""

    mobile: str
    text: str


class RecordingGateway:
    """The stand-in gateway: keeps every message (thread-safe); ``fail`` makes the next sends raise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[SentMessage] = []
        self.fail = False

    def send(self, mobile: str, text: str) -> None:
        if self.fail:
            raise SmsError("stand-in gateway set to fail")
        with self._lock:
            self._sent.append(SentMessage(mobile, text))

    @property
    def sent(self) -> list[SentMessage]:
        """Every message sent so far, in order."""
        with self._lock:
            return list(self._sent)
