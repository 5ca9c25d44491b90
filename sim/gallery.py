"""Every screen at every supported resolution, as PNG.

    python -m sim.gallery OUT_DIR [--scale N]

Writes ``<screen>_<w>x<h>.png`` for each sample screen and panel size, and
one contact sheet per size (``sheet_<w>x<h>.png``), scaled up with square
pixels so that the frames can be looked at on an ordinary screen.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from PIL import Image

from device.ui.screens import render
from sim.samples import SAMPLES, SIZES

GAP = 4


def contact_sheet(frames: Sequence[Image.Image], size: tuple[int, int], columns: int = 4) -> Image.Image:
    """Frames side by side on a grey background, lit pixels white."""
    w, h = size
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("L", (columns * (w + GAP) + GAP, rows * (h + GAP) + GAP), 96)
    for n, frame in enumerate(frames):
        x, y = GAP + (n % columns) * (w + GAP), GAP + (n // columns) * (h + GAP)
        sheet.paste(frame.convert("L"), (x, y))
    return sheet


def write_gallery(out_dir: str, scale: int = 2) -> list[str]:
    """Render everything into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for size in SIZES:
        frames = []
        for name, model in SAMPLES.items():
            frame = render(model, size)
            frames.append(frame)
            path = os.path.join(out_dir, f"{name}_{size[0]}x{size[1]}.png")
            frame.resize((size[0] * scale, size[1] * scale), Image.Resampling.NEAREST).save(path)
            written.append(path)
        sheet = contact_sheet(frames, size, columns=4 if size[0] <= 128 else 2)
        path = os.path.join(out_dir, f"sheet_{size[0]}x{size[1]}.png")
        sheet.resize((sheet.width * scale, sheet.height * scale), Image.Resampling.NEAREST).save(path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim.gallery``: write the gallery; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sim.gallery", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--scale", type=int, default=2, help="pixels per panel pixel (default 2)")
    args = parser.parse_args(argv)
    paths = write_gallery(args.out_dir, args.scale)
    print(f"{len(paths)} images in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
