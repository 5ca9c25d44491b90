"""The voice prompts: their words, their files, and how they are made and checked.

Each prompt is one WAV file named after it (``ask.wav``, ``thanks.wav``,
``hint.wav``). They are rendered once, offline, with espeak-ng's Mandarin
voice (Debian's ``espeak-ng``, voice ``cmn``) into ``audio.prompts_dir``: at
install (``python -m device.outputs.prompts DIR``) or, when missing, at the
first start, on the speaker's own thread. A hall may supply its own
recordings under the same names in ``audio.recordings_dir``; each one is
checked at start (a readable 16-bit PCM WAV, mono or stereo, 0.2 to 15 s) and
wins over the rendered one; one that fails the check is reported and the
rendered one is used instead.

The volume is applied once, to the samples, when the prompts are loaded: the
bytes played for a prompt are the same every time, whatever the level rated.
"""

from __future__ import annotations

import array
import io
import logging
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The prompts: file name (without ``.wav``) → the words.
TEXTS: Mapping[str, str] = {
    "ask": "您好，请对我的服务进行评价",
    "thanks": "感谢您的评价",
    "hint": "请扫描二维码评价",
}
#: espeak-ng's Mandarin voice, a little slower than its default for elderly listeners.
VOICE, SPEED_WPM = "cmn", 160
#: What a recording must be to be used.
MIN_S, MAX_S = 0.2, 15.0


@dataclass(frozen=True)
class Prompt:
    """One prompt ready to play: a complete WAV file in memory."""

    name: str
    wav: bytes
    seconds: float
    source: str     # "rendered" or "recording"


def render(directory: str, names: Mapping[str, str] = TEXTS, espeak: str = "espeak-ng") -> list[str]:
    """Render every missing prompt into ``directory`` with espeak-ng; returns the names rendered.

    Raises:
        OSError: espeak-ng is not installed, or the folder cannot be written.
        subprocess.CalledProcessError: espeak-ng failed.
    """
    program = shutil.which(espeak)
    if program is None:
        raise FileNotFoundError(f"{espeak} is not installed (apt-get install espeak-ng)")
    os.makedirs(directory, exist_ok=True)
    done = []
    for name, text in names.items():
        path = os.path.join(directory, f"{name}.wav")
        if os.path.exists(path):
            continue
        tmp = path + ".tmp"
        subprocess.run([program, "-v", VOICE, "-s", str(SPEED_WPM), "-w", tmp, text], check=True,
                       capture_output=True, timeout=30)
        # espeak-ng leaves its header's sizes open: write a clean WAV once, so every reader agrees.
        with open(tmp, "rb") as f:
            clean = _normalise(f.read())
        with open(tmp, "wb") as f:
            f.write(clean)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done.append(name)
    return done


def _normalise(data: bytes) -> bytes:
    """A WAV whose header states its true length (espeak-ng writes 0x7ffffffff sizes to a pipe or file)."""
    riff = data.find(b"data")
    fmt = data.find(b"fmt ")
    if data[:4] != b"RIFF" or riff < 0 or fmt < 0:
        raise ValueError("not a WAV file")
    channels = int.from_bytes(data[fmt + 10:fmt + 12], "little")
    rate = int.from_bytes(data[fmt + 12:fmt + 16], "little")
    width = int.from_bytes(data[fmt + 22:fmt + 24], "little") // 8
    frames = data[riff + 8:]
    frames = frames[:len(frames) - len(frames) % (channels * width)]
    return _wav(frames, channels, width, rate)


def _wav(frames: bytes, channels: int, width: int, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def check(path: str) -> tuple[bytes, int, int, int, float]:
    """Read a prompt file: ``(frames, channels, sample_width, rate, seconds)``.

    Raises:
        ValueError: naming what is wrong (not a WAV, not 16-bit PCM, too short or too long).
        OSError: it cannot be read.
    """
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, count = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            frames = w.readframes(count)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"not a PCM WAV file ({e})") from None
    if width != 2 or channels not in (1, 2) or not 8000 <= rate <= 48000:
        raise ValueError(f"must be 16-bit PCM, mono or stereo, 8-48 kHz (is {width * 8}-bit, {channels} "
                         f"channels, {rate} Hz)")
    seconds = len(frames) / (channels * width * rate)
    if not MIN_S <= seconds <= MAX_S:
        raise ValueError(f"lasts {seconds:.1f} s; a prompt lasts {MIN_S} to {MAX_S} s")
    return frames, channels, width, rate, seconds


def scale(frames: bytes, volume: int) -> bytes:
    """16-bit samples at ``volume`` percent (100: as recorded)."""
    if volume >= 100:
        return frames
    samples = array.array("h")
    samples.frombytes(frames)
    if sys.byteorder != "little":
        samples.byteswap()
    factor = max(0, volume) / 100
    scaled = array.array("h", (int(s * factor) for s in samples))
    if sys.byteorder != "little":
        scaled.byteswap()
    return scaled.tobytes()


def load(prompts_dir: str, recordings_dir: str, volume: int,
         names: Mapping[str, str] = TEXTS) -> tuple[dict[str, Prompt], list[str]]:
    """Every prompt ready to play, and the problems found (each names its file).

    A hall's recording wins when it passes :func:`check`; otherwise the
    rendered file is used. A prompt with neither is missing (a problem).
    """
    prompts: dict[str, Prompt] = {}
    problems: list[str] = []
    for name in names:
        candidates = []
        if recordings_dir:
            candidates.append((os.path.join(recordings_dir, f"{name}.wav"), "recording"))
        candidates.append((os.path.join(prompts_dir, f"{name}.wav"), "rendered"))
        for path, source in candidates:
            if source == "recording" and not os.path.exists(path):
                continue
            try:
                frames, channels, width, rate, seconds = check(path)
            except (ValueError, OSError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                problems.append(f"prompt {name}: {path}: {reason}")
                continue
            prompts[name] = Prompt(name, _wav(scale(frames, volume), channels, width, rate), seconds, source)
            break
    return prompts, problems


def main(argv: list[str] | None = None) -> int:
    """``python -m device.outputs.prompts DIR``: render the prompts at install."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m device.outputs.prompts PROMPTS_DIR", file=sys.stderr)
        return 2
    try:
        done = render(args[0])
    except (OSError, subprocess.SubprocessError) as e:
        print(f"prompts not rendered: {e}", file=sys.stderr)
        return 1
    for name in TEXTS:
        path = os.path.join(args[0], f"{name}.wav")
        seconds = check(path)[4]
        print(f"{path}: {seconds:.2f} s{' (new)' if name in done else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
