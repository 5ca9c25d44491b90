"""The buzzer, the status LED and a missing sound device on the fake Pi (issue 19).

The production program (``python -m device``) runs on the fake Pi; gpiozero's
real lgpio pin factory drives the buzzer's and the LED's lines, and the fake
kernel records every level the program puts on an output line, with its time.
"""

import itertools
import shutil
import time

import pytest
from test_fakepi import PINS, Device, ratings

pytestmark = pytest.mark.timeout(120)

BUZZER, LED = 12, 22


def edges_after(d, gpio, since, settle=0.6):
    """The levels put on ``gpio`` after monotonic ``since``, once it has been quiet ``settle`` seconds."""
    time.sleep(settle)
    return [(t, level) for t, level in d.pi.output_edges(gpio) if t >= since]


def durations(edges):
    return [round(b[0] - a[0], 2) for a, b in itertools.pairwise(edges)]


@pytest.fixture
def voiced(tmp_path, hall):
    made = []

    def make(*overrides):
        d = Device(tmp_path, hall, args=[
            "--set", "audio.enabled=true", "--set", f"audio.buzzer_pin={BUZZER}", "--set", f"led.pin={LED}",
            "--set", 'audio.output="usb"', "--set", 'audio.device="plughw:CARD=NoSuchCard,DEV=0"',
            "--set", f'audio.prompts_dir="{tmp_path / "prompts"}"', "--set", 'audio.recordings_dir=""',
            "--set", "upload.heartbeat_s=1", *overrides])
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def test_beeps_on_the_buzzer_line_and_a_missing_sound_card_is_a_fault_while_rating_goes_on(voiced, hall):
    d = voiced()
    d.child.wait_for(r"screen: idle")
    start = time.monotonic()
    mark = len(d.child.log())
    d.pi.press(PINS[0], ms=80)
    d.child.wait_for(r"screen: thanks", after=mark)
    assert [e["level"] for e in ratings(hall)] == ["very_satisfied"]       # rated, with no sound card
    beep = edges_after(d, BUZZER, start)
    assert [level for _, level in beep] == [1, 0]                          # one beep for a rating ...
    assert 0.1 <= durations(beep)[0] <= 0.5                                 # ... of 120 ms
    # Two buttons at once are no rating: two short beeps instead.
    start = time.monotonic()
    d.pi.drive(PINS[1], 0)
    d.pi.drive(PINS[2], 0)
    time.sleep(0.1)
    d.pi.drive(PINS[1], None)
    d.pi.drive(PINS[2], None)
    refused = edges_after(d, BUZZER, start)
    assert [level for _, level in refused] == [1, 0, 1, 0]
    assert all(0.05 <= s <= 0.4 for s in durations(refused))               # 70 ms each
    assert len(ratings(hall, timeout=0.5)) == 1
    # The missing sound card: named in the log and in the heartbeat; the LED blinks fast.
    d.child.wait_for(r"voice: .*(sound card|sound device)")
    deadline = time.monotonic() + 15
    while not any(f.startswith("audio: ") for f in hall.heartbeats.get("WE-0001", {}).get("faults", [])):
        assert time.monotonic() < deadline, hall.heartbeats
        time.sleep(0.2)
    start = time.monotonic()
    blink = edges_after(d, LED, start, settle=1.2)
    assert len(blink) >= 5 and all(0.08 <= s <= 0.5 for s in durations(blink)), blink   # 0.15 s each


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_the_prompts_are_rendered_at_the_first_start(voiced, tmp_path):
    d = voiced()
    d.child.wait_for(r"voice prompts rendered with espeak-ng: ask, thanks, hint")
    d.child.wait_for(r"voice prompts ready: ask \(rendered")
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["ask.wav", "hint.wav", "thanks.wav"]


def test_the_led_is_steady_when_ready(tmp_path, hall):
    d = Device(tmp_path, hall, args=["--set", f"led.pin={LED}"])
    try:
        d.child.wait_for(r"screen: idle")
        time.sleep(1.2)
        assert [level for _, level in d.pi.output_edges(LED)] == [1]        # on, and it stays on
    finally:
        d.close()


@pytest.mark.slow
def test_the_led_blinks_slowly_offline_with_a_backlog(tmp_path, hall):
    d = Device(tmp_path, hall, args=["--set", f"led.pin={LED}", "--set", "upload.backoff_min_s=0.2"])
    try:
        d.child.wait_for(r"screen: idle")
        hall.stop()                                                         # the hall goes away
        mark = len(d.child.log())
        d.pi.press(PINS[3], ms=80)
        d.child.wait_for(r"screen: thanks", after=mark)
        deadline = time.monotonic() + 15
        while len(d.pi.output_edges(LED)) < 4:
            assert time.monotonic() < deadline, d.child.log()[-2000:]
            time.sleep(0.2)
        start = time.monotonic()
        blink = edges_after(d, LED, start, settle=3.2)
        assert len(blink) >= 2 and all(0.8 <= s <= 1.6 for s in durations(blink)), blink   # 1 s each
    finally:
        d.close()
