"""Voice prompts, the press beep, the status LED and the pins they need (issue 19).

The simulator's sound device writes what it would play to WAV files; these
tests rate every level on the simulated device and read those files back
(durations and levels measured with the ``wave`` module and sox), drive the
buzzer and LED on gpiozero's mock pins, and check the configuration refuses
an amplifier on the buttons' pins.
"""

import array
import os
import pathlib
import shutil
import subprocess
import sys
import wave
from typing import Any

import pytest
from test_deploy import load_wiring

from device import config as config_mod
from device.errors import ConfigError
from device.levels import Level
from device.outputs import led as led_mod
from device.outputs import prompts
from device.outputs.buzzer import Beeper
from device.outputs.speaker import AlsaSink, FileSink, Speaker
from device.state import (
    BEEP_OK,
    BEEP_REFUSED,
    Beep,
    ButtonPressed,
    ButtonReleased,
    CommitRating,
    RatingCommitted,
    Rules,
    Say,
    SessionOpened,
    StaffRequested,
    State,
    Tick,
    step,
)
from helpers import PINS, WEDNESDAY, Tap, run, tap

STAFF_PIN = 21
ROOT = pathlib.Path(__file__).resolve().parent.parent
AUDIO = Rules(source="staff_button", rating_window_s=30, thanks_s=3, later_s=20, audio=True)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def outputs(effects):
    return [e for e in effects if isinstance(e, Say | Beep)]


# --- what the state machine asks for -------------------------------------------------------------

def test_every_level_is_followed_by_the_same_beep_and_the_same_words():
    heard = []
    for button in range(1, 6):
        _, effects = run(AUDIO, [(0.0, StaffRequested("s")), (2.0, Tap(button))])
        heard.append(outputs(effects))
    assert heard[0] == [Say("ask"), Beep(BEEP_OK), Say("thanks")]
    assert all(h == heard[0] for h in heard)


def test_the_hint_on_expiry_and_the_other_beep_for_a_press_that_is_no_rating():
    _, effects = run(AUDIO, [(0.0, Tap(3)), (1.0, SessionOpened("h1")), (31.0, Tick())])
    # staff_button rules ignore a hall session: the press before any session gets the refusal beep only
    assert outputs(effects) == [Beep(BEEP_REFUSED)]
    hall = Rules(source="hall", rating_window_s=30, audio=True)
    _, effects = run(hall, [(0.0, SessionOpened("h1")), (31.0, Tick())])
    assert outputs(effects) == [Say("ask"), Say("hint")]


def test_free_mode_only_thanks_and_the_lockout_press_gets_the_refusal():
    free = Rules(source="free", min_interval_s=10, audio=True)
    _, effects = run(free, [(0.0, Tap(1)), (2.0, Tap(5))])
    assert outputs(effects) == [Beep(BEEP_OK), Say("thanks"), Beep(BEEP_REFUSED)]


def test_with_audio_off_the_state_machine_asks_for_no_sound():
    quiet = Rules(source="staff_button")
    _, effects = run(quiet, [(0.0, StaffRequested("s")), (2.0, Tap(4)), (3.0, Tap(4))])
    assert outputs(effects) == []


def test_sound_comes_only_after_the_commit():
    state, effects = step(State(), StaffRequested("s"), 0.0, AUDIO)
    state, _ = step(state, ButtonPressed(2), 1.0, AUDIO)
    state, effects = step(state, ButtonReleased(2), 1.1, AUDIO)
    assert [type(e) for e in effects] == [CommitRating]    # nothing sounds before the rating is on disk
    _, effects = step(state, RatingCommitted(Level.SATISFIED, "r1"), 1.2, AUDIO)
    assert effects == [Beep(BEEP_OK), Say("thanks")]


# --- the prompts -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("prompts")
    assert sorted(prompts.render(str(folder))) == ["ask", "hint", "thanks"]
    return folder


def measure(path):
    """``(seconds, peak, rms)`` of a 16-bit WAV file, from its samples."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        frames = w.readframes(w.getnframes())
        seconds = w.getnframes() / w.getframerate()
    samples = array.array("h")
    samples.frombytes(frames)
    peak = max(abs(s) for s in samples) / 32768
    rms = (sum(s * s for s in samples) / len(samples)) ** 0.5 / 32768
    return seconds, peak, rms


def test_prompts_rendered_with_espeak_ng_are_mandarin_speech_of_sensible_length(rendered):
    for name in prompts.TEXTS:
        seconds, peak, rms = measure(rendered / f"{name}.wav")
        assert 0.8 < seconds < 8.0 and peak > 0.3 and rms > 0.02, name
    # sox reads the same files and agrees on the length (soxi -D prints seconds)
    if shutil.which("soxi"):
        sox = float(subprocess.run(["soxi", "-D", str(rendered / "thanks.wav")], capture_output=True, text=True,
                                   check=True).stdout)
        assert abs(sox - measure(rendered / "thanks.wav")[0]) < 0.01
    # rendering again changes nothing: a file already there is kept
    assert prompts.render(str(rendered)) == []


def test_a_halls_recording_wins_and_a_bad_one_is_reported(rendered, tmp_path):
    recordings = tmp_path / "hall"
    recordings.mkdir()
    with wave.open(str(recordings / "thanks.wav"), "wb") as w:   # the hall's own 谢谢, 1 s of a tone
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(array.array("h", [8000 if i % 40 < 20 else -8000 for i in range(16000)]).tobytes())
    (recordings / "ask.wav").write_bytes(b"RIFF not really")
    loaded, problems = prompts.load(str(rendered), str(recordings), 100)
    assert loaded["thanks"].source == "recording" and abs(loaded["thanks"].seconds - 1.0) < 0.01
    assert loaded["ask"].source == "rendered"                  # the bad recording is not used ...
    assert len(problems) == 1 and "ask.wav" in problems[0]    # ... and it is named


def test_volume_scales_the_samples_once(rendered):
    loud, _ = prompts.load(str(rendered), "", 100)
    soft, _ = prompts.load(str(rendered), "", 25)
    folder = rendered.parent
    (folder / "loud.wav").write_bytes(loud["thanks"].wav)
    (folder / "soft.wav").write_bytes(soft["thanks"].wav)
    (l_s, l_peak, _), (s_s, s_peak, _) = measure(folder / "loud.wav"), measure(folder / "soft.wav")
    assert l_s == s_s and abs(s_peak - l_peak / 4) < 0.01


# --- the simulated device ----------------------------------------------------------------------------

@pytest.fixture
def voiced(make_app, rendered, tmp_path):
    """An app in staff_button mode with voice and beep on, its speaker writing WAV files."""
    started = []

    def make(*overrides):
        app, factory, clock = make_app(
            'session.source="staff_button"', "audio.enabled=true", f'audio.prompts_dir="{rendered}"',
            f'audio.recordings_dir="{tmp_path / "none"}"', "audio.buzzer_pin=12", "led.pin=22", *overrides)
        app.outputs.start(app.led_status)
        started.append(app)
        sound = tmp_path / "sound"
        return app, factory, clock, sound
    yield make
    for app in started:
        app.outputs.stop()


def played(app, sound):
    assert app.outputs.wait_idle()
    return sorted(os.listdir(sound))


def staff_key(app, factory):
    pin = factory.pin(STAFF_PIN)
    pin.drive_low()
    pin.drive_high()
    app.pump()


def test_the_simulator_plays_the_prompt_and_the_same_thanks_for_every_level(voiced, rendered):
    app, factory, clock, sound = voiced()
    for button in range(1, 6):
        staff_key(app, factory)
        assert played(app, sound)[-1].endswith("-ask.wav")
        tap(app, factory, button)
        assert played(app, sound)[-1].endswith("-thanks.wav")
        clock.advance(11)                     # the next service, past session.min_interval_s
        app.pump()
    files = played(app, sound)
    assert [f.split("-", 1)[1] for f in files] == ["ask.wav", "thanks.wav"] * 5
    thanks = {(sound / f).read_bytes() for f in files if f.endswith("thanks.wav")}
    assert len(thanks) == 1                   # the same bytes after every level
    seconds, peak, _ = measure(sound / files[1])
    assert seconds == measure(rendered / "thanks.wav")[0] and peak > 0.2   # volume 70 %: still clearly heard
    assert [e["level"] for e in app.outbox.events() if e["type"] == "rating"] == [
        "very_satisfied", "satisfied", "basically_satisfied", "dissatisfied", "very_dissatisfied"]


def test_the_hint_when_the_window_expires(voiced):
    app, factory, clock, sound = voiced()
    staff_key(app, factory)
    assert played(app, sound)[-1].endswith("-ask.wav")
    clock.advance(31)
    app.pump()
    assert [f.split("-", 1)[1] for f in played(app, sound)] == ["ask.wav", "hint.wav"]
    assert [e["type"] for e in app.outbox.events()] == ["unrated"]


def test_nothing_is_heard_outside_opening_hours(voiced):
    app, factory, clock, sound = voiced("hours.open_days=[1,2,3,4,5]", 'hours.open_from="08:30"',
                                        'hours.open_until="18:00"')
    clock.wall = WEDNESDAY.replace(hour=20)
    staff_key(app, factory)
    tap(app, factory, 1)                      # wakes the sleeping panel only
    tap(app, factory, 1)
    assert played(app, sound) == []
    assert app.outputs.speaker.skipped == 2 and app.outputs.beeper.beeps == 0
    assert [e["level"] for e in app.outbox.events()] == ["very_satisfied"]


def test_a_missing_sound_device_is_a_fault_and_rating_goes_on(make_app, rendered, tmp_path):
    app, factory, _ = make_app("audio.enabled=true", f'audio.prompts_dir="{rendered}"')
    app.outputs.speaker.sink = AlsaSink("plughw:CARD=NoSuchCard", proc_root=str(tmp_path))
    app.outputs.start(app.led_status)
    tap(app, factory, 2)
    assert app.outputs.wait_idle()
    assert app.outputs.speaker.played == 0
    faults = app._extra_faults()              # what the heartbeat carries
    assert any(f.startswith("audio: sound device: ") and "NoSuchCard" in f for f in faults), faults
    assert [e["level"] for e in app.outbox.events()] == ["satisfied"]
    app.outputs.stop()


def test_the_buzzer_beeps_once_for_a_rating_and_twice_for_a_press_that_is_none(voiced):
    app, factory, _, _ = voiced()
    pin = factory.pin(12)
    tap(app, factory, 3)                      # no session: not a rating
    assert app.outputs.wait_idle()
    refused = [s.state for s in pin.states][1:]
    assert refused == [True, False, True, False]
    staff_key(app, factory)
    tap(app, factory, 3)
    assert app.outputs.wait_idle()
    assert [s.state for s in pin.states][1 + len(refused):] == [True, False]


def test_the_status_led_is_steady_when_ready_and_blinks_for_offline_and_faults(monkeypatch):
    import time

    from gpiozero import LED
    from gpiozero.pins.mock import MockFactory

    # the blink rates ten times faster, so the test takes a third of a second
    monkeypatch.setattr(led_mod, "BLINK", {k: (on / 10, off / 10) for k, (on, off) in led_mod.BLINK.items()})
    factory = MockFactory()
    status = led_mod.StatusLed(LED(22, pin_factory=factory))
    pin = factory.pin(22)
    status.show(led_mod.READY)
    assert pin.state is True
    status.show(led_mod.FAULT)
    pin.clear_states()
    time.sleep(0.3)
    fast = sum(1 for s in pin.states if s.state)     # about 10 flashes
    status.show(led_mod.OFFLINE)
    pin.clear_states()
    time.sleep(0.3)
    slow = sum(1 for s in pin.states if s.state)     # one or two
    assert fast >= 4 and 1 <= slow <= 2, (fast, slow)
    status.close()
    factory.reset()


def test_the_app_tells_the_led_offline_with_a_backlog_and_fault_without_a_key(voiced, monkeypatch):
    app, factory, _, _ = voiced()
    assert app.led_status() == led_mod.FAULT     # the test app has no device key: nothing is uploaded
    monkeypatch.setattr(app, "_extra_faults", list)
    monkeypatch.setattr(app.uplink, "offline", lambda: True)
    assert app.led_status() == led_mod.READY     # offline, but nothing waits
    staff_key(app, factory)
    tap(app, factory, 1)
    assert app.led_status() == led_mod.OFFLINE   # offline with a backlog
    monkeypatch.setattr(app.uplink, "offline", lambda: False)
    assert app.led_status() == led_mod.READY


# --- pins ---------------------------------------------------------------------------------------------

def test_an_i2s_amplifier_on_the_default_button_pins_is_refused_naming_the_keys():
    with pytest.raises(ConfigError) as caught:
        config_mod.load(overrides=['audio.output="i2s"'])
    problems = dict(caught.value.problems)
    assert problems["buttons.pins"].startswith("pin 19 is I2S LRCLK")
    assert problems["buttons.staff_pin"].startswith("pin 21 is I2S DOUT")


def test_the_accessible_wiring_uses_no_pin_twice():
    config = config_mod.load(overrides=[*ACCESSIBLE])
    assert config.audio.output == "i2s"
    for overrides, key in ((["audio.buzzer_pin=5"], "audio.buzzer_pin"), (["led.pin=12"], "led.pin"),
                           (["led.pin=18"], "led.pin"), (["audio.buzzer_pin=3"], "audio.buzzer_pin")):
        with pytest.raises(ConfigError) as caught:
            config_mod.load(overrides=[*ACCESSIBLE, *overrides])
        assert key in dict(caught.value.problems), overrides


def test_usb_audio_needs_no_pins():
    config = config_mod.load(overrides=['audio.output="usb"', "audio.enabled=true"])
    assert config.buttons.pins == PINS


#: The pins of docs/accessibility.md: buttons and staff key away from the amplifier's 18-21.
ACCESSIBLE = ['audio.output="i2s"', "audio.enabled=true", "buttons.pins=[5, 6, 13, 16, 26]",
              "buttons.staff_pin=17", "audio.buzzer_pin=12", "led.pin=22"]


def test_file_sink_and_speaker_alone(rendered, tmp_path):
    config = config_mod.load(overrides=["audio.enabled=true", f'audio.prompts_dir="{rendered}"'])
    speaker = Speaker(config, FileSink(str(tmp_path / "out")))
    speaker.start()
    speaker.handle(Say("thanks"))
    assert speaker.wait_idle()
    speaker.stop()
    assert os.listdir(tmp_path / "out") == ["00001-thanks.wav"]


def test_a_beeper_whose_pin_fails_reports_it():
    class Broken:
        def on(self):
            raise OSError("line busy")

    beeper = Beeper(Broken(), sleep=lambda s: None)
    beeper.start()
    beeper.handle(Beep(BEEP_OK))
    assert beeper.wait_idle()
    beeper.stop()
    assert "line busy" in beeper.fault


# --- the wiring with the amplifier ------------------------------------------------------------------

def test_the_accessible_wiring_diagram_and_table_are_made_from_its_configuration():
    from PIL import Image

    wiring = load_wiring()
    config = config_mod.load([ROOT / "docs" / "accessibility.toml"])
    assert config_mod.load(overrides=ACCESSIBLE).buttons == config.buttons   # the profile the tests use
    wires = wiring.connections(config)
    table = wiring.markdown(config, wires)
    page = (ROOT / "docs" / "accessibility.md").read_text()
    hint = "python tools/wiring.py --config docs/accessibility.toml --out docs/wiring-access.png " \
           "--readme docs/accessibility.md"
    assert f"{wiring.BEGIN}\n{table}{wiring.END}" in page, hint
    with Image.open(ROOT / "docs" / "wiring-access.png") as image:
        assert image.info["wiring-digest"] == wiring.digest(table), hint
    by_what = {w.what: (w.gpio, w.header) for w in wires}
    assert by_what["amplifier BCLK"] == (18, 12) and by_what["amplifier LRC"] == (19, 35)
    assert by_what["amplifier DIN"] == (21, 40)
    headers = [w.header for w in wires]
    assert len(headers) == len(set(headers))               # no header pin used twice
    gpios = [w.gpio for w in wires if w.gpio is not None]
    assert len(gpios) == len(set(gpios))                   # no GPIO used twice
    assert not {18, 19, 20, 21} & {*config.buttons.pins, config.buttons.staff_pin}


def test_usb_audio_in_the_wiring_table_takes_no_pin():
    wiring = load_wiring()
    config = config_mod.load(overrides=['audio.output="usb"', "audio.enabled=true"])
    table = wiring.markdown(config, wiring.connections(config))
    assert "| speaker | USB sound card | a USB port" in table and "amplifier" not in table


def test_the_voice_benchmark_runs_and_prints_both_figures():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_voice.py"), "--presses", "20", "--rounds",
                             "1", "--play-ms", "5", "--pace-ms", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "voice off p50" in result.stdout and "voice on p50" in result.stdout and "ratio p99" in result.stdout


# --- the LED in recovery, and settings over the console ------------------------------------------------

def test_the_led_is_ready_when_running_and_blinks_fast_in_recovery(tmp_path, hall):
    import dataclasses
    import time

    from test_supervisor import Rig

    from device.config import LedSection
    from device.hardware import staff_request
    from device.supervisor import RECOVERY, RUNNING
    from sim.hardware import make_sim_hardware

    made: dict[str, Any] = {}

    def hardware_with_led(config):
        while "rig" not in made:          # the supervisor's thread starts inside Rig()
            time.sleep(0.01)
        # (the hardware is built once: its sound sink is there for the voice turned on later)
        config = dataclasses.replace(config, led=LedSection(pin=22),
                                     audio=dataclasses.replace(config.audio, enabled=True))
        hardware, made["factory"] = make_sim_hardware(config, made["rig"].events, staff_request)
        made["hardware"] = hardware
        return hardware

    made["rig"] = r = Rig(tmp_path, hall, make_hardware=hardware_with_led)
    try:
        r.wait_mode(RUNNING)
        led = made["hardware"].led
        deadline = time.monotonic() + 10
        while led.state != led_mod.READY:
            assert time.monotonic() < deadline, led.state
            time.sleep(0.05)
        # Voice on, with prompts that cannot be made: the console's Status names it, and rating goes on.
        r.store.save({"audio": {"enabled": True, "prompts_dir": "/proc/nope/prompts", "recordings_dir": ""}})
        r.tech("Restart")
        deadline = time.monotonic() + 10
        while not any(f["code"] == "audio" for f in r.tech("Status").get("faults", [])):
            assert time.monotonic() < deadline, r.tech("Status")
            time.sleep(0.1)
        audio = next(f for f in r.tech("Status")["faults"] if f["code"] == "audio")
        assert "prompts missing: ask, thanks, hint" in audio["message"] and audio["fix"]
        assert r.supervisor.mode == RUNNING
        r.store.save({"outbox": {"path": "/proc/nope/outbox.db"}})
        r.tech("Restart")
        r.wait_mode(RECOVERY)
        assert led.state == led_mod.FAULT
    finally:
        r.close()


def test_audio_keys_need_a_restart_and_large_text_applies_at_once():
    from device.loop import needs_restart

    old = config_mod.load()
    new = config_mod.load(overrides=["audio.enabled=true", "led.pin=22", "display.large_text=true"])
    assert needs_restart(old, new) == ["audio.enabled", "led.pin"]


def test_a_buzzer_without_a_speaker_is_quiet_outside_hours_too(make_app):
    app, factory, clock = make_app("audio.enabled=true", "audio.buzzer_pin=12", "hours.open_days=[1,2,3,4,5]",
                                   'hours.open_from="08:30"', 'hours.open_until="18:00"')
    app.outputs.speaker = None
    app.outputs.start(app.led_status)
    clock.wall = WEDNESDAY.replace(hour=7)
    tap(app, factory, 1)
    tap(app, factory, 1)
    assert app.outputs.wait_idle()
    assert app.outputs.beeper.beeps == 0 and len(app.outbox.events()) == 1
    app.outputs.stop()


def test_a_passive_buzzer_plays_a_high_tone_for_a_rating_and_a_low_one_for_a_refusal(make_app, rendered):
    app, factory, _ = make_app("audio.enabled=true", f'audio.prompts_dir="{rendered}"', "audio.buzzer_pin=12",
                               "audio.buzzer_tonal=true", "session.min_interval_s=10")
    from gpiozero.pins.mock import MockPWMPin

    pin = factory.pin(12, pin_class=MockPWMPin)
    tones = []
    original = pin._set_frequency

    def frequency(value):
        tones.append(value)
        original(value)
    pin._set_frequency = frequency
    app.outputs.start(app.led_status)
    tap(app, factory, 5)                      # a rating
    assert app.outputs.wait_idle()
    tap(app, factory, 5)                      # inside the lockout: no rating
    assert app.outputs.wait_idle()
    app.outputs.stop()
    assert [round(t) for t in tones if t] == [1760, 440, 440]
    assert [s.state for s in pin.states][1:] == [0.5, 0.0] * 3
