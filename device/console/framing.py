"""Splitting the port's bytes into command lines and Improv frames.

One port carries two protocols, told apart by the first bytes of a line:
a line that starts with ``IMPROV`` is an Improv frame, anything else a
command line. Garbage becomes a :class:`Problem` item, never an exception,
so that nothing a cable can carry stops the console.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.console import improv
from device.errors import ImprovError

#: Longest command line in bytes; longer ones are refused as a whole.
MAX_LINE = 512
#: A frame not complete this long after its last byte is dropped.
FRAME_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Line:
    """A command line as typed, trimmed (never empty)."""

    text: str


@dataclass(frozen=True)
class Problem:
    """Input refused: ``code`` becomes the answer's ``error``, ``message`` its text."""

    code: str
    message: str


#: What :meth:`Splitter.feed` hands out.
Item = Line | improv.Frame | Problem

_CR, _LF, _BS, _DEL = 13, 10, 8, 127


class Splitter:
    """Turns the port's bytes into :class:`Line`, :class:`~device.console.improv.Frame` and :class:`Problem`.

    A line that starts with ``IMPROV`` is a frame: its length byte says
    where it ends, so binary data (even newlines) inside it is fine. A frame
    whose checksum fails, or that is not complete ``frame_timeout`` seconds
    after its last byte, is dropped with a problem; the bytes after its first
    newline are read again, so a command line that followed a half frame is
    not lost. Lines longer than ``max_line`` bytes, lines that are not UTF-8
    and lines with control characters become problems too. Backspace edits
    the line, for people typing in a terminal.

    Pure apart from its buffer: time comes in as ``now``.
    """

    def __init__(self, max_line: int = MAX_LINE, frame_timeout: float = FRAME_TIMEOUT_S) -> None:
        self.max_line = max_line
        self.frame_timeout = frame_timeout
        self._buf = bytearray()
        self._mode = "line"        # "line", "frame" or "discard" (rest of an overlong line)
        self._last = 0.0           # when the frame's last byte came
        self._input = bytearray()  # bytes waiting to be looked at (incl. re-read ones)

    @property
    def idle(self) -> bool:
        """True when no line or frame is half read."""
        return not self._buf and self._mode == "line" and not self._input

    def feed(self, data: bytes, now: float) -> list[Item]:
        """Take bytes; return the items completed by them (and by timeouts)."""
        out = self.poll(now)
        self._input += data
        self._drain(now, out)
        return out

    def poll(self, now: float) -> list[Item]:
        """Items due to time alone: a half frame that timed out."""
        out: list[Item] = []
        if self._mode == "frame" and now - self._last >= self.frame_timeout:
            raw = bytes(self._buf)
            self._reset()
            out.append(Problem("half_frame", f"incomplete Improv frame ({len(raw)} bytes) dropped"))
            self._reread_after_newline(raw)
            self._drain(now, out)
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._mode = "line"

    def _reread_after_newline(self, raw: bytes) -> None:
        cut = raw.find(b"\n", len(improv.HEADER))
        if cut >= 0:
            self._input[0:0] = raw[cut + 1:]

    def _drain(self, now: float, out: list[Item]) -> None:
        while self._input:
            if self._mode != "frame":
                self._byte(self._input.pop(0), now, out)
                continue
            # Take as much of the frame as has arrived in one step; the length
            # byte (the last of the prefix) says where the frame ends.
            have = len(self._buf)
            need = improv.frame_length(self._buf) if have >= improv.PREFIX_LEN else improv.PREFIX_LEN
            self._buf += self._input[:need - have]
            del self._input[:need - have]
            self._last = now
            if len(self._buf) > improv.PREFIX_LEN and len(self._buf) == improv.frame_length(self._buf):
                self._finish_frame(out)

    def _byte(self, b: int, now: float, out: list[Item]) -> None:
        if self._mode == "discard":
            if b in (_CR, _LF):
                self._mode = "line"
            return
        if b in (_CR, _LF):
            if self._buf:
                item = self._line(bytes(self._buf))
                self._buf.clear()
                if item is not None:
                    out.append(item)
            return
        if b in (_BS, _DEL) and self._buf and not improv.HEADER.startswith(self._buf):
            # Drop the last character, not just its last UTF-8 byte.
            while self._buf and 0x80 <= self._buf[-1] < 0xC0:
                self._buf.pop()
            if self._buf:
                self._buf.pop()
            return
        self._buf.append(b)
        if len(self._buf) <= len(improv.HEADER) and improv.HEADER.startswith(self._buf):
            if len(self._buf) == len(improv.HEADER):
                self._mode = "frame"
                self._last = now
            return
        if len(self._buf) > self.max_line:
            out.append(Problem("line_too_long", f"line longer than {self.max_line} bytes ignored"))
            self._buf.clear()
            self._mode = "discard"

    def _finish_frame(self, out: list[Item]) -> None:
        raw = bytes(self._buf)
        self._reset()
        try:
            out.append(improv.decode_frame(raw))
        except ImprovError as e:
            out.append(Problem("bad_frame", f"{e}; frame dropped"))
            self._reread_after_newline(raw)

    @staticmethod
    def _line(raw: bytes) -> Line | Problem | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Problem("bad_encoding", "line is not UTF-8 text; ignored")
        text = text.replace("\t", " ")
        if not text.isprintable():
            return Problem("bad_input", "line contains control characters or binary data; ignored")
        text = text.strip()
        return Line(text) if text else None
