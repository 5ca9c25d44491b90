"""OLED care: shift, dim and sleep follow the clock; a press wakes."""

import datetime
import itertools

import pytest

from device.ui import care, screens
from device.ui.care import CareConfig, apply_shift
from golden_util import SAMPLES

pytestmark = pytest.mark.timeout(30)

CFG = CareConfig()
MONDAY_10 = datetime.datetime(2025, 3, 3, 10, 0)       # open
MONDAY_20 = datetime.datetime(2025, 3, 3, 20, 0)       # closed (evening)
SATURDAY_10 = datetime.datetime(2025, 3, 8, 10, 0)     # closed (weekend)


def test_shift_cycles_every_shift_every_s():
    seen = []
    for minute in range(0, 3 * 9 * 3 + 1, 3):           # advance 3 min steps
        state = care.care(MONDAY_10, 0.0, minute * 60.0, CFG)
        seen.append(state.shift)
    cycle = care.shift_cycle(1)
    assert seen[:len(cycle)] == list(cycle)
    assert seen[len(cycle)] == (0, 0)                   # back home
    assert care.care(MONDAY_10, 0, 179.9, CFG).shift == (0, 0)
    assert care.care(MONDAY_10, 0, 180.0, CFG).shift != (0, 0)


@pytest.mark.parametrize("px", [1, 2])
def test_shift_steps_one_pixel_within_bounds(px):
    cycle = care.shift_cycle(px)
    assert len(set(cycle)) == (2 * px + 1) ** 2
    for (x0, y0), (x1, y1) in itertools.pairwise(cycle):
        assert max(abs(x1 - x0), abs(y1 - y0)) == 1
    assert all(max(abs(x), abs(y)) <= px for x, y in cycle)


def test_dims_after_idle_and_a_press_restores():
    assert care.care(MONDAY_10, 0.0, 119.0, CFG).contrast == CFG.contrast
    assert care.care(MONDAY_10, 0.0, 120.0, CFG).contrast == CFG.dim_contrast
    assert care.care(MONDAY_10, None, 5.0, CFG).contrast == CFG.dim_contrast
    assert care.care(MONDAY_10, 500.0, 501.0, CFG).contrast == CFG.contrast


def test_sleeps_outside_opening_hours():
    assert not care.care(MONDAY_10, 0, 1000, CFG).asleep
    assert care.care(MONDAY_20, 0, 1000, CFG).asleep
    assert care.care(SATURDAY_10, 0, 1000, CFG).asleep
    assert care.care(datetime.datetime(2025, 3, 3, 8, 29), 0, 1000, CFG).asleep
    assert not care.care(datetime.datetime(2025, 3, 3, 8, 30), 0, 1000,
                         CFG).asleep
    assert care.care(datetime.datetime(2025, 3, 3, 18, 0), 0, 1000, CFG).asleep
    holiday = CareConfig(closed_dates=("2025-03-03",))
    assert care.care(MONDAY_10, 0, 1000, holiday).asleep


def test_press_wakes_outside_hours_for_wake_s():
    now = 10_000.0
    assert care.care(MONDAY_20, None, now, CFG).asleep
    pressed = now                                       # a press, now
    state = care.care(MONDAY_20, pressed, now, CFG)
    assert not state.asleep and state.contrast == CFG.contrast
    assert not care.care(MONDAY_20, pressed, now + 59, CFG).asleep
    assert care.care(MONDAY_20, pressed, now + 60, CFG).asleep


def test_timezone_aware_wall_clock():
    tz = datetime.timezone(datetime.timedelta(hours=8))
    assert not care.care(MONDAY_10.replace(tzinfo=tz), 0, 1000, CFG).asleep


def test_bad_config_is_refused():
    for bad in ({"open_from": "8h30"}, {"open_days": [0]},
                {"closed_dates": ["2025-13-01"]}, {"dim_contrast": 300},
                {"shift_every_s": 0}):
        with pytest.raises(ValueError):
            CareConfig(**bad)


def test_apply_shift_moves_the_frame_and_loses_nothing():
    frame = screens.render(SAMPLES["idle"], (128, 64))
    lit = sum(frame.histogram()[1:])
    for shift in care.shift_cycle(1):
        moved = apply_shift(frame, shift)
        assert moved.size == frame.size and moved.mode == frame.mode
        assert sum(moved.histogram()[1:]) == lit, f"{shift} clipped pixels"
    dx, dy = 1, -1
    moved = apply_shift(frame, (dx, dy))
    for x, y in [(70, 10), (100, 40), (5, 20)]:
        assert moved.getpixel((x + dx, y + dy)) == frame.getpixel((x, y))
    assert apply_shift(frame, (0, 0)) is frame
