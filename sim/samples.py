"""One sample model per screen, as the app would show them: for the gallery,
the render benchmark and the golden-image tests."""

from device import __version__
from device.levels import Level
from device.ui.models import (
    FOLLOWUP_MESSAGE,
    BootScreen,
    IdleScreen,
    Indicators,
    LaterScreen,
    PausedScreen,
    PromptScreen,
    ReasonsScreen,
    Screen,
    ServiceScreen,
    ThanksScreen,
)

#: Panel sizes every screen is tested at; (64, 128) is a 128x64 panel
#: mounted rotated by a quarter turn.
SIZES: list[tuple[int, int]] = [(128, 64), (256, 64), (128, 128), (64, 128)]

WINDOW_URL = "https://hcp.example.cn/w/0801"
SESSION_URL = "https://hcp.example.cn/s/8f3a2c"

REASONS = (("401", "态度不好"), ("402", "效率低"), ("403", "业务不熟"),
           ("404", "推诿扯皮"))

#: One model per screen, as the app would show them.
SAMPLES: dict[str, Screen] = {
    "boot": BootScreen(version=__version__),
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
    # Private (the default): one thank-you and one follow-up for every level.
    "thanks": ThanksScreen(),
    "followup": LaterScreen(qr_url=SESSION_URL, message=FOLLOWUP_MESSAGE),
    # display.show_level = true: the level, and reason tags after a 差评.
    "thanks_level": ThanksScreen(level=Level.VERY_SATISFIED),
    "thanks_level_bad": ThanksScreen(level=Level.VERY_DISSATISFIED),
    "reasons": ReasonsScreen(level=Level.DISSATISFIED, reasons=REASONS,
                             seconds_left=15),
    "later": LaterScreen(qr_url=SESSION_URL, ticket="A023"),
    "service": ServiceScreen(lines=("ID EV-0001", "IP 192.168.1.23",
                                    f"固件 {__version__}", "待传 12", "上传 10:32")),
    "paused": PausedScreen(reason="存储空间已满", qr_url=WINDOW_URL),
}

#: Which samples carry a QR code, and the URL it must decode to.
QR_SAMPLES: dict[str, str] = {name: url for name, model in SAMPLES.items()
                              if (url := getattr(model, "qr_url", ""))}
