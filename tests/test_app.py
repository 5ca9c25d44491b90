"""The app as a whole on simulated hardware, with clocks the test controls."""

import pytest

from device import __version__
from device import config as config_mod
from device.checks import check_screens
from device.errors import ConfigError
from device.levels import Level
from device.ui.models import FOLLOWUP_MESSAGE, IdleScreen, LaterScreen, ReasonsScreen, ServiceScreen, ThanksScreen
from helpers import PINS, WEDNESDAY, tap


def test_a_tap_is_kept_then_thanked(make_app):
    app, factory, _ = make_app()
    assert isinstance(app.model, IdleScreen)
    tap(app, factory, 2)
    assert isinstance(app.model, ThanksScreen)
    (event,) = app.outbox.events()
    assert event["level"] == "satisfied" and event["satisfaction"] == 4


def test_panel_sleeps_outside_hours_and_a_press_only_wakes_it(make_app):
    app, factory, clock = make_app("hours.open_days=[1,2,3,4,5]", 'hours.open_from="08:30"',
                                   'hours.open_until="18:00"')
    display = app.hardware.display
    assert not display.asleep
    clock.wall = WEDNESDAY.replace(hour=20)
    clock.advance(120)
    app.pump()
    assert display.asleep
    tap(app, factory, 1)
    assert not display.asleep
    assert app.outbox.events() == []          # waking is not rating
    tap(app, factory, 1)
    assert [e["level"] for e in app.outbox.events()] == ["very_satisfied"]


def test_panel_dims_after_idle_and_shifts_its_frame(make_app):
    app, factory, clock = make_app("display.dim_after_s=60", "display.shift_every_s=100",
                                   "display.dim_contrast=20")
    contrasts = []
    app.hardware.display.contrast = lambda level: contrasts.append(level)
    before = app.hardware.display.device.image.copy()
    clock.advance(61)
    app.pump()
    assert contrasts[-1] == 20
    clock.advance(100)
    app.pump()
    after = app.hardware.display.device.image
    assert after.tobytes() != before.tobytes()
    assert after.getbbox() is not None and before.histogram() == after.histogram()
    tap(app, factory, 3)
    assert contrasts[-1] == 255


def test_reasons_after_a_bad_rating_become_a_detail_event(make_app):
    app, factory, clock = make_app("display.show_level=true",
                                   'reasons.dissatisfied=["401 办事效率低", "402 等候时间长"]',
                                   'reasons.version="2026-1"')
    tap(app, factory, 4)
    clock.advance(3.1)
    app.pump()
    assert isinstance(app.model, ReasonsScreen)
    assert app.model.reasons == (("401", "办事效率低"), ("402", "等候时间长"))
    tap(app, factory, 2)
    rating, detail = app.outbox.events()
    assert detail["type"] == "detail" and detail["rating_id"] == rating["id"]
    assert detail["reason_codes"] == ["402"] and detail["reasons_version"] == "2026-1"


def test_holding_1_and_5_shows_the_service_screen_and_rates_nothing(make_app):
    app, factory, clock = make_app()
    factory.pin(PINS[0]).drive_low()
    factory.pin(PINS[4]).drive_low()
    app.pump()
    clock.advance(5.1)
    app.pump()
    assert isinstance(app.model, ServiceScreen)
    text = " ".join(app.model.lines)
    assert "WE-0001" in text and __version__ in text
    factory.pin(PINS[0]).drive_high()
    factory.pin(PINS[4]).drive_high()
    app.pump()
    assert app.outbox.events() == []


def test_a_character_the_font_lacks_is_a_startup_error_naming_the_key():
    config = config_mod.load(overrides=['staff.name="王𠀀"', 'device.window_name="综合😀"'])
    with pytest.raises(ConfigError) as info:
        check_screens(config, (128, 64))
    keys = {k for k, _ in info.value.problems}
    assert keys == {"staff.name", "device.window_name"}
    assert "U+20000" in str(info.value)


def test_a_qr_url_too_long_for_the_panel_is_a_startup_error_with_the_limit():
    config = config_mod.load(overrides=["qr.url=https://hcp.example.org/" + "x" * 400])
    with pytest.raises(ConfigError, match=r"qr.url: .*at most \d+ characters"):
        check_screens(config, (128, 64))


def test_a_display_failure_does_not_stop_rating(make_app):
    from device.errors import DisplayError

    app, factory, clock = make_app()
    display = app.hardware.display
    real_show = display.show
    failures = []

    def broken(image):
        failures.append(1)
        raise DisplayError("ssd1306: display failed: I2C bus error")

    display.show = broken
    tap(app, factory, 1)
    assert failures and [e["level"] for e in app.outbox.events()] == ["very_satisfied"]
    display.show = real_show
    clock.advance(11)
    tap(app, factory, 2)
    assert isinstance(app.model, ThanksScreen)
    assert [e["level"] for e in app.outbox.events()] == ["very_satisfied", "satisfied"]


def test_the_wal_is_checkpointed_when_idle_not_on_the_way_to_thanks(make_app):
    app, factory, clock = make_app()
    copied = []
    real = app.outbox.checkpoint

    def checkpoint():
        copied.append(real())
        return copied[-1]

    app.outbox.checkpoint = checkpoint
    clock.advance(31)
    tap(app, factory, 1)         # the press and its thanks: no checkpoint on that path
    assert copied == [] and isinstance(app.model, ThanksScreen)
    clock.advance(3.5)
    app.pump()                   # the follow-up QR after every rating: still on the way
    assert copied == []
    clock.advance(15)
    app.pump()                   # idle again: now the checkpoint runs
    assert len(copied) == 1 and copied[0] > 0
    clock.advance(1)
    app.pump()
    assert len(copied) == 1      # at most every CHECKPOINT_EVERY_S


def test_outbox_checkpoint_copies_the_wal(outbox):
    from helpers import rating

    for i in range(5):
        outbox.append(rating(i))
    assert outbox.checkpoint() > 0


def test_a_console_restart_rebuilds_the_hardware_with_the_committed_settings(tmp_path):
    import queue
    import threading

    from device.settings import SettingsStore
    from device.supervisor import Supervisor
    from sim.hardware import make_sim_hardware

    store = SettingsStore(tmp_path / "settings.toml", overrides=[f"outbox.path=\"{tmp_path / 'o.db'}\""])
    made, stop = [], threading.Event()

    def make_hardware(config):
        hardware, _ = make_sim_hardware(config, queue.Queue(), lambda: None)
        made.append((config.display.model, hardware.size))
        if len(made) == 1:
            # A technician committed a new panel, then asked for a restart.
            store.save({"display": {"model": "ssd1322", "interface": "spi"}})
            threading.Timer(0.3, supervisor.request_rebuild).start()
        else:
            threading.Timer(0.3, stop.set).start()
        return hardware

    supervisor = Supervisor(store, make_hardware)
    safety = threading.Timer(10, stop.set)   # a regression ends in the assertion, not a hang
    safety.start()
    supervisor.run(stop)
    safety.cancel()
    assert made == [("ssd1306", (128, 64)), ("ssd1322", (256, 64))]


def test_a_rating_never_reenters_the_loops_handler(make_app):
    """The commit's outcome goes on the loop's own queue: handled after, never inside, the press."""
    app, factory, _ = make_app()
    loop = app.loop
    depth, deepest, handled = [0], [0], []
    real = loop._handle_one

    def counting(event):
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        handled.append(type(event).__name__)
        try:
            real(event)
        finally:
            depth[0] -= 1

    loop._handle_one = counting
    tap(app, factory, 1)
    assert isinstance(app.model, ThanksScreen)
    assert deepest[0] == 1
    # The outcome came after the release that caused it, as an input of its own.
    assert handled.index("RatingCommitted") == handled.index("ButtonReleased") + 1


def screens_after_a_rating(app, factory, clock, button):
    """The models on the panel from the press until idle again, a second apart, with their durations."""
    seen: list[list] = []
    tap(app, factory, button)
    for _ in range(40):
        if not seen or seen[-1][0] != app.model:
            seen.append([app.model, 0])
        seen[-1][1] += 1
        if isinstance(app.model, IdleScreen):
            break
        clock.advance(1)
        app.pump()
    clock.advance(30)           # past the lockout before the next level
    app.pump()
    return [(model, seconds) for model, seconds in seen]


def test_by_default_every_level_is_thanked_and_followed_alike(make_app):
    """Privacy at the counter: nothing on the panel, nor how long it stays, tells the level."""
    app, factory, clock = make_app('reasons.dissatisfied=["401 办事效率低"]',
                                   'reasons.very_dissatisfied=["501 态度不好"]')
    paths = [screens_after_a_rating(app, factory, clock, button) for button in range(1, 6)]
    assert paths[0][0] == (ThanksScreen(), 3)
    assert paths[0][1] == (LaterScreen(qr_url=app.config.qr.url, message=FOLLOWUP_MESSAGE), 15)
    assert len(paths[0]) == 3 and isinstance(paths[0][2][0], IdleScreen)
    # The same screens for the same time; back at idle only the backlog mark has grown.
    assert all(path[:-1] == paths[0][:-1] and isinstance(path[-1][0], IdleScreen) for path in paths)
    assert [e["level"] for e in app.outbox.events()] == [level.value for level in Level]


def test_show_level_restores_the_level_and_reasons_after_a_bad_rating_only(make_app):
    app, factory, clock = make_app("display.show_level=true", 'reasons.dissatisfied=["401 办事效率低"]')
    good = screens_after_a_rating(app, factory, clock, 1)
    bad = screens_after_a_rating(app, factory, clock, 4)
    assert [type(m) for m, _ in good] == [ThanksScreen, IdleScreen]
    assert good[0][0] == ThanksScreen(Level.VERY_SATISFIED)
    assert [type(m) for m, _ in bad[:2]] == [ThanksScreen, ReasonsScreen]
    assert bad[0][0] == ThanksScreen(Level.DISSATISFIED)


def test_show_level_and_panel_care_apply_at_once_but_a_new_panel_needs_a_restart(make_app):
    import dataclasses

    from device.loop import needs_restart
    from device.ui.models import ThanksScreen as Thanks

    app, factory, _ = make_app()
    old = app.in_use.committed
    new = dataclasses.replace(old, display=dataclasses.replace(old.display, show_level=True, contrast=100))
    assert app.in_use.reconfigure(new) == []
    tap(app, factory, 4)
    assert app.model == Thanks(Level.DISSATISFIED)        # the level shown, without a restart
    panel = dataclasses.replace(new, display=dataclasses.replace(new.display, model="sh1106"))
    assert needs_restart(new, panel) == ["display.model"]
