import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

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
    c = config.load(overrides=["display.model=ssd1322", "display.interface=spi"])  # SPI only
    assert (c.display.width, c.display.height) == (256, 64)
    c = config.load(overrides=["display.model=ssd1306", "display.height=32"])
    assert (c.display.width, c.display.height) == (128, 32)
    with pytest.raises(ConfigError, match=r"display\.width: the ssd1327 drives 128x128 only"):
        config.load(overrides=["display.model=ssd1327", "display.width=96"])


def test_override_parses_toml_values_and_plain_strings():
    c = config.load(overrides=["buttons.pins=[1,4,7,8,9]", "staff.name=李四", "session.min_interval_s=2"])
    assert c.buttons.pins == (1, 4, 7, 8, 9)
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
    with pytest.raises(ConfigError, match=r"buttons\.staff_pin"):
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
    for command in (["device", "--check"], ["sim"]):
        result = subprocess.run([sys.executable, "-m", *command, *args], capture_output=True, text=True,
                                timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (command, result.stderr)
        assert key in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_the_device_with_a_bad_setting_names_it_and_stays_up_in_recovery(tmp_path):
    """The console outlives a bad configuration: the program neither exits nor prints a traceback."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "device", "--set", "display.model=ssd9999",
                             "--set", f"console.settings_path=\"{tmp_path / 'settings.toml'}\""],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    time.sleep(3)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    stderr = proc.stderr.read()
    assert "display.model" in stderr and "recovery" in stderr and "Traceback" not in stderr


def test_malformed_toml_file_makes_the_program_exit_nonzero(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("id = = 3", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "sim", "--config", str(path)], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "bad.toml" in result.stderr and "Traceback" not in result.stderr


# --- one value at a time: parse_value / format_value ----------------------------

@pytest.mark.parametrize("key, text, value", [
    ("staff.name", "欧阳 娜娜", "欧阳 娜娜"),          # a string needs no quotes ...
    ("staff.name", '"  padded "', "  padded "),       # ... but may have them
    ("staff.no", "0123", "0123"),                     # digits of a string key stay text
    ("session.rating_window_s", "45", 45.0),          # an integer widens to a number
    ("buttons.pins", "[4, 17, 27, 22, 23]", (4, 17, 27, 22, 23)),
    ("upload.verify_tls", "false", False),
])
def test_parse_value_reads_what_a_technician_types(key, text, value):
    parsed = config.parse_value(key, text)
    assert parsed == value and type(parsed) is type(value)
    assert config.parse_value(key, config.format_value(key, parsed)) == value


@pytest.mark.parametrize("key, text, problem_key, why", [
    ("session.rating_window_s", "soon", "session.rating_window_s", "must be a number"),
    ("upload.verify_tls", "1", "upload.verify_tls", "must be true or false"),
    ("staff.name", '"unbalanced', "staff.name", "unbalanced quotes"),
    ("staff.name", "tab\u0007bell", "staff.name", "control characters"),
    ("staff.nickname", "x", "staff.nickname", "unknown key"),
    ("nosuch.key", "1", "nosuch", "unknown section"),
])
def test_parse_value_names_the_key_it_refuses(key, text, problem_key, why):
    with pytest.raises(ConfigError) as info:
        config.parse_value(key, text)
    ((named, message),) = info.value.problems
    assert named == problem_key and why in message


def test_format_value_writes_toml_that_reads_back_and_never_a_secret():
    tricky = 'Wang "Wu" \\ 王五\t\x7f'
    assert config.format_value("staff.name", tricky) == '"Wang \\"Wu\\" \\\\ 王五\\t\\u007f"'
    assert tomllib.loads(f"v = {config.format_value('staff.name', tricky)}")["v"] == tricky
    assert config.format_value("buttons.pins", [5, 6, 13, 19, 26]) == "[5, 6, 13, 19, 26]"
    assert config.format_value("session.rating_window_s", 45) == "45.0"
    assert config.format_value("staff.name", config.Secret("s3cret")) == '"****"'


# --- layers ------------------------------------------------------------------------

def test_layers_are_dicts_taken_as_they_are_after_files_and_overrides(tmp_path, monkeypatch):
    base = tmp_path / "config.toml"
    base.write_text('[staff]\nname = "文件"\nno = "1"\n[device]\nwindow_no = "03"\n', encoding="utf-8")
    layer: dict[str, dict[str, Any]] = {"staff": {"name": 'Wang "Wu"\\'}, "buttons": {"pins": (4, 17, 27, 22, 23)}}
    c = config.load([base], ["staff.no=9", "staff.name=命令行"], layers=[layer, {"device": {"window_no": "12"}}])
    assert (c.staff.name, c.staff.no, c.device.window_no) == ('Wang "Wu"\\', "9", "12")
    assert c.buttons.pins == (4, 17, 27, 22, 23)
    # Layers are never rendered to text and read again.
    monkeypatch.setattr(config, "parse_value", lambda *a: pytest.fail("a layer was re-parsed"))
    assert config.load(layers=[layer]).staff.name == 'Wang "Wu"\\'


def test_bad_layers_are_reported_with_the_other_problems():
    with pytest.raises(ConfigError) as info:
        config.load(overrides=["display.rotate=45"],
                    layers=[{"session": {"source": "nowhere"}, "staff": "not a table",  # type: ignore[dict-item]
                             "nosuch": {"x": 1}}])
    assert {k for k, _ in info.value.problems} == {"display.rotate", "session.source", "staff", "nosuch"}


def test_a_secret_never_shows_in_a_problem():
    _, problems = config.build({"staff": {"name": config.Secret("s3cret-value")}})
    assert problems and "s3cret" not in repr(problems) and "****" in problems[0][1]
