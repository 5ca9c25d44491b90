"""Sessions: one rating per service by default, and every way a session ends without a press.

A session (``staff_button``, the default, or ``hall``) ends in exactly one
event: the rating of its one press, or ``unrated``. The device never invents
a rating (DESIGN.md, "No rating given"): a default 满意 is the platform's
job. Each test below fails if its path produces a rating, and the last test
of the state machine part proves it: with a sabotaged machine that turns an
unrated session into 满意, every path's check fails.
"""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from device import config as config_mod
from device import state as st
from device.levels import Level
from device.queue.outbox import Outbox
from device.session_marker import SESSION_MARKER
from device.state import (
    CommitRating,
    CommitUnrated,
    Rules,
    SessionClosed,
    SessionOpened,
    StaffRequested,
    Stopping,
    Tick,
)
from device.ui.models import LaterScreen, PromptScreen
from helpers import Tap, run, tap

pytestmark = pytest.mark.timeout(60)

STAFF = Rules(source="staff_button", rating_window_s=30, min_interval_s=10, thanks_s=3, later_s=20)
HALL = Rules(source="hall", rating_window_s=30, thanks_s=3, later_s=20)
STAFF_PIN = 21


def assert_only_unrated(effects, *session_ids):
    """Exactly one ``unrated`` per session, in order, and nothing rated."""
    assert [e for e in effects if isinstance(e, CommitRating)] == [], "a session without a press became a rating"
    assert [e.session.session_id for e in effects if isinstance(e, CommitUnrated)] == list(session_ids)


def assert_events_only_unrated(events, *session_ids):
    """The outbox holds exactly one ``unrated`` event per session, and no rating."""
    assert [e["type"] for e in events if e["type"] == "rating"] == [], "a session without a press became a rating"
    assert [(e["type"], e["session_id"]) for e in events] == [("unrated", s) for s in session_ids]


# --- the default -------------------------------------------------------------------


def test_staff_button_is_the_default_source():
    assert config_mod.load().session.source == "staff_button"
    assert Rules().source == "staff_button"
    assert Rules.from_config(config_mod.load()).source == "staff_button"


def test_free_stays_available_and_its_ratings_are_bound_to_no_service(make_app):
    app, factory, _ = make_app('session.source="free"')
    tap(app, factory, 2)
    (event,) = app.outbox.events()
    assert event["type"] == "rating" and event["level"] == "satisfied"
    # Bound to no service: no session and none of its fields.
    assert not {"session_id", "ticket", "project_no", "task_code", "task_name"} & event.keys()


def test_by_default_a_press_without_a_request_is_not_a_rating(make_app):
    app, factory, _ = make_app('session.source="staff_button"')
    tap(app, factory, 1)
    assert app.outbox.events() == []
    assert app.loop.status.ignored_presses == 1


def test_by_default_a_rating_is_bound_to_the_service_it_was_asked_for(make_app):
    app, factory, _ = make_app('session.source="staff_button"')
    staff_key(app, factory)
    session_id = app.loop.state.session.session_id
    tap(app, factory, 3)
    (event,) = app.outbox.events()
    assert event["type"] == "rating" and event["session_id"] == session_id


# --- the state machine: every path -------------------------------------------------


def expiry_staff():
    return run(STAFF, [(0.0, StaffRequested("s1")), (29.9, Tick()), (30.0, Tick()), (31.0, Tick()),
                       (32.0, Tap(2))]), ("s1",)


def expiry_hall():
    return run(HALL, [(0.0, SessionOpened("s1", ticket="A1")), (30.0, Tick()), (31.0, Tap(2))]), ("s1",)


def replaced_by_hall():
    return run(HALL, [(0.0, SessionOpened("s1")), (5.0, SessionOpened("s2"))]), ("s1",)


def replaced_by_staff():
    return run(STAFF, [(0.0, StaffRequested("s1")), (12.0, StaffRequested("s2"))]), ("s1",)


def closed_by_hall():
    return run(HALL, [(0.0, SessionOpened("s1")), (5.0, SessionClosed("s1")), (6.0, Tap(2))]), ("s1",)


def loop_stops_staff():
    return run(STAFF, [(0.0, StaffRequested("s1")), (5.0, Stopping())]), ("s1",)


def loop_stops_hall():
    return run(HALL, [(0.0, SessionOpened("s1")), (5.0, Stopping())]), ("s1",)


PATHS = [expiry_staff, expiry_hall, replaced_by_hall, replaced_by_staff, closed_by_hall, loop_stops_staff,
         loop_stops_hall]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_a_session_ended_without_a_press_is_one_unrated_event_and_no_rating(path):
    (_, effects), sessions = path()
    assert_only_unrated(effects, *sessions)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_these_tests_fail_if_an_unrated_session_became_a_default_rating(path, monkeypatch):
    real = st._end_unrated

    def default_satisfied(state, now, rules):
        ended, effects = real(state, now, rules)
        return ended, [CommitRating(Level.SATISFIED, e.session, False) if isinstance(e, CommitUnrated) else e
                       for e in effects]

    monkeypatch.setattr(st, "_end_unrated", default_satisfied)
    (_, effects), sessions = path()
    with pytest.raises(AssertionError, match="became a rating"):
        assert_only_unrated(effects, *sessions)


def test_after_expiry_the_later_screen_offers_the_sessions_qr():
    state, _ = run(HALL, [(0.0, SessionOpened("s1", qr_url="https://hcp.example.cn/s/1")), (30.0, Tick())])
    assert state.screen == "later" and state.later_qr == "https://hcp.example.cn/s/1"


def test_a_rated_session_ends_in_its_rating_alone():
    """Once rated, nothing that would end a session adds an unrated event."""
    for rules, opened, later in ((STAFF, StaffRequested("s1"), Stopping()),
                                 (HALL, SessionOpened("s1"), SessionClosed("s1")),
                                 (HALL, SessionOpened("s1"), Stopping())):
        _, effects = run(rules, [(0.0, opened), (2.0, Tap(1)), (3.0, later), (40.0, Tick())])
        (rating,) = [e for e in effects if isinstance(e, CommitRating)]
        assert rating.session is not None and rating.session.session_id == "s1"
        assert [e for e in effects if isinstance(e, CommitUnrated)] == []


def test_the_hall_closing_another_session_ends_nothing():
    state, effects = run(HALL, [(0.0, SessionOpened("s1")), (5.0, SessionClosed("s0"))])
    assert effects == [] and state.session.session_id == "s1" and state.screen == "prompt"


def test_the_same_hall_session_twice_is_one_session():
    _, effects = run(HALL, [(0.0, SessionOpened("s1")), (5.0, SessionOpened("s1")), (7.0, Tap(1))])
    assert [e.session.session_id for e in effects if isinstance(e, CommitRating) and e.session] == ["s1"]
    assert [e for e in effects if isinstance(e, CommitUnrated)] == []


def test_a_hall_session_without_an_id_is_not_opened():
    state, effects = run(HALL, [(0.0, SessionOpened("")), (1.0, Tap(1))])
    assert state.session is None and effects[-1] == st.PressIgnored(1, "no rating was requested")


def test_a_staff_double_press_keeps_the_session_a_later_one_replaces_it():
    state, effects = run(STAFF, [(0.0, StaffRequested("s1")), (1.0, StaffRequested("s2"))])
    assert effects == [] and state.session.session_id == "s1" and state.session.deadline == 30.0
    state, effects = run(STAFF, [(10.0, StaffRequested("s3")), (11.0, Tap(4))], state)
    assert [e.session.session_id for e in effects if isinstance(e, CommitUnrated)] == ["s1"]
    assert [e.session.session_id for e in effects if isinstance(e, CommitRating) and e.session] == ["s3"]


def test_stopping_with_no_session_records_nothing():
    _, effects = run(STAFF, [(0.0, StaffRequested("s1")), (40.0, Tick()), (41.0, Stopping())])
    assert_only_unrated(effects, "s1")      # the expiry's, and nothing for the stop


# --- through the loop and the outbox ------------------------------------------------


def staff_key(app, factory):
    """The staff's 请评价 key on the simulated hardware, then the loop catches up."""
    pin = factory.pin(STAFF_PIN)
    pin.drive_low()
    pin.drive_high()
    app.pump()


def test_app_expiry_records_unrated_and_a_late_press_is_no_rating(make_app):
    app, factory, clock = make_app('session.source="staff_button"')
    staff_key(app, factory)
    session_id = app.loop.state.session.session_id
    assert isinstance(app.model, PromptScreen)
    clock.advance(30)
    app.pump()
    assert isinstance(app.model, LaterScreen)
    tap(app, factory, 2)
    assert_events_only_unrated(app.outbox.events(), session_id)


def test_app_a_new_hall_session_replaces_the_open_one(make_app):
    app, factory, _ = make_app('session.source="hall"')
    app.events.put(SessionOpened("s1", ticket="A1"))
    app.pump()
    app.events.put(SessionOpened("s2", ticket="A2"))
    app.pump()
    assert_events_only_unrated(app.outbox.events(), "s1")
    assert app.outbox.events()[0]["ticket"] == "A1"
    tap(app, factory, 1)
    assert [(e["type"], e["session_id"]) for e in app.outbox.events()] == [("unrated", "s1"), ("rating", "s2")]


def test_app_a_new_staff_request_replaces_the_open_one(make_app):
    app, factory, clock = make_app('session.source="staff_button"')
    staff_key(app, factory)
    first = app.loop.state.session.session_id
    clock.advance(12)
    staff_key(app, factory)
    second = app.loop.state.session.session_id
    assert second != first
    assert_events_only_unrated(app.outbox.events(), first)
    tap(app, factory, 5)
    assert [(e["type"], e["session_id"]) for e in app.outbox.events()] == [("unrated", first), ("rating", second)]


def test_app_the_hall_closing_the_session_records_unrated(make_app):
    app, factory, _ = make_app('session.source="hall"')
    app.events.put(SessionOpened("s1", qr_url="https://hcp.example.cn/s/1"))
    app.pump()
    app.events.put(SessionClosed("s1"))
    app.pump()
    assert app.model == LaterScreen(qr_url="https://hcp.example.cn/s/1")
    tap(app, factory, 2)
    assert_events_only_unrated(app.outbox.events(), "s1")


def run_app_until(app, done, stop):
    """Run the app's real loop on a thread until ``done()``; returns the thread."""
    thread = threading.Thread(target=app.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "the loop never got there"
        time.sleep(0.01)
    return thread


def test_a_restart_mid_session_records_one_unrated_event_and_no_rating(make_app, tmp_path):
    app, factory, _ = make_app('session.source="staff_button"')
    stop = threading.Event()
    thread = run_app_until(app, lambda: app.loop.status.screen == "idle", stop)
    pin = factory.pin(STAFF_PIN)
    pin.drive_low()
    pin.drive_high()
    while app.loop.status.screen != "prompt":
        time.sleep(0.01)
    session_id = app.loop.state.session.session_id
    stop.set()                          # a console Restart, a rebuild, a shutdown
    thread.join(10)
    assert not thread.is_alive()
    # The next start: a new build on the same outbox adds nothing for the old session.
    again, factory2, _ = make_app('session.source="staff_button"')
    tap(again, factory2, 1)
    assert_events_only_unrated(again.outbox.events(), session_id)


def test_a_restart_after_the_rating_adds_no_unrated_event(make_app):
    app, factory, _ = make_app('session.source="staff_button"')
    staff_key(app, factory)
    tap(app, factory, 4)
    app.loop.stopping()
    events = app.outbox.events()
    assert [e["type"] for e in events] == ["rating"] and events[0]["session_id"]


def test_a_restart_with_no_session_adds_nothing(tmp_path, make_app):
    app, _, _ = make_app('session.source="free"')
    app.loop.stopping()
    app.outbox.close()
    box = Outbox(tmp_path / "outbox.db")
    try:
        assert box.events() == []
    finally:
        box.close()


# --- a power cut mid-session: the real simulator process, killed -----------------------

#: The simulated device's own key, told to the stand-in hall server by each test (``hall.set_key``).
SIM_KEY = "sessions-sim-key"
SIM = ["--set", "session.source=staff_button", "--set", "session.rating_window_s=600",
       "--set", "session.thanks_s=0.3", "--set", "upload.backoff_min_s=0.2", "--set", "upload.backoff_max_s=1"]


def power_cut_when(tmp_path, hall, lines, seen_line):
    """Run ``python -m sim``, feed it ``lines``, SIGKILL it the moment ``seen_line`` is logged."""
    hall.set_key("WE-0001", SIM_KEY)
    cmd = [sys.executable, "-m", "sim", "--data", str(tmp_path / "data"), *SIM, "--server", hall.url,
           "--device-key", SIM_KEY]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stderr is not None
    stderr = proc.stderr
    seen = threading.Event()

    def watch():
        for line in stderr:
            if seen_line in line:
                proc.send_signal(signal.SIGKILL)    # the power goes
                seen.set()
                return

    threading.Thread(target=watch, daemon=True).start()
    proc.stdin.write(lines)
    proc.stdin.flush()
    assert seen.wait(30), f"never saw {seen_line!r}"
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def sessions_of(stored):
    """What the hall stored, less the device's ``clock`` events (they belong to no session)."""
    return [e for e in stored if e["type"] != "clock"]


def start_again(tmp_path, hall):
    """Power back on: the simulator on the same data folder, until what it keeps is delivered."""
    hall.set_key("WE-0001", SIM_KEY)
    script = tmp_path / "wait.txt"
    script.write_text("wait 0.3\n", encoding="utf-8")
    again = subprocess.run([sys.executable, "-m", "sim", "--data", str(tmp_path / "data"), *SIM,
                            "--server", hall.url, "--device-key", SIM_KEY, "--script", str(script)],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr


@pytest.mark.timeout(120)
def test_a_power_cut_mid_session_ends_it_as_one_unrated_event_at_the_next_start(tmp_path, hall):
    power_cut_when(tmp_path, hall, "staff\n", "screen: prompt")
    marker = tmp_path / "data" / SESSION_MARKER
    assert oct(marker.stat().st_mode & 0o777) == "0o600"
    session_id = json.loads(marker.read_text(encoding="utf-8"))["session_id"]
    assert session_id
    start_again(tmp_path, hall)
    assert_events_only_unrated(sessions_of(hall.events()), session_id)
    assert not marker.exists()
    # A third start adds nothing more.
    start_again(tmp_path, hall)
    assert_events_only_unrated(sessions_of(hall.events()), session_id)


@pytest.mark.timeout(120)
def test_a_power_cut_right_after_the_thanks_adds_no_unrated_event(tmp_path, hall):
    power_cut_when(tmp_path, hall, "staff\nwait 0.5\npress 2\n", "screen: thanks")
    start_again(tmp_path, hall)
    stored = sessions_of(hall.events())
    assert [(e["type"], e.get("level")) for e in stored] == [("rating", "satisfied")]
    assert stored[0]["session_id"]
    assert not (tmp_path / "data" / SESSION_MARKER).exists()


# --- the hall closing a session, end to end on loopback ------------------------------

KEY = "sessions-hall-key"


def on_hall(app, hall):
    """The device's hall link (feeding the app's queue) and uploader, both talking to ``hall``."""
    from device.config import Secret
    from device.queue.hall import HallLink
    from device.queue.transport import HttpTransport
    from device.queue.uploader import Uploader

    device_id = app.config.device.id
    link = HallLink(HttpTransport(hall.url, device_id, Secret(KEY), timeout=5), device_id, app.events,
                    hall_mode=True, poll_wait_s=0.2)
    uploader = Uploader(app.outbox, HttpTransport(hall.url, device_id, Secret(KEY), timeout=5), device_id,
                        synced=lambda: True)
    return link, uploader


def test_the_hall_closing_the_session_before_a_press_stores_one_unrated_event(make_app, hall):
    app, factory, _ = make_app('session.source="hall"')
    link, uploader = on_hall(app, hall)
    device_id = app.config.device.id
    opened = hall.open_session(device_id, ticket="A031")
    link.poll_session()
    app.pump()
    assert isinstance(app.model, PromptScreen)
    assert hall.close_session(device_id)            # the customer left before rating
    link.poll_session()
    app.pump()
    tap(app, factory, 2)                            # a press after the close is no rating
    assert uploader.drain()
    assert_events_only_unrated(hall.events(device_id), opened["session_id"])
    assert hall.events(device_id)[0]["ticket"] == "A031"
    link.poll_session()                             # nothing open: nothing more to say
    app.pump()
    assert len(app.outbox.events()) == 1 and link.status.faults == () and link.status.sessions_ignored == 0


def test_a_session_rated_normally_is_not_also_closed_unrated(make_app, hall):
    app, factory, _ = make_app('session.source="hall"')
    link, uploader = on_hall(app, hall)
    device_id = app.config.device.id
    opened = hall.open_session(device_id, ticket="A032")
    link.poll_session()
    app.pump()
    tap(app, factory, 4)
    assert link.poll_session() is None              # not uploaded yet: still open at the hall
    app.pump()
    assert uploader.drain()                         # the rating reaches the hall and closes the session
    link.poll_session()
    app.pump()                                      # the hall no longer names it: SessionClosed, ignored
    assert uploader.drain()
    stored = hall.events(device_id)
    assert [(e["type"], e["session_id"]) for e in stored] == [("rating", opened["session_id"])]
    assert link.status.sessions_closed == 1 and link.status.sessions_ignored == 0 and link.status.faults == ()


def test_a_session_already_recorded_is_not_opened_again_when_the_hall_still_offers_it(make_app):
    """After a restart the hall may offer a session this device already ended unrated: never twice."""
    from device.state import SessionOpened

    app, factory, _ = make_app('session.source="hall"')
    app.events.put(SessionOpened("s-restart", ticket="A007"))
    app.pump()
    assert app.loop.state.session is not None
    app.loop.stopping()                        # a restart: the open session ends unrated
    app.events.put(SessionOpened("s-restart", ticket="A007"))
    app.pump()
    assert app.loop.state.session is None
    tap(app, factory, 1)
    events = [e for e in app.outbox.events() if e["type"] != "clock"]
    assert [(e["type"], e.get("session_id")) for e in events] == [("unrated", "s-restart")]
