"""Golden-image helpers and the sample screen models the tests share.

``assert_golden(image, name)`` compares a frame with ``tests/golden/<name>.png``.
Run with ``UPDATE_GOLDEN=1`` to (re)write the golden files after an intended
change, then look at them before committing. On a mismatch the actual frame
is saved as ``<name>.actual.png`` and the differing pixels as
``<name>.diff.png`` next to the golden file.
"""

import os
import pathlib

from PIL import Image, ImageChops

from sim.samples import QR_SAMPLES, REASONS, SAMPLES, SESSION_URL, SIZES, WINDOW_URL  # noqa: F401

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


def assert_golden(image, name):
    """Fail unless ``image`` equals the golden PNG ``name``.

    Args:
        image: the rendered frame (any mode; compared as mode "1").
        name: file stem under ``tests/golden``.
    """
    GOLDEN_DIR.mkdir(exist_ok=True)
    path = GOLDEN_DIR / f"{name}.png"
    actual = image.convert("1")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        actual.save(path)
        return
    if not path.exists():
        raise AssertionError(
            f"no golden image {path}; run the tests with UPDATE_GOLDEN=1 "
            f"to create it, then review it")
    expected = Image.open(path).convert("1")
    if expected.size != actual.size:
        _save_actual(actual, path)
        raise AssertionError(f"{name}: size {actual.size} != golden "
                             f"{expected.size}")
    diff = ImageChops.logical_xor(expected, actual)
    box = diff.getbbox()
    if box is not None:
        count = sum(1 for p in diff.tobytes() if p)
        _save_actual(actual, path, diff)
        raise AssertionError(
            f"{name}: {count} pixels differ from {path.name} within {box}; "
            f"actual saved as {name}.actual.png, diff as {name}.diff.png "
            f"(UPDATE_GOLDEN=1 accepts the change)")


def _save_actual(actual, path, diff=None):
    actual.save(path.with_name(path.stem + ".actual.png"))
    if diff is not None:
        diff.save(path.with_name(path.stem + ".diff.png"))
