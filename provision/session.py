"""Question and answer over the device's console: one command line, one JSON line back."""

import json
import time
from typing import Any

from device.errors import ProvisionError
from provision import EXIT_TIMEOUT

#: How long the console may take to finish a half-typed line or frame.
SYNC_S = 0.6


class DeviceSession:
    """One conversation with the console.

    Args:
        port: an open pyserial port (opened with a short read timeout).
        timeout: seconds to wait for each answer.
    """

    def __init__(self, port: Any, timeout: float) -> None:
        self.port = port
        self.timeout = timeout

    def sync(self) -> None:
        """End whatever half line the console holds, then forget its answers."""
        self.port.write(b"\r\n")
        time.sleep(SYNC_S)
        self.port.reset_input_buffer()

    def ask(self, line: str, timeout: float | None = None, what: str | None = None) -> dict[str, Any]:
        """Send one command line; return the next JSON object the device writes.

        Raises:
            ProvisionError: no answer within the timeout. ``what`` names the
            command in the message (so a secret argument is never shown).
        """
        self.port.write(line.encode("utf-8") + b"\r\n")
        return self.answer(timeout, what or line.split(" ", 1)[0])

    def answer(self, timeout: float | None = None, what: str = "the device") -> dict[str, Any]:
        """The next answer line (Improv frames and noise are skipped).

        Raises:
            ProvisionError: none within the timeout.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        buf = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProvisionError(EXIT_TIMEOUT, f"no answer to {what} within {timeout or self.timeout:g} s "
                                     "(is this the device's console port, and is the device running?)")
            # The port was opened with a short read timeout, so this returns often.
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            buf += chunk
            while b"\n" in buf:
                raw, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # an Improv frame or noise: not for us
                if isinstance(obj, dict) and "ok" in obj:
                    return obj
