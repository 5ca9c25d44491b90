"""The press beep: one short beep for a press that counted, the same for every level.

A press that did not count (outside a session, in the lockout, two buttons
at once) gets a different sound: two short low beeps. :meth:`Beeper.handle`
(the loop's handler for :class:`~device.state.Beep`) only queues the beep;
the beeper's own thread drives the pin, so the press path never waits.

An active buzzer (gpiozero ``Buzzer``) is switched on and off; a passive one
(``TonalBuzzer``, ``audio.buzzer_tonal``) plays a tone: high for ``ok``,
low for ``refused``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero import Buzzer, TonalBuzzer
from gpiozero.tones import Tone

from device.state import BEEP_OK, BEEP_REFUSED

if TYPE_CHECKING:
    from device.state import Beep

logger = logging.getLogger(__name__)

#: A beep starts this long after its moment, when the loop has drawn the frame (unnoticeable to a person).
SETTLE_S = 0.03

#: Each beep as ``(tone in Hz, seconds on, seconds off)`` steps; an active buzzer ignores the tone.
PATTERNS: dict[str, tuple[tuple[float, float, float], ...]] = {
    BEEP_OK: ((1760.0, 0.12, 0.0),),
    BEEP_REFUSED: ((440.0, 0.07, 0.07), (440.0, 0.07, 0.0)),
}


class Beeper:
    """Drives a gpiozero ``Buzzer`` or ``TonalBuzzer`` on its own thread.

    Args:
        device: the gpiozero device (``on()``/``off()``, or ``play(tone)``/``stop()``).
        tonal: whether ``device`` is a ``TonalBuzzer``.
        quiet: returns True while beeps are not wanted (quiet hours).
        sleep: how time passes between the steps (tests pass their own).
    """

    def __init__(self, device: Any, *, tonal: bool = False, quiet: Callable[[], bool] = lambda: False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.device = device
        self.tonal = tonal
        self.quiet = quiet
        self.sleep = sleep
        self.fault = ""
        self.beeps = 0
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()

    def handle(self, effect: Beep) -> None:
        """The loop's handler for :class:`~device.state.Beep`: queue it (dropped when four wait)."""
        with self._lock:
            self._idle.clear()
            try:
                self._queue.put_nowait(effect.kind)
            except queue.Full:
                pass

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="buzzer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float = 5.0) -> bool:
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            kind = self._queue.get()
            if kind is None:
                return
            # Let the loop finish the thank-you frame first: the pin's work never competes with it.
            time.sleep(SETTLE_S)
            try:
                if not self.quiet():
                    self.beep(kind)
            except Exception as e:
                # A pin that fails is a fault, never a stop.
                self.fault = f"buzzer: {type(e).__name__}: {e}"
                logger.warning("%s", self.fault)
            finally:
                with self._lock:
                    if self._queue.empty():
                        self._idle.set()

    def beep(self, kind: str) -> None:
        """Sound one beep now (on the calling thread)."""
        for tone, on_s, off_s in PATTERNS.get(kind, PATTERNS[BEEP_REFUSED]):
            if self.tonal:
                self.device.play(Tone.from_frequency(tone))
            else:
                self.device.on()
            self.sleep(on_s)
            if self.tonal:
                self.device.stop()
            else:
                self.device.off()
            if off_s:
                self.sleep(off_s)
        self.beeps += 1


def make_buzzer(pin: int, tonal: bool, pin_factory: Any = None) -> Any:
    """gpiozero's ``TonalBuzzer`` (passive, 440 Hz to 3.5 kHz) or ``Buzzer`` (active) on ``pin``."""
    if tonal:
        return TonalBuzzer(pin, initial_value=None, mid_tone=Tone.from_frequency(1245.0), octaves=1.5,
                           pin_factory=pin_factory)
    return Buzzer(pin, pin_factory=pin_factory)
