"""The pure state machine: times are passed in, nothing sleeps."""

from device.levels import Level
from device.state import (
    ButtonPressed,
    ButtonReleased,
    CommitDetail,
    CommitFailed,
    CommitRating,
    CommitUnrated,
    PressIgnored,
    RatingCommitted,
    Rules,
    StaffRequested,
    State,
    StorageChanged,
    Tick,
    next_deadline,
    step,
)
from helpers import Tap, run

FREE = Rules(source="free", min_interval_s=10, thanks_s=3)
STAFF = Rules(source="staff_button", rating_window_s=30, thanks_s=3, later_s=20)


def ratings(effects):
    return [e for e in effects if isinstance(e, CommitRating)]


def test_free_three_presses_inside_the_interval_make_one_rating():
    state, effects = run(FREE, [(0.0, Tap(2)), (1.0, Tap(1)), (9.9, Tap(5))])
    assert [r.level for r in ratings(effects)] == [Level.SATISFIED]
    assert state.ignored == 2
    assert sum(isinstance(e, PressIgnored) for e in effects) == 2


def test_free_a_press_after_the_interval_counts_again():
    _, effects = run(FREE, [(0.0, Tap(1)), (10.0, Tap(4))])
    assert [r.level for r in ratings(effects)] == [Level.VERY_SATISFIED, Level.DISSATISFIED]


def test_thanks_shows_the_level_only_after_commit_and_then_returns_to_idle():
    rules = Rules(source="free", thanks_s=3, show_level=True)
    state, _ = step(State(), ButtonPressed(5), 0.0, rules)
    state, effects = step(state, ButtonReleased(5), 0.1, rules)
    assert [type(e) for e in effects] == [CommitRating]
    assert state.screen == "idle"           # nothing thanked yet: not committed
    state, _ = step(state, RatingCommitted(Level.VERY_DISSATISFIED, "x"), 0.01, rules)
    assert state.screen == "thanks" and state.level is Level.VERY_DISSATISFIED
    state, _ = step(state, Tick(), 3.5, rules)
    assert state.screen == "idle"


def test_private_thanks_keeps_no_level_and_every_level_is_followed_alike():
    """Privacy at the counter: the same screens, for the same time, whatever the level."""
    rules = Rules(source="free", thanks_s=3, reasons_s=15, reasons=(
        (Level.DISSATISFIED, (("401", "办事效率低"),)),))
    paths = []
    for button in range(1, 6):
        state, _ = run(rules, [(0.0, Tap(button))])
        path = [(state.screen, state.screen_until, state.level, state.rating_id)]
        for now in (2.9, 3.0, 17.9, 18.0):
            state, effects = step(state, Tick(), now, rules)
            assert effects == []
            path.append((state.screen, state.screen_until, state.level, state.rating_id))
        paths.append(path)
    assert paths[0] == [("thanks", 3.0, None, ""), ("thanks", 3.0, None, ""), ("followup", 18.0, None, ""),
                        ("followup", 18.0, None, ""), ("idle", 0.0, None, "")]
    assert all(path == paths[0] for path in paths)


def test_failed_commit_shows_paused_never_thanks():
    state, _ = run(FREE, [])
    state, _ = step(state, ButtonPressed(1), 0.0, FREE)
    state, _ = step(state, ButtonReleased(1), 0.0, FREE)
    state, _ = step(state, CommitFailed("disk full"), 0.0, FREE)
    assert state.screen == "paused" and state.level is None


def test_staff_mode_press_without_request_is_not_a_rating():
    state, effects = run(STAFF, [(0.0, Tap(1))])
    assert ratings(effects) == [] and state.ignored == 1


def test_staff_mode_one_press_counts_second_is_ignored():
    state, effects = run(STAFF, [(0.0, StaffRequested("s1")), (2.0, Tap(3)), (3.0, Tap(1))])
    (rating,) = ratings(effects)
    assert rating.level is Level.BASIC and rating.session.session_id == "s1"
    assert state.ignored == 1


def test_staff_mode_expired_window_records_one_unrated_event():
    state, effects = run(STAFF, [(0.0, StaffRequested("s1")), (29.0, Tick()), (30.0, Tick()), (31.0, Tick()),
                                 (32.0, Tap(1))])
    unrated = [e for e in effects if isinstance(e, CommitUnrated)]
    assert len(unrated) == 1 and unrated[0].session.session_id == "s1"
    assert ratings(effects) == []
    assert state.screen == "later"


def test_staff_mode_a_quick_second_request_does_not_extend_or_stack():
    state, effects = run(STAFF, [(0.0, StaffRequested("s1")), (STAFF.min_interval_s - 1, StaffRequested("s2")),
                                 (30.0, Tick())])
    assert [e.session.session_id for e in effects if isinstance(e, CommitUnrated)] == ["s1"]
    assert state.session is None and ratings(effects) == []


def test_a_burst_of_ratings_is_flagged_suspect_but_kept():
    rules = Rules(source="staff_button", rating_window_s=30, suspect_count=3, suspect_window_s=60,
                  suspect_reaction_s=0.3)
    script = []
    for i in range(4):
        t = i * 5.0
        script += [(t, StaffRequested(f"s{i}")), (t + 1.0, Tap(1))]
    _, effects = run(rules, script)
    assert [r.suspect for r in ratings(effects)] == [False, False, True, True]


def test_a_press_faster_than_a_person_after_the_request_is_suspect():
    _, effects = run(STAFF, [(0.0, StaffRequested("s1")), (0.05, Tap(1))])
    assert ratings(effects)[0].suspect is True


def test_storage_full_pauses_rating():
    state, _ = step(State(), StorageChanged(True, "outbox full"), 0.0, FREE)
    state, effects = run(FREE, [(0.0, Tap(1))], state)
    assert ratings(effects) == [] and state.ignored == 1


def test_two_buttons_at_once_are_never_a_rating():
    state = State()
    seen = []
    for now, event in [(0.0, ButtonPressed(2)), (0.05, ButtonPressed(3)), (0.2, ButtonReleased(2)),
                       (0.3, ButtonReleased(3))]:
        state, effects = step(state, event, now, FREE)
        seen += effects
    assert ratings(seen) == [] and state.ignored == 1


def test_holding_1_and_5_shows_the_service_screen_without_a_rating():
    state = State()
    seen = []
    for now, event in [(0.0, ButtonPressed(1)), (0.1, ButtonPressed(5)), (4.0, Tick())]:
        state, effects = step(state, event, now, FREE)
        seen += effects
    assert state.screen == "idle" and next_deadline(state, FREE) == 5.0
    for now, event in [(5.0, Tick()), (6.0, ButtonReleased(1)), (6.1, ButtonReleased(5))]:
        state, effects = step(state, event, now, FREE)
        seen += effects
    assert state.screen == "service" and ratings(seen) == []
    state, _ = step(state, Tick(), 5.0 + FREE.service_s, FREE)
    assert state.screen == "idle"


REASONS = Rules(source="free", thanks_s=3, reasons_s=15, later_s=20, show_level=True, reasons=(
    (Level.DISSATISFIED, (("401", "办事效率低"), ("402", "等候时间长"))),))


def test_reason_tags_are_offered_only_when_the_hall_shows_levels():
    private = Rules(source="free", thanks_s=3, reasons_s=15, reasons=REASONS.reasons)
    state, _ = run(private, [(0.0, Tap(4)), (3.0, Tick())])
    assert state.screen == "followup" and state.level is None
    state, effects = run(private, [(4.0, Tap(2))], state)
    assert ratings(effects) == [] and not [e for e in effects if isinstance(e, CommitDetail)]


def test_after_a_bad_rating_a_chosen_reason_is_a_detail_referring_to_it():
    state, effects = run(REASONS, [(0.0, Tap(4)), (3.0, Tick())])
    assert len(ratings(effects)) == 1 and state.screen == "reasons"
    state, effects = run(REASONS, [(4.0, Tap(2))], state)
    (detail,) = [e for e in effects if isinstance(e, CommitDetail)]
    assert detail.reason_codes == ("402",) and detail.rating_id.startswith("r")
    assert ratings(effects) == [] and state.screen == "thanks"


def test_reasons_are_optional_and_time_out():
    state, effects = run(REASONS, [(0.0, Tap(4)), (3.0, Tick()), (18.0, Tick())])
    assert state.screen == "idle"
    assert not [e for e in effects if isinstance(e, CommitDetail)]


def test_button_5_on_the_reasons_screen_shows_the_details_qr():
    state, _ = run(REASONS, [(0.0, Tap(4)), (3.0, Tick()), (4.0, Tap(5))])
    assert state.screen == "later"


def test_a_good_rating_or_a_level_without_tags_offers_no_reasons():
    for button in (1, 5):
        state, _ = run(REASONS, [(0.0, Tap(button)), (3.0, Tick())])
        assert state.screen == "idle"
