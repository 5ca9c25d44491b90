"""``evaluator-provision`` leaves the console locked on every way out, and always proves its PIN.

A console with a PIN on a real pty (fake device behind it). Each way out
(success, a bad value, a refused commit, a timeout, Ctrl-C, a wrong PIN)
ends with the console locked; a wrong PIN to a console someone left open
is refused.
"""

import time

import pytest
from test_console import PIN, Rig

import provision
from provision import cli
from provision.cli import main
from provision.session import DeviceSession

pytestmark = pytest.mark.timeout(60)

PROFILE = '[staff]\nno = "0123"\nname = "李四"\n'


@pytest.fixture
def locked(tmp_path):
    r = Rig(tmp_path, pin=PIN)
    yield r
    r.close()


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PROFILE, encoding="utf-8")
    return path


def left_open(rig, within=5.0):
    """Whether the console is still authorised once it has handled what was sent (polls)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not rig.console.authorized():
            return False
        time.sleep(0.05)
    return True


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert PIN not in out + err
    return code, out, err


def test_success_locks(locked, profile, capsys):
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--pin", PIN, "--no-tests")
    assert code == 0, err
    assert locked.device.config.staff.name == "李四"
    assert not left_open(locked)


def test_a_bad_value_touches_no_port_and_the_console_stays_locked(locked, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[outbox]\npath = "/dev/null"\n[session]\nthanks_s = inf\n', encoding="utf-8")
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", bad, "--pin", PIN)
    assert code == provision.EXIT_USAGE and "outbox.path" in err and "session.thanks_s" in err
    assert locked.console.status.answered == 0 and not locked.console.authorized()


def test_a_refused_commit_locks(tmp_path, capsys):
    rig = Rig(tmp_path, pin=PIN, extra=("buttons.staff_pin=5",))
    try:
        bad = tmp_path / "bad.toml"
        bad.write_text('[session]\nsource = "staff_button"\n', encoding="utf-8")
        code, _, err = run(capsys, "--port", rig.port.path, "--profile", bad, "--pin", PIN)
        assert code == provision.EXIT_REJECTED and "buttons.staff_pin" in err
        assert not left_open(rig)
        assert rig.device.applied == []
    finally:
        rig.close()


def test_a_timeout_locks(locked, profile, capsys):
    def slow_display():
        time.sleep(2.0)
        return {"pattern": "checkerboard"}

    locked.device.test_display = slow_display
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--pin", PIN, "--timeout", "1")
    assert code == provision.EXIT_TIMEOUT and "no answer to Test" in err
    assert not left_open(locked)


def test_ctrl_c_locks(locked, profile, capsys, monkeypatch):
    class Interrupted(DeviceSession):
        def ask(self, line, timeout=None, what=None):
            if line == "Commit":
                raise KeyboardInterrupt
            return super().ask(line, timeout, what)

    monkeypatch.setattr(cli, "DeviceSession", Interrupted)
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--pin", PIN)
    assert code == 130 and "interrupted" in err and "Lock" in err
    assert not left_open(locked)
    assert locked.device.applied == []


def test_a_wrong_pin_to_an_open_console_is_refused_and_locks_it(locked, profile, capsys):
    # Someone authorised the console and walked away.
    assert locked.ask(f"Auth {PIN}")["authorized"] is True
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--pin", "0000", "--no-tests")
    assert code == provision.EXIT_PIN and "PIN refused: wrong PIN" in err
    assert locked.device.applied == [] and not left_open(locked)
    # No PIN at all to an open console is refused too: an open console is no proof.
    assert locked.ask(f"Auth {PIN}")["authorized"] is True
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--no-tests")
    assert code == provision.EXIT_PIN and "--pin" in err
    assert locked.device.applied == [] and not left_open(locked)


def test_physical_presence_needs_no_pin_and_still_locks(locked, profile, capsys):
    locked.console.grant_presence()
    code, _, err = run(capsys, "--port", locked.port.path, "--profile", profile, "--no-tests")
    assert code == 0, err
    assert locked.device.config.staff.name == "李四" and not left_open(locked)
