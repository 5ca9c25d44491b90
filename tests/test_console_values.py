"""Hostile values for every path and number key: each refused over a real pty console, naming its key.

The same table goes through ``--set``, a configuration file and
``evaluator --check``: one set of rules (:func:`device.config.value_problem`
and :func:`device.config.build`) everywhere a value can come in.
"""

import dataclasses
import os
import tomllib
import typing

import pytest
from test_console import Rig

from device import config
from device.cli import main as evaluator_main
from device.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


def number_keys():
    """Every ``section.key`` whose type is a number (the schema, so keys added later are covered)."""
    keys = []
    for name, cls in config.sections().items():
        hints = typing.get_type_hints(cls)
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]
    return keys


def path_keys():
    return [k for k in config.key_names() if config.is_path_key(k)]


def hostile_paths(tmp_path):
    """``[(text as typed, why it is hostile)]``."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "afile").write_text("x")
    link = tmp_path / "link.db"
    link.symlink_to("/dev/null")
    return [
        ("/dev/null", "a device"),
        ('""', "empty"),
        ("outbox.db", "relative"),
        ("./data/outbox.db", "relative"),
        (str(tmp_path), "a folder"),
        (str(tmp_path) + "/", "a folder, trailing slash"),
        (str(fifo), "a fifo"),
        (str(link), "a link to /dev/null"),
        (f"{tmp_path}/x/../../etc/outbox.db", "'..' tricks"),
        (f"{tmp_path}/./outbox.db", "'.' in the path"),
        ("//etc/outbox.db", "a double slash"),
        ("/proc/self/outbox.db", "under /proc"),
        ("/sys/kernel/outbox.db", "under /sys"),
        (f"{tmp_path}/afile/outbox.db", "a folder that is a file"),
    ]


def hostile_numbers(key):
    section, _, name = key.partition(".")
    f = {f.name: f for f in dataclasses.fields(config.sections()[section])}[name]
    values = ["inf", "-inf", "nan", "1e308", "-1e308", "99999999999999999999", "-99999999999999999999"]
    lo, hi, _ = f.metadata.get("range", (None, None, None))
    if hi is not None:
        values += [repr(hi * 10 + 1), repr(lo - 1)]
    if key in ("display.width", "display.height"):
        values += ["100000", "200"]
    return values


def hostile_table(tmp_path):
    """``[(key, text)]``: every hostile path for every path key, every hostile number for every number key."""
    paths = hostile_paths(tmp_path)
    # An empty CA bundle is no hostile value: it means the system's CAs.
    table = [(key, value) for key in path_keys() for value, _ in paths
             if not (value == '""' and key in config.OPTIONAL_PATHS)]
    return table + [(key, value) for key in number_keys() for value in hostile_numbers(key)]


def named(answer, key):
    keys = {answer.get("key")} | {p.get("key") for p in answer.get("problems", [])}
    return key in keys or key in answer.get("message", "")


def test_every_path_and_number_key_is_covered():
    assert {"outbox.path", "upload.key_file", "console.settings_path", "upload.ca_bundle"} <= set(path_keys())
    assert "console.port" not in path_keys()
    assert {"session.thanks_s", "display.width", "display.height", "upload.timeout_s"} <= set(number_keys())


def test_commit_refuses_every_hostile_path_and_number_naming_its_key(tmp_path):
    rig = Rig(tmp_path)
    try:
        table = hostile_table(tmp_path)
        accepted, unnamed = [], []
        for key, value in table:
            answer = rig.ask(f"Set {key} {value}")
            if answer["ok"]:
                answer = rig.ask("Commit")
            if answer["ok"]:
                accepted.append((key, value))
            elif not named(answer, key):
                unnamed.append((key, value, answer))
            rig.ask("Discard")
        print(f"\n{len(table)} hostile values over the pty: {len(accepted)} accepted, {len(unnamed)} without the key")
        assert accepted == []
        assert unnamed == []
        assert rig.device.applied == [] and not os.path.exists(rig.store.path)
        # The console still answers and commits a sound value.
        assert rig.ask("Set session.thanks_s 4")["ok"] and rig.ask("Commit")["ok"]
    finally:
        rig.close()


def test_the_same_values_are_refused_from_set_files_and_check(tmp_path, capsys):
    table = hostile_table(tmp_path)
    for key, value in table:
        with pytest.raises(ConfigError) as info:
            config.load(overrides=[f"{key}={value}"])
        assert key in {k for k, _ in info.value.problems}, (key, value)
        section, _, name = key.partition(".")
        text = value if value.startswith('"') or _is_toml(value) else f'"{value}"'
        path = tmp_path / "hostile.toml"
        path.write_text(f"[{section}]\n{name} = {text}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            config.load([path])
        assert key in {k for k, _ in info.value.problems}, (key, value)
    # evaluator --check reads --set and files through the same rules.
    assert evaluator_main(["--check", "--set", "outbox.path=/dev/null", "--set", "session.thanks_s=inf"]) != 0
    err = capsys.readouterr().err
    assert "outbox.path" in err and "session.thanks_s" in err


def _is_toml(text):
    try:
        tomllib.loads(f"v = {text}")
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("value, ok", [
    ("WE-0014", True), ("hall_3.win-12", True), ("A" * 32, True),
    ("WE 0014", False), ("窗口1", False), ("WE:01", False), ("a/b", False), ("A" * 33, False), ("..", False),
    ('""', False),
])
def test_device_ids(value, ok):
    if ok:
        assert config.load(overrides=[f"device.id={value}"]).device.id == value
    else:
        with pytest.raises(ConfigError, match=r"device\.id"):
            config.load(overrides=[f"device.id={value}"])


def test_a_newline_in_a_text_key_from_a_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[staff]\nname = "张三\\n李四"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"staff\.name: must not contain control characters"):
        config.load([path])

