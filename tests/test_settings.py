"""Settings overlay, atomic writes and the PIN store."""

import json
import os
import stat
from typing import Any

import pytest

from device import settings as settings_mod
from device.errors import ConfigError
from device.settings import PinStore, SettingsError, SettingsStore, render_overlay, write_atomic

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


# --- atomic writes --------------------------------------------------------------

def test_write_atomic_replaces_with_mode_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f"
    write_atomic(path, b"old", mode=0o644)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_write_atomic_names_the_file_when_it_fails(tmp_path):
    with pytest.raises(SettingsError, match="missing"):
        write_atomic(tmp_path / "missing" / "f", b"x")


OLD = {"staff": {"name": "张三", "no": "0001"}}
NEW = {"staff": {"name": "李四", "no": "0002"}, "device": {"window_no": "12"}}


def _steps():
    """Each way a write can be cut: (what fails, on which call, does it reach the new file)."""
    return [("write", 1, False), ("fsync", 1, False), ("replace", 1, False),
            ("fsync", 2, True), ("fchmod", 1, False)]


@pytest.mark.parametrize("what, nth, lands", _steps())
@pytest.mark.parametrize("power_cut", [False, True], ids=["error", "power-cut"])
def test_an_interrupted_settings_write_leaves_old_or_new(tmp_path, monkeypatch, what, nth, lands, power_cut):
    store = SettingsStore(tmp_path / "settings.toml")
    store.save(OLD)
    old_config, new_config = store.build(OLD), store.build(NEW)
    real = getattr(os, what)
    calls = {"n": 0}

    def cut(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            raise OSError(5, f"{what} interrupted")
        return real(*args, **kwargs)
    monkeypatch.setattr(os, what, cut)
    if power_cut:
        # A power cut runs no clean-up: the temporary file stays behind.
        monkeypatch.setattr(os, "unlink", lambda p: None)
    with pytest.raises(SettingsError):
        store.save(NEW)
    monkeypatch.undo()
    loaded = store.load()
    assert loaded == (new_config if lands else old_config)
    if not power_cut:
        assert os.listdir(tmp_path) == ["settings.toml"]
    # Whatever is left behind, the next write succeeds and loads.
    store.save(NEW)
    assert store.load() == new_config


def test_overlay_renders_and_reads_back_anything_a_value_can_hold(tmp_path):
    store = SettingsStore(tmp_path / "settings.toml")
    overlay: dict[str, dict[str, Any]] = {
        "staff": {"name": 'Wang "Wu" \\ 王五', "no": "007"}, "buttons": {"pins": [4, 17, 27, 22, 23]},
        "session": {"rating_window_s": 45.0, "source": "hall"}, "upload": {"verify_tls": False}}
    store.save(overlay)
    config = store.load()
    assert config.staff.name == 'Wang "Wu" \\ 王五' and config.staff.no == "007"
    assert config.buttons.pins == (4, 17, 27, 22, 23) and config.upload.verify_tls is False
    assert "[staff]" in render_overlay(overlay)


def test_overlay_comes_after_files_and_overrides(tmp_path):
    base = tmp_path / "config.toml"
    base.write_text('[staff]\nname = "文件"\nno = "1"\n[device]\nwindow_no = "03"\n', encoding="utf-8")
    overlay = tmp_path / "settings.toml"
    SettingsStore(overlay).save({"staff": {"name": "面板"}})
    config = SettingsStore(overlay, [base], ["staff.name=命令行", "staff.no=\"9\""]).load()
    assert (config.staff.name, config.staff.no, config.device.window_no) == ("面板", "9", "03")
    assert SettingsStore(tmp_path / "none.toml", [base], []).load().staff.name == "文件"


def test_a_bad_overlay_is_reported_with_every_key(tmp_path):
    store = SettingsStore(tmp_path / "settings.toml")
    with pytest.raises(ConfigError) as e:
        store.build({"session": {"source": "nowhere"}, "display": {"rotate": 45}, "nosuch": {"x": 1}})
    assert {k for k, _ in e.value.problems} == {"session.source", "display.rotate", "nosuch"}
    (tmp_path / "settings.toml").write_text("[staff\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed"):
        store.load()


# --- the PIN ----------------------------------------------------------------------

def test_pin_is_stored_as_a_salted_slow_hash(tmp_path):
    pins = PinStore(tmp_path / "console.pin")
    assert not pins.is_set() and pins.verify("anything").ok  # factory-new
    pins.set("2468")
    raw = (tmp_path / "console.pin").read_text()
    data = json.loads(raw)
    assert "2468" not in raw and data["algo"] == "scrypt" and data["n"] >= 2 ** 14
    assert stat.S_IMODE(os.stat(tmp_path / "console.pin").st_mode) == 0o600
    first_salt = data["salt"]
    pins.set("2468")
    assert json.loads((tmp_path / "console.pin").read_text())["salt"] != first_salt
    assert pins.verify("2468").ok and not pins.verify("2469").ok


@pytest.mark.parametrize("pin", ["123", "12 34", "1\x0034", "x" * 33])
def test_unacceptable_pins_are_refused(tmp_path, pin):
    with pytest.raises(ValueError):
        PinStore(tmp_path / "p").set(pin)


def test_lockout_grows_and_survives_a_reboot(tmp_path):
    clock = Clock()
    pins = PinStore(tmp_path / "console.pin", clock=clock)
    pins.set("2468")
    assert [pins.verify("0").retry_after_s for _ in range(3)] == [0, 0, 30]
    locked = pins.verify("2468")
    assert not locked.ok and locked.locked and locked.retry_after_s == 30
    # A reboot (a new store on the same file) does not reset it.
    rebooted = PinStore(tmp_path / "console.pin", clock=clock)
    assert rebooted.verify("2468").locked
    clock.t += 30
    assert rebooted.verify("0").retry_after_s == 60
    clock.t += 60
    assert rebooted.verify("0").retry_after_s == 120
    clock.t += 120
    assert rebooted.verify("2468").ok
    assert rebooted.tries_left() == 3


def test_lockout_delay_is_capped(tmp_path):
    pins = PinStore(tmp_path / "p", clock=Clock(), max_delay_s=3600)
    assert pins.delay_for(3) == 30 and pins.delay_for(8) == 960 and pins.delay_for(50) == 3600


def test_a_clock_that_jumps_back_does_not_lock_forever(tmp_path):
    clock = Clock()
    pins = PinStore(tmp_path / "p", clock=clock)
    pins.set("2468")
    for _ in range(3):
        pins.verify("0")
    clock.t -= 10 * 365 * 86400  # booted without a battery clock
    assert pins.retry_after() <= 30


def test_a_damaged_pin_file_keeps_the_console_locked(tmp_path):
    path = tmp_path / "console.pin"
    path.write_text("{not json")
    pins = PinStore(path)
    assert pins.is_set()
    verdict = pins.verify("2468")
    assert not verdict.ok and verdict.locked
    pins.clear()
    assert not pins.is_set()


def test_remove_durably_ignores_a_missing_file(tmp_path):
    settings_mod.remove_durably(tmp_path / "none")


# --- a commit of settings and key as one unit -------------------------------------------------

KEY_OLD, KEY_NEW = "old-key-0123456789abcdef", "new-key-0123456789abcdef"


def _store(tmp_path):
    return SettingsStore(tmp_path / "settings.toml", overrides=[f'upload.key_file="{tmp_path / "device.key"}"'])


def _pair(tmp_path):
    """``(staff.no, key)`` after a start (the store recovers first)."""
    store = _store(tmp_path)
    no = store.load().staff.no
    key = (tmp_path / "device.key").read_text() if (tmp_path / "device.key").exists() else ""
    return no, key


def _cuts():
    """Every system call of a commit that a power cut can stop before."""
    return [("open", n) for n in (1, 2, 3)] + [("fsync", n) for n in (1, 2, 3, 4, 5)] + \
        [("replace", n) for n in (1, 2, 3)] + [("unlink", 1)]


@pytest.mark.parametrize("what, nth", _cuts())
def test_a_commit_with_the_key_lands_whole_or_not_at_all(tmp_path, monkeypatch, what, nth):
    store = _store(tmp_path)
    store.commit({"staff": {"no": "1"}}, key=(str(tmp_path / "device.key"), KEY_OLD.encode()))
    real = getattr(os, what)
    calls = {"n": 0}

    class PowerCut(BaseException):
        """Nothing runs after it: no clean-up, as after a real power cut."""

    def cut(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            raise PowerCut
        return real(*args, **kwargs)
    monkeypatch.setattr(os, what, cut)
    with pytest.raises(PowerCut):
        store.commit({"staff": {"no": "2"}}, key=(str(tmp_path / "device.key"), KEY_NEW.encode()))
    monkeypatch.undo()
    assert _pair(tmp_path) in (("1", KEY_OLD), ("2", KEY_NEW))
    # Nothing staged or temporary is left, and each key is in the key file or nowhere.
    assert sorted(os.listdir(tmp_path)) == ["device.key", "settings.toml"]
    assert sum(KEY_NEW.encode() in p.read_bytes() or KEY_OLD.encode() in p.read_bytes()
               for p in tmp_path.iterdir()) == 1


def test_a_failed_commit_changes_nothing_and_leaves_nothing(tmp_path, monkeypatch):
    store = _store(tmp_path)
    store.commit({"staff": {"no": "1"}}, key=(str(tmp_path / "device.key"), KEY_OLD.encode()))
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(SettingsError, match="nothing changed"):
        store.commit({"staff": {"no": "2"}}, key=(str(tmp_path / "device.key"), KEY_NEW.encode()))
    monkeypatch.setattr(os, "fsync", real)
    assert _pair(tmp_path) == ("1", KEY_OLD) and sorted(os.listdir(tmp_path)) == ["device.key", "settings.toml"]


def test_a_new_key_file_place_takes_the_key_along(tmp_path):
    store = _store(tmp_path)
    store.commit(None, key=(str(tmp_path / "device.key"), KEY_OLD.encode()))
    moved = tmp_path / "keys" / "device.key"
    moved.parent.mkdir()
    store.commit({"upload": {"key_file": str(moved)}}, move=(str(tmp_path / "device.key"), str(moved)))
    assert moved.read_text() == KEY_OLD and not (tmp_path / "device.key").exists()


def test_stray_temporary_files_of_ours_are_scrubbed_at_start_and_others_left(tmp_path):
    (tmp_path / ".device.key.ab12cd34.tmp").write_text(KEY_OLD)
    (tmp_path / ".settings.toml.zz99yy88.tmp").write_text("[staff]")
    (tmp_path / "device.key.next").write_text(KEY_NEW)
    (tmp_path / ".someone-else.ab12cd34.tmp").write_text("not ours")
    store = SettingsStore(tmp_path / "settings.toml", overrides=[f'upload.key_file="{tmp_path / "device.key"}"'])
    store.load()
    assert sorted(os.listdir(tmp_path)) == [".someone-else.ab12cd34.tmp"]
