"""The loop only dispatches: outputs and console requests are added by registration, never by editing it.

And every file has one owner: what the console commits is written by the
supervisor's thread (the loop runs on it), never by the console's.
"""

import dataclasses
import threading
import typing
from typing import Any

import pytest
from test_supervisor import Rig, wait_for

from device import config as config_mod
from device import state as st
from device.console.commands import Command as ConsoleCommand
from device.console.port import default_commands
from device.hardware import Hardware
from device.levels import Level
from device.loop import Command
from device.settings import SettingsStore
from device.supervisor import RECOVERY, RUNNING
from helpers import tap
from sim.hardware import make_sim_hardware

pytestmark = pytest.mark.timeout(60)


class RecordingOutput:
    """A speaker as the access work will add one: it registers its handlers, nothing else changes."""

    def __init__(self):
        self.heard = []
        self.closed = False

    def register(self, loop):
        loop.register(st.CommitRating, lambda effect: self.heard.append(("rating", effect.level)))
        loop.register(st.PressIgnored, lambda effect: self.heard.append(("ignored", effect.why)))

    def close(self):
        self.closed = True


def test_an_output_fitted_to_the_hardware_hears_its_effects_and_the_rating_is_still_kept(tmp_path):
    from device.app import App
    from device.clock import Clocks
    from device.config import Secret
    from device.hardware import staff_request
    from helpers import Clock

    config = config_mod.load(overrides=[f"outbox.path=\"{tmp_path / 'outbox.db'}\"", "buttons.bounce_ms=0",
                                        'session.source="free"', "session.min_interval_s=30"])
    import queue

    hardware, factory = make_sim_hardware(config, queue.Queue(), staff_request)
    speaker = RecordingOutput()
    hardware = dataclasses.replace(hardware, speaker=speaker)
    clock = Clock()
    app = App(config, hardware, Secret(""),
              clocks=Clocks(monotonic=clock.monotonic, wall=lambda: clock.wall, synced=lambda: True))
    try:
        app.pump()
        tap(app, factory, 2)
        tap(app, factory, 5)          # inside the lockout: not a rating
        assert speaker.heard == [("rating", Level.SATISFIED), ("ignored", "inside the lockout after a rating")]
        assert [e["level"] for e in app.outbox.events()] == ["satisfied"]
        assert type(app.model).__name__ == "ThanksScreen"
    finally:
        app.outbox.close()
        hardware.close()
    assert speaker.closed


def test_hardware_without_outputs_has_none_fitted():
    assert [f.name for f in dataclasses.fields(Hardware) if f.default is None] == ["speaker", "buzzer", "led"]


@dataclasses.dataclass(eq=False)
class Echo(Command):
    """A test request that needs the running device: the loop answers with the screen and the text."""

    text: str


def test_a_console_command_that_needs_the_device_is_one_registration(tmp_path, hall):
    """The console's table gets an entry, the loop's table a handler: nothing else is edited."""
    threads = []

    def echo(request):
        threads.append(threading.current_thread())
        return {"screen": app_holder[0].loop.state.screen, "text": request.text.upper()}

    def on_app(app):
        app_holder[0] = app
        if app is not None:
            app.loop.register(Echo, echo)

    app_holder: list[Any] = [None]
    commands = {**default_commands(),
                "echo": ConsoleCommand(lambda ctx, arg: {"ok": True, **ctx.device.ask(Echo(arg))})}
    rig = Rig(tmp_path, hall, on_app=on_app, console_commands=commands)
    try:
        rig.wait_mode(RUNNING)
        assert rig.tech("Echo hello") == {"ok": True, "screen": "idle", "text": "HELLO"}
        assert threads == [rig.thread]          # carried out on the loop's thread
    finally:
        rig.close()


class WatchedStore(SettingsStore):
    """The real settings store, noting which thread writes it."""

    writers: typing.ClassVar[list[str]] = []

    def commit(self, *args, **kwargs):
        WatchedStore.writers.append(threading.current_thread().name)
        return super().commit(*args, **kwargs)

    def clear(self):
        WatchedStore.writers.append(threading.current_thread().name)
        return super().clear()


def watched(rig):
    store = rig.supervisor.store
    store.__class__ = WatchedStore
    WatchedStore.writers = []
    return store


def test_commit_and_factory_reset_write_on_the_supervisors_thread_not_the_consoles(tmp_path, hall):
    rig = Rig(tmp_path, hall)
    try:
        rig.wait_mode(RUNNING)
        watched(rig)
        assert rig.tech("Set staff.name 赵六")["ok"]
        answer = rig.tech("Commit")
        assert answer["ok"] and answer["committed"] == ["staff.name"], answer
        assert rig.supervisor.config.staff.name == "赵六"
        assert wait_for(lambda: rig.supervisor.app is not None and rig.supervisor.app.model.staff_name == "赵六")
        assignment = tmp_path / "data" / "assignment.json"
        assignment.write_text("{}")
        assert rig.tech("FactoryReset yes")["ok"]
        assert wait_for(lambda: not assignment.exists())
        assert WatchedStore.writers == [rig.thread.name, rig.thread.name]
    finally:
        rig.close()


def test_in_recovery_a_commit_is_written_and_applied_by_the_supervisor(tmp_path, hall):
    from test_supervisor import RARE

    rig = Rig(tmp_path, hall)
    try:
        rig.wait_mode(RUNNING)
        # A value that cannot start is refused by Commit: put it in the file as a bad earlier install would.
        rig.supervisor.store.save({"staff": {"name": RARE}})
        rig.tech("Restart")
        rig.wait_mode(RECOVERY)
        watched(rig)
        assert rig.tech("Set staff.name 李四")["ok"]
        assert rig.tech("Commit")["ok"]
        rig.wait_mode(RUNNING)
        assert WatchedStore.writers == [rig.thread.name]
        assert rig.supervisor.config.staff.name == "李四"
    finally:
        rig.close()


def test_which_keys_need_a_restart_is_each_fields_schema():
    restart = [k for k in config_mod.key_names() if config_mod.needs_restart(k)]
    assert "display.model" in restart and "session.source" in restart and "outbox.path" in restart
    assert not {"display.show_level", "display.contrast", "staff.name", "upload.server"} & set(restart)
    fields = {f.name: f for f in dataclasses.fields(config_mod.DisplaySection)}
    assert fields["model"].metadata["restart"] is True and fields["contrast"].metadata["restart"] is False


def test_the_state_machine_decides_presses_on_a_sleeping_panel_and_in_the_button_test():
    rules = st.Rules(source="free", min_interval_s=0)
    state, _ = st.step(st.State(), st.PanelSlept(True), 0.0, rules)
    state, effects = st.step(state, st.ButtonPressed(1), 1.0, rules)
    state, effects = st.step(state, st.ButtonReleased(1), 1.1, rules)
    assert effects == [] and state.last_activity == 1.1          # woke only, nothing rated
    state, _ = st.step(state, st.ButtonTestSet(True), 2.0, rules)
    state, _ = st.step(state, st.PanelSlept(False), 2.0, rules)
    state, effects = st.step(state, st.ButtonPressed(3), 3.0, rules)
    assert effects == [st.ButtonTested(3)]
    state, effects = st.step(state, st.ButtonReleased(3), 3.1, rules)
    assert effects == []
    state, _ = st.step(state, st.ButtonTestSet(False), 4.0, rules)
    state, _ = st.step(state, st.ButtonPressed(3), 5.0, rules)
    state, effects = st.step(state, st.ButtonReleased(3), 5.1, rules)
    assert [type(e) for e in effects] == [st.CommitRating]


def test_the_state_machine_decides_a_recorded_session_and_a_qr_the_panel_cannot_show():
    rules = st.Rules(source="hall")
    opened = st.SessionOpened("s1", ticket="A1", qr_url="https://x.example/" + "q" * 900)
    state, effects = st.step(st.State(), st.SessionVetted(opened, recorded=True), 0.0, rules)
    assert state.session is None and effects == [st.SessionSkipped("s1")]
    state, effects = st.step(st.State(), st.SessionVetted(opened, qr_fits=False), 0.0, rules)
    assert state.session is not None and state.session.qr_url == "" and state.session.ticket == "A1"
    assert effects == [st.QrReplaced("s1", len(opened.qr_url))]


def test_an_unregistered_request_is_refused_not_hung(make_app):
    app, _, _ = make_app()
    request = Echo("x")
    app.events.put(request)
    app.pump()
    with pytest.raises(TypeError, match="unknown command Echo"):
        request.wait(1)
