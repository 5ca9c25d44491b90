"""Press -> thank-you frame with voice and beep on, against the same with them off (not a test).

    python bench/bench_voice.py [--presses N] [--rounds R] [--play-ms MS] [--pace-ms MS]

The simulated device rates in ``free`` mode; each press is one durable
commit and the thank-you frame, timed from the press to the frame as in
``bench_device.py``. With voice on, every rating also sends a beep to the
buzzer (gpiozero's mock pin, its pattern timed with real sleeps) and
感谢您的评价 to the speaker, whose thread writes each prompt to a WAV file and
then takes ``--play-ms`` to "play" it, as aplay would; both run beside the
press path, never on it. Presses come every ``--pace-ms`` (untimed), so the
beep and the prompt of one press still sound when the next one comes.
Rounds alternate off and on, so the shared machine's moods fall on both
alike. Prints p50 and p99 of each, the p99 ratio on/off over all rounds
pooled and the median of the rounds' ratios (budget: the same p99, within
noise, <= 1.1), and the time the output handlers take on the loop's thread
(they only queue the beep and the prompt).
"""

from __future__ import annotations

import argparse
import array
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from bench_device import percentile, press  # bench/ beside this script

from device import config as config_mod
from device.app import App
from device.clock import Clocks
from device.config import Secret
from device.hardware import staff_request
from device.outputs import prompts
from device.state import Beep, Say
from device.ui.models import ThanksScreen
from sim.hardware import make_sim_hardware


def make_prompts(folder: str) -> str:
    """The prompts rendered with espeak-ng, or (without it) a 3 s tone under each name."""
    if shutil.which("espeak-ng"):
        prompts.render(folder)
        return "espeak-ng"
    os.makedirs(folder, exist_ok=True)
    tone = array.array("h", [6000 if i % 32 < 16 else -6000 for i in range(3 * 22050)]).tobytes()
    for name in prompts.TEXTS:
        with wave.open(os.path.join(folder, f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
            w.writeframes(tone)
    return "a tone (espeak-ng is not installed)"


def run(voice: bool, presses: int, folder: str, prompts_dir: str, play_s: float,
        pace_s: float = 0.05, handler_times: list[float] | None = None) -> tuple[list[float], int]:
    """Press -> thank-you frame times, and the prompts the speaker wrote.

    ``handler_times`` gets the time each output handler (Say, Beep) took on the loop's thread.
    """
    data = tempfile.mkdtemp(dir=folder)
    overrides = [f"outbox.path=\"{os.path.join(data, 'outbox.db')}\"", 'session.source="free"',
                 "session.min_interval_s=0", "session.suspect_count=1000000"]
    if voice:
        overrides += ["audio.enabled=true", f'audio.prompts_dir="{prompts_dir}"', 'audio.recordings_dir=""',
                      "audio.buzzer_pin=12"]
    config = config_mod.load(overrides=overrides)
    # The sound "card" in memory (tmpfs) where there is one: on a Pi the prompts go to the card, never
    # to the disk the outbox commits to, so the file sink must not add its writes to the commits' fsync.
    sound_dir = tempfile.mkdtemp(dir="/dev/shm") if os.path.isdir("/dev/shm") else None
    hardware, _ = make_sim_hardware(config, queue.Queue(), staff_request, sound_dir=sound_dir)
    if voice:
        hardware.speaker.play_s = play_s
    app = App(config, hardware, Secret(""), clocks=Clocks(synced=lambda: True))
    app.outputs.start(app.led_status)
    if handler_times is not None:
        # The output effects' handlers, timed on the loop's thread (everything else passes straight through).
        dispatch = app.loop.dispatch
        timed_dispatch = timed(dispatch, handler_times)
        app.loop.dispatch = lambda item: (timed_dispatch if isinstance(item, Say | Beep) else dispatch)(item)  # type: ignore[method-assign]
    if voice:
        app.outputs.wait_idle(30)        # the prompts are loaded before the first press
    app.loop.refresh()
    times = []
    for i in range(presses):
        button = 1 + i % 5
        t0 = time.perf_counter()
        press(app, button)
        times.append(time.perf_counter() - t0)
        assert isinstance(app.model, ThanksScreen), app.model
        # A citizen's pace, compressed: the beep and the prompt of one press still sound at the next.
        time.sleep(pace_s)
        batch = app.outbox.claim(250)
        app.outbox.mark_delivered([e["id"] for e in batch], time.time())
    app.outputs.wait_idle(30)
    written = hardware.speaker.count if voice else 0
    app.close()
    hardware.close()
    if sound_dir:
        shutil.rmtree(sound_dir, ignore_errors=True)
    return times, written


def timed(handler: Callable[[Any], None], into: list[float]) -> Callable[[Any], None]:
    def call(effect: Any) -> None:
        t0 = time.perf_counter()
        handler(effect)
        into.append(time.perf_counter() - t0)
    return call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=150, help="presses per round and mode")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--play-ms", type=float, default=200.0, help="how long the speaker takes per prompt")
    parser.add_argument("--pace-ms", type=float, default=50.0, help="time between two presses (not timed)")
    args = parser.parse_args(argv)
    ratios = []
    handlers: list[float] = []
    pooled: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        source = make_prompts(os.path.join(folder, "prompts"))
        print(f"prompts: {source}")
        for r in range(args.rounds):
            timing = (args.play_ms / 1000, args.pace_ms / 1000)
            off, _ = run(False, args.presses, folder, os.path.join(folder, "prompts"), *timing)
            on, written = run(True, args.presses, folder, os.path.join(folder, "prompts"), *timing, handlers)
            pooled[False] += off
            pooled[True] += on
            o99, v99 = percentile(off, 99), percentile(on, 99)
            ratios.append(v99 / o99)
            print(f"round {r + 1}: press -> thank-you frame ({args.presses} presses): voice off p50 "
                  f"{statistics.median(off) * 1e3:.2f} ms, p99 {o99 * 1e3:.2f} ms;   voice on p50 "
                  f"{statistics.median(on) * 1e3:.2f} ms, p99 {v99 * 1e3:.2f} ms ({written} prompts played);   "
                  f"ratio p99 {v99 / o99:.2f}", flush=True)
    print(f"  the output handlers on the loop's thread (queue the beep or the prompt): {len(handlers)} calls, "
          f"p50 {statistics.median(handlers) * 1e6:.1f} µs, p99 {percentile(handlers, 99) * 1e6:.1f} µs, "
          f"max {max(handlers) * 1e6:.1f} µs")
    off, on = pooled[False], pooled[True]
    o99, v99 = percentile(off, 99), percentile(on, 99)
    print(f"all rounds ({len(off)} presses each): voice off p50 {statistics.median(off) * 1e3:.2f} ms, "
          f"p99 {o99 * 1e3:.2f} ms;   voice on p50 {statistics.median(on) * 1e3:.2f} ms, p99 {v99 * 1e3:.2f} ms")
    print(f"  ratio p99 voice on/off over all rounds: {v99 / o99:.2f}; median of the rounds' ratios "
          f"{statistics.median(ratios):.2f} (budget <= 1.1: audio is never on the commit path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
