"""The speaker: voice prompts played on a thread of their own.

:meth:`Speaker.handle` (the loop's handler for :class:`~device.state.Say`)
only puts the prompt on a small queue and returns at once; the speaker's
thread plays it. A newer prompt replaces one still waiting (the thank-you
for this citizen matters more than the greeting of the last one), and a
prompt that waited longer than :data:`STALE_S` is dropped.

Where the sound goes is a *sink*: :class:`AlsaSink` pipes the WAV to
``aplay -D <audio.device>`` on a Pi; :class:`FileSink` (the simulator)
writes what it would play to numbered WAV files. A sink that is missing or
fails makes :attr:`Speaker.fault` say so (Status, the heartbeat); rating goes
on. Outside opening hours (``audio.quiet_outside_hours``) nothing is played.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from device.outputs import prompts as prompts_mod
from device.outputs.quiet import QuietHours

if TYPE_CHECKING:
    from device.config import Config
    from device.state import Say

logger = logging.getLogger(__name__)

#: A prompt not started within this many seconds of its moment is dropped (it would be out of place).
STALE_S = 5.0
#: A prompt starts this long after its moment, when the loop has drawn the frame.
SETTLE_S = 0.03
#: The longest one prompt may play before the player is stopped.
PLAY_TIMEOUT_S = 20.0


class Sink(Protocol):
    """Where prompts are played."""

    def check(self) -> str:
        """A fault text when the sound device is missing, or ``""``."""
        ...

    def play(self, name: str, wav: bytes) -> None:
        """Play one complete WAV file and return when it has finished.

        Raises:
            OSError: the device is missing or failed (the text names it).
        """
        ...


class AlsaSink:
    """``aplay -q -D DEVICE`` fed the WAV on its standard input.

    Args:
        device: the ALSA device (``audio.device``).
        proc_root: where ``/proc/asound`` is looked for (a fake Pi's root).
    """

    def __init__(self, device: str = "default", proc_root: str = "/") -> None:
        self.device = device
        self.proc_root = proc_root
        self.aplay = shutil.which("aplay")

    def check(self) -> str:
        if self.aplay is None:
            return "aplay is not installed (apt-get install alsa-utils)"
        cards = os.path.join(self.proc_root, "proc", "asound", "cards")
        try:
            with open(cards, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return "no sound card: the kernel has no ALSA driver loaded (/proc/asound)"
        if "no soundcards" in text or not text.strip():
            return "no sound card found (an I2S amplifier needs its dtoverlay; a USB card, a USB port)"
        card = _card_name(self.device)
        if card and not os.path.exists(os.path.join(self.proc_root, "proc", "asound", card)) \
                and f"[{card}" not in text.replace(" ", ""):
            return f"sound card {card} of audio.device = {self.device} not found"
        return ""

    def play(self, name: str, wav: bytes) -> None:
        if self.aplay is None:
            raise FileNotFoundError("aplay is not installed")
        try:
            done = subprocess.run([self.aplay, "-q", "-D", self.device, "-"], input=wav, capture_output=True,
                                  check=False, timeout=PLAY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise OSError(f"aplay -D {self.device} did not finish {name} within {PLAY_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OSError(f"aplay -D {self.device}: {message[-1] if message else f'exit {done.returncode}'}")


def _card_name(device: str) -> str:
    """The card an ALSA device names (``hw:CARD=X,DEV=0`` → ``X``; ``plughw:1,0`` → ``card1``), or ``""``."""
    _, colon, rest = device.partition(":")
    if not colon:
        return ""
    first = rest.split(",")[0]
    if first.startswith("CARD="):
        return first[5:]
    return f"card{first}" if first.isdigit() else first


class FileSink:
    """The simulator's sound device: each prompt it would play becomes a WAV file.

    Files are named ``NNNNN-<prompt>.wav`` in ``directory``, in the order played;
    ``play_s`` (seconds, 0: none) makes playing take time as on a Pi.
    """

    def __init__(self, directory: str, play_s: float = 0.0) -> None:
        self.directory = directory
        self.play_s = play_s
        self.count = 0
        os.makedirs(directory, exist_ok=True)

    def check(self) -> str:
        return "" if os.path.isdir(self.directory) else f"sound sink folder {self.directory} is missing"

    def play(self, name: str, wav: bytes) -> None:
        self.count += 1
        path = os.path.join(self.directory, f"{self.count:05d}-{name}.wav")
        with open(path + ".tmp", "wb") as f:
            f.write(wav)
        os.replace(path + ".tmp", path)
        if self.play_s:
            time.sleep(self.play_s)


class Speaker:
    """Voice prompts off the press path.

    Args:
        config: the configuration (``audio.*``, ``hours.*``).
        sink: where prompts play.
        wall: local wall time now (quiet hours); None: never quiet.
        synced: whether the wall clock can be trusted (unsynced: never quiet).
    """

    def __init__(self, config: Config, sink: Sink, *,
                 wall: Callable[[], datetime.datetime] | None = None,
                 synced: Callable[[], bool] = lambda: True) -> None:
        self.audio = config.audio
        self.sink = sink
        self.hours = QuietHours(config, wall, synced)
        self.prompts: dict[str, prompts_mod.Prompt] = {}
        self._queue: queue.Queue[tuple[str, float] | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.problems: list[str] = []
        self.device_fault = ""
        #: Prompts played, and dropped (quiet hours, stale, replaced), since the start.
        self.played = 0
        self.skipped = 0

    # --- the loop's side: never waits -------------------------------------------------------

    def handle(self, effect: Say) -> None:
        """The loop's handler for :class:`~device.state.Say`: queue it and return."""
        item = (effect.prompt, time.monotonic())
        with self._lock:
            self._idle.clear()
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                # The newest prompt wins over one still waiting.
                try:
                    self._queue.get_nowait()
                    self.skipped += 1
                except queue.Empty:
                    pass
                self._queue.put_nowait(item)

    @property
    def fault(self) -> str:
        """What is wrong with the voice, for Status and the heartbeat (``""`` when nothing)."""
        parts = ([self.device_fault] if self.device_fault else []) + self.problems
        return "; ".join(parts)

    # --- its own thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is None:
            return
        with self._lock:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued prompt was played or dropped (tests and tools)."""
        return self._ready.wait(timeout) and self._idle.wait(timeout)

    def prepare(self) -> None:
        """Render missing prompts, load them (a hall's recordings win) and check the sound device."""
        a = self.audio
        problems: list[str] = []
        try:
            made = prompts_mod.render(a.prompts_dir)
            if made:
                logger.info("voice prompts rendered with espeak-ng: %s", ", ".join(made))
        except (OSError, subprocess.SubprocessError) as e:
            problems.append(f"prompts not rendered: {e}")
        self.prompts, more = prompts_mod.load(a.prompts_dir, a.recordings_dir, a.volume)
        problems += more
        missing = [n for n in prompts_mod.TEXTS if n not in self.prompts]
        if missing:
            problems.append("prompts missing: " + ", ".join(missing))
        self.problems = problems
        self.device_fault = self.sink.check()
        for p in problems + ([self.device_fault] if self.device_fault else []):
            logger.warning("voice: %s", p)
        used = ", ".join(f"{p.name} ({p.source}, {p.seconds:.1f} s)" for p in self.prompts.values())
        logger.info("voice prompts ready: %s", used or "none")

    def _run(self) -> None:
        try:
            self.prepare()
        except Exception as e:
            logger.exception("voice prompts could not be prepared")
            self.problems = [f"prompts not prepared: {type(e).__name__}: {e}"]
        self._ready.set()
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, at = item
            # Let the loop finish the thank-you frame first (a newer prompt may replace this one meanwhile).
            time.sleep(SETTLE_S)
            try:
                self._play(name, at)
            except Exception:
                logger.exception("voice: prompt %s", name)
            finally:
                with self._lock:
                    if self._queue.empty():
                        self._idle.set()

    def quiet(self) -> bool:
        """Outside opening hours (when configured so, and the clock can be trusted)."""
        return self.hours.quiet()

    def _play(self, name: str, at: float) -> None:
        prompt = self.prompts.get(name)
        if prompt is None or self.quiet() or time.monotonic() - at > STALE_S:
            self.skipped += 1
            return
        try:
            self.sink.play(name, prompt.wav)
        except OSError as e:
            if not self.device_fault:
                logger.warning("voice: the sound device failed: %s", e)
            self.device_fault = f"sound device: {e}"
            return
        self.played += 1
        if self.device_fault:
            logger.info("voice: the sound device works again")
            self.device_fault = ""
