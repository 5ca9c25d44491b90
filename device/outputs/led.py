"""The status LED, for the technician at a glance (gpiozero ``LED``).

| the LED | the device |
|---|---|
| steady on | ready: rating, and nothing waiting for an unreachable hall |
| slow blink (1 s on, 1 s off) | offline with a backlog: ratings are kept and wait for the hall |
| fast blink (0.15 s on, 0.15 s off) | a fault (Status names it) or recovery |
| off | not running (stopped, or starting) |

:class:`StatusLed` follows a status function (the app's) on its own thread,
every :data:`POLL_S`; the supervisor sets it to :data:`FAULT` in recovery.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

READY, OFFLINE, FAULT, OFF = "ready", "offline", "fault", "off"
#: ``(seconds on, seconds off)`` of each blinking state.
BLINK = {OFFLINE: (1.0, 1.0), FAULT: (0.15, 0.15)}
#: How often the followed status is read.
POLL_S = 0.5


class StatusLed:
    """Shows :data:`READY`, :data:`OFFLINE`, :data:`FAULT` or :data:`OFF` on a gpiozero ``LED``."""

    def __init__(self, led: Any) -> None:
        self.led = led
        self.state = OFF
        self.fault = ""
        self._lock = threading.Lock()
        self._source: Callable[[], str] | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def show(self, state: str) -> None:
        """Set the LED now (any thread)."""
        with self._lock:
            if state == self.state:
                return
            try:
                if state == READY:
                    self.led.on()
                elif state in BLINK:
                    on_s, off_s = BLINK[state]
                    self.led.blink(on_time=on_s, off_time=off_s, background=True)
                else:
                    self.led.off()
            except Exception as e:
                self.fault = f"led: {type(e).__name__}: {e}"
                logger.warning("%s", self.fault)
                return
            self.state = state

    def follow(self, source: Callable[[], str] | None) -> None:
        """Follow ``source`` (read every :data:`POLL_S` on the LED's thread); None stops following."""
        self._source = source
        if source is None:
            if self._thread is not None:
                self._wake.set()
                self._thread.join(2.0)
                self._thread = None
                self._wake.clear()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="status-led", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            source = self._source
            if source is None:
                return
            try:
                self.show(source())
            except Exception:
                logger.exception("status LED: the status could not be read")
                self.show(FAULT)
            if self._wake.wait(POLL_S):
                return

    def close(self) -> None:
        self.follow(None)
        self.show(OFF)
        try:
            self.led.close()
        except Exception:
            pass
