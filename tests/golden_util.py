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

from device.levels import Level
from device.ui.models import (BootScreen, IdleScreen, Indicators, LaterScreen,
                              PausedScreen, PromptScreen, ReasonsScreen,
                              ServiceScreen, ThanksScreen)

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"

#: Panel sizes every screen is tested at; (64, 128) is a 128x64 panel
#: mounted rotated by a quarter turn.
SIZES = [(128, 64), (256, 64), (128, 128), (64, 128)]

WINDOW_URL = "https://hcp.example.cn/w/0801"
SESSION_URL = "https://hcp.example.cn/s/8f3a2c"

REASONS = (("401", "态度不好"), ("402", "效率低"), ("403", "业务不熟"),
           ("404", "推诿扯皮"))

#: One model per screen, as the app would show them.
SAMPLES = {
    "boot": BootScreen(version="1.0.0"),
    "idle": IdleScreen(window_no="3", window_name="综合受理",
                       staff_name="张三丰", staff_no="010203",
                       qr_url=WINDOW_URL),
    "idle_indicators": IdleScreen(
        window_no="A08", window_name="不动产登记", staff_name="欧阳娜娜",
        staff_no="8802", qr_url=WINDOW_URL,
        indicators=Indicators(offline=True, backlog=27, clock_unset=True,
                              storage_low=True)),
    "prompt": PromptScreen(window_no="3", staff_name="张三丰",
                           seconds_left=28, ticket="A023"),
    "thanks": ThanksScreen(level=Level.VERY_SATISFIED),
    "thanks_bad": ThanksScreen(level=Level.VERY_DISSATISFIED),
    "reasons": ReasonsScreen(level=Level.DISSATISFIED, reasons=REASONS,
                             seconds_left=15),
    "later": LaterScreen(qr_url=SESSION_URL, ticket="A023"),
    "service": ServiceScreen(lines=("ID EV-0001", "IP 192.168.1.23",
                                    "固件 1.0.0", "待传 12", "上传 10:32")),
    "paused": PausedScreen(reason="存储空间已满", qr_url=WINDOW_URL),
}

#: Which samples carry a QR code, and the URL it must decode to.
QR_SAMPLES = {name: model.qr_url for name, model in SAMPLES.items()
              if getattr(model, "qr_url", None)}


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
        count = sum(1 for p in diff.getdata() if p)
        _save_actual(actual, path, diff)
        raise AssertionError(
            f"{name}: {count} pixels differ from {path.name} within {box}; "
            f"actual saved as {name}.actual.png, diff as {name}.diff.png "
            f"(UPDATE_GOLDEN=1 accepts the change)")


def _save_actual(actual, path, diff=None):
    actual.save(path.with_name(path.stem + ".actual.png"))
    if diff is not None:
        diff.save(path.with_name(path.stem + ".diff.png"))
