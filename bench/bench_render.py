"""Render cost per screen at 128x64, and what the QR cache saves.

One run, printed; not a test. Run from the repository root:

    python -m bench.bench_render      (or: python bench/bench_render.py)
"""

from __future__ import annotations

import functools
import os
import sys
import time
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir))

from device.ui import qr, screens
from device.ui.models import Screen
from sim.samples import SAMPLES, WINDOW_URL

SIZE = (128, 64)
REPEAT = 200


def per_call_ms(func: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(func, number=number, repeat=3)) / number * 1000


def draw_fresh(model: Screen) -> None:
    """One frame drawn from scratch, bypassing the frame cache."""
    screens.draw_layout(screens.layout(model, SIZE))


def main() -> None:
    start = time.perf_counter()
    screens.render(SAMPLES["idle"], SIZE)
    print(f"first frame (fonts + QR cold): "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")
    print(f"render at {SIZE[0]}x{SIZE[1]}, best of 3 x {REPEAT}: drawn from scratch, and from the frame cache")
    for name, model in SAMPLES.items():
        ms = per_call_ms(functools.partial(draw_fresh, model), REPEAT)
        cached = per_call_ms(functools.partial(screens.render, model, SIZE), REPEAT)
        print(f"  {name:16s} {ms:7.3f} ms   cached {cached * 1000:6.1f} us")

    def uncached() -> None:
        qr.qr_image.cache_clear()
        qr._matrix.cache_clear()
        qr._try_fit.cache_clear()
        qr.qr_image(WINDOW_URL, 62)

    cold = per_call_ms(uncached, 20)
    warm = per_call_ms(lambda: qr.qr_image(WINDOW_URL, 62), 2000)
    print(f"QR 62 px uncached {cold:.3f} ms, cached {warm * 1000:.2f} us, "
          f"ratio {cold / warm:.0f}x")


if __name__ == "__main__":
    main()
