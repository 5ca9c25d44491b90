import subprocess
import sys
from pathlib import Path

import pytest

from device import config
from device.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_root_config_toml_documents_every_key_with_its_default():
    data = config.read_toml(ROOT / "config.toml")
    schema = config.as_dict(config.Config())
    assert set(data) == set(schema)
    for section, values in schema.items():
        assert set(data[section]) == set(values), section
    assert config.load([ROOT / "config.toml"]) == config.load()


def test_display_size_follows_the_model_unless_set():
    assert (config.load().display.width, config.load().display.height) == (128, 64)
    c = config.load(overrides=["display.model=ssd1322"])
    assert (c.display.width, c.display.height) == (256, 64)
    c = config.load(overrides=["display.model=ssd1327", "display.width=96"])
    assert (c.display.width, c.display.height) == (96, 128)


def test_override_parses_toml_values_and_plain_strings():
    c = config.load(overrides=["buttons.pins=[1,2,3,4,7]", "staff.name=李四", "session.min_interval_s=2"])
    assert c.buttons.pins == (1, 2, 3, 4, 7)
    assert c.staff.name == "李四"
    assert c.session.min_interval_s == 2.0


@pytest.mark.parametrize("override, key", [
    ("staff.nickname=x", "staff.nickname"),
    ("nosuch.key=1", "nosuch"),
    ("session.min_interval_s=\"soon\"", "session.min_interval_s"),
    ("buttons.pins=[5,5,6,7,8]", "buttons.pins"),
    ("display.model=ssd9999", "display.model"),
    ("upload.server=ftp//nowhere", "upload.server"),
    ("qr.url=not a url", "qr.url"),
    ("session.source=sometimes", "session.source"),
    ("display.rotate=45", "display.rotate"),
    ("upload.verify_tls=1", "upload.verify_tls"),
])
def test_each_bad_key_is_named(override, key):
    with pytest.raises(ConfigError) as info:
        config.load(overrides=[override])
    assert any(k == key for k, _ in info.value.problems), info.value.problems
    assert key in str(info.value)


def test_all_problems_are_reported_at_once(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[display]\nmodel = "nope"\n[buttons]\npins = [1, 1, 2, 3, 4]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load([path], ["qr.url=x"])
    keys = {k for k, _ in info.value.problems}
    assert {"display.model", "buttons.pins", "qr.url"} <= keys


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[device\nid = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load([path])
    assert "broken.toml" in str(info.value) and "malformed TOML" in str(info.value)


def test_staff_pin_on_a_rating_button_is_refused():
    with pytest.raises(ConfigError, match="buttons.staff_pin"):
        config.load(overrides=["session.source=staff_button", "buttons.staff_pin=5"])


@pytest.mark.parametrize("args, key", [
    (["--set", "buttons.pins=[5,5,6,7,8]"], "buttons.pins"),
    (["--set", "display.model=ssd9999"], "display.model"),
    (["--set", "upload.server=notaurl"], "upload.server"),
    (["--set", "staff.nickname=x"], "staff.nickname"),
    (["--set", "session.rating_window_s=\"long\""], "session.rating_window_s"),
])
@pytest.mark.timeout(60)
def test_the_programs_exit_nonzero_naming_the_key_without_traceback(args, key, tmp_path):
    for module in ("device", "sim"):
        result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                                timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (module, result.stderr)
        assert key in result.stderr
        assert "Traceback" not in result.stderr


def test_malformed_toml_file_makes_the_program_exit_nonzero(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("id = = 3", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "sim", "--config", str(path)], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "bad.toml" in result.stderr and "Traceback" not in result.stderr
