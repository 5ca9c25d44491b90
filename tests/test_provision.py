"""``evaluator-provision`` against a console on a real pty with a fake device."""

import os

import pytest
from test_console import KEY, PIN, Rig

import provision
from provision.cli import main
from sim.pty_port import PtyPort

pytestmark = pytest.mark.timeout(60)

PROFILE = f"""
device_key = "{KEY}"

[device]
id = "WE-0012"
window_no = "12"
window_name = "不动产登记"

[staff]
no = "0123"
name = "李四"

[upload]
server = "https://hall.example.org"

[session]
source = "staff_button"
rating_window_s = 45
"""

HALL_CSV = (
    "window_no,window_name,staff_no,staff_name,server,channel,device_id,session.rating_window_s\n"
    "11,综合受理,0001,张三,https://hall.example.org,5,WE-0011,30\n"
    "12,不动产登记,0123,欧阳娜娜,https://hall.example.org,PJQ,WE-0012,40\n"
)
#: The hall's keys file, for halls that still use shared keys: never the CSV.
HALL_KEYS = f'[devices]\n"WE-0011" = "{KEY}-11"\n"WE-0012" = "{KEY}-12"\n'


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "window12.toml"
    path.write_text(PROFILE, encoding="utf-8")
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert KEY not in out + err and PIN not in out + err
    return code, out, err


def test_profile_is_applied_committed_read_back_and_tested(rig, profile, capsys):
    code, out, err = run(capsys, "--port", rig.port.path, "--profile", profile, "--pin", PIN)
    assert code == 0, err
    config = rig.device.config
    assert (config.device.id, config.device.window_no, config.device.window_name) == ("WE-0012", "12", "不动产登记")
    assert (config.staff.no, config.staff.name, config.session.rating_window_s) == ("0123", "李四", 45.0)
    assert config.upload.server == "https://hall.example.org"
    assert rig.store.load() == config
    assert rig.key_file.read_text() == KEY
    assert rig.pins.is_set() and rig.pins.verify(PIN).ok  # factory-new: --pin became its PIN
    assert "ok   staff.name = \"李四\"" in out and "device key: set (never shown)" in out
    assert "PIN: set (the device was factory-new)" in out
    assert "uplink: http://hall.test answered 200" in out
    assert rig.device.display_tests == 1
    assert "provisioned WE-0001" in out


def test_one_row_of_a_hall_csv(rig, tmp_path, capsys):
    hall = tmp_path / "hall.csv"
    hall.write_bytes(HALL_CSV.encode("gb18030"))  # as Excel saves it on a Chinese Windows
    keys = tmp_path / "keys.toml"
    keys.write_text(HALL_KEYS, encoding="utf-8")
    code, _out, err = run(capsys, "--port", rig.port.path, "--csv", hall, "--window", "012", "--no-tests",
                          "--hmac-keys", keys)
    assert code == 0, err
    config = rig.device.config
    assert (config.device.id, config.staff.name, config.device.channel) == ("WE-0012", "欧阳娜娜", "PJQ")
    assert config.session.rating_window_s == 40.0
    assert rig.key_file.read_text() == f"{KEY}-12"
    assert rig.device.display_tests == 0


def test_a_locked_device_needs_the_right_pin(tmp_path, profile, capsys):
    rig = Rig(tmp_path, pin=PIN)
    try:
        code, _, err = run(capsys, "--port", rig.port.path, "--profile", profile)
        assert code == provision.EXIT_PIN and "--pin" in err
        code, _, err = run(capsys, "--port", rig.port.path, "--profile", profile, "--pin", "0000")
        assert code == provision.EXIT_PIN and "PIN refused: wrong PIN" in err
        assert rig.device.applied == [] and not rig.key_file.exists()
        code, _, err = run(capsys, "--port", rig.port.path, "--profile", profile, "--pin", PIN, "--no-tests")
        assert code == 0, err
    finally:
        rig.close()


def test_wrong_device_is_refused_before_anything_changes(rig, profile, capsys):
    code, _, err = run(capsys, "--port", rig.port.path, "--profile", profile, "--expect-device", "WE-0099")
    assert code == provision.EXIT_WRONG_DEVICE
    assert "expected WE-0099, found WE-0001" in err
    assert rig.device.applied == [] and not os.path.exists(rig.store.path)


def test_a_value_the_device_would_reject_stops_before_the_port_is_touched(rig, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[staff]\nname = "李四"\n[session]\nsource = "nowhere"\n', encoding="utf-8")
    code, _, err = run(capsys, "--port", rig.port.path, "--profile", bad)
    # The device's own rules, checked on the laptop: no command reached the console.
    assert code == provision.EXIT_USAGE and "session.source" in err
    assert rig.console.status.answered == 0
    assert rig.device.applied == [] and not os.path.exists(rig.store.path)
    assert rig.ask("Status")["staged"] == []


def test_a_commit_the_device_refuses_lists_the_problems(tmp_path, capsys):
    # Sound on its own, wrong on this device: its staff key is wired to a rating button's pin.
    rig = Rig(tmp_path, extra=("buttons.staff_pin=5",))
    try:
        bad = tmp_path / "bad.toml"
        bad.write_text('[session]\nsource = "staff_button"\n', encoding="utf-8")
        code, _, err = run(capsys, "--port", rig.port.path, "--profile", bad)
        assert code == provision.EXIT_REJECTED and "buttons.staff_pin" in err
    finally:
        rig.close()


def test_no_answer_is_a_timeout(tmp_path, profile, capsys):
    with PtyPort() as silent:  # a port with nobody behind it
        code, _, err = run(capsys, "--port", silent.path, "--profile", profile, "--timeout", "0.5")
    assert code == provision.EXIT_TIMEOUT and "no answer to Status" in err


def test_a_missing_port_is_named(tmp_path, profile, capsys):
    code, _, err = run(capsys, "--port", tmp_path / "ttyNONE", "--profile", profile)
    assert code == provision.EXIT_PORT and "ttyNONE" in err


def test_a_failed_uplink_test_is_reported_after_committing(rig, profile, capsys):
    rig.device.uplink = {"ok": False, "status": 401, "message": "the server answered 401: bad key"}
    code, out, err = run(capsys, "--port", rig.port.path, "--profile", profile)
    assert code == provision.EXIT_TEST and "uplink" in err
    assert "uplink: FAILED" in out and rig.device.config.staff.name == "李四"


def test_restart_when_a_setting_needs_it(rig, tmp_path, capsys):
    path = tmp_path / "display.toml"
    path.write_text('[display]\nmodel = "sh1106"\n', encoding="utf-8")
    code, out, _ = run(capsys, "--port", rig.port.path, "--profile", path, "--no-tests", "--restart")
    assert code == 0 and "restarted the device to apply display.model" in out
    assert rig.device.restarts == 1


@pytest.mark.parametrize("text, why", [
    ("[staff]\nname = 5\n", "staff.name: must be a string"),
    ("[nosuch]\nx = 1\n", "nosuch.x: unknown"),
    ("[staff\n", "not valid TOML"),
])
def test_bad_profiles_are_refused_without_touching_the_port(tmp_path, capsys, text, why):
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "--port", tmp_path / "unused", "--profile", path)
    assert code == provision.EXIT_USAGE and why in err


def test_csv_window_not_listed(tmp_path, capsys):
    hall = tmp_path / "hall.csv"
    hall.write_text(HALL_CSV, encoding="utf-8-sig")
    code, _, err = run(capsys, "--port", tmp_path / "unused", "--csv", hall, "--window", "99")
    assert code == provision.EXIT_USAGE and "it lists: 11, 12" in err
