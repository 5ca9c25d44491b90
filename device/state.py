"""The pure state machine that decides what the device does.

``step(state, event, now, rules) -> (state, effects)`` does no I/O and reads
no clock: ``now`` is monotonic seconds passed in by the caller, so timeouts
are tested by passing times, never by sleeping. Drivers turn hardware into
the events below; the app turns the effects into storage and screen actions
and feeds the outcome of a commit straight back in (``RatingCommitted`` or
``CommitFailed``) before anything else happens, so the thank-you screen can
only follow a rating that is already on disk.
"""

import dataclasses
from dataclasses import dataclass, field

from device.levels import Level

# --- Inputs -----------------------------------------------------------------


@dataclass(frozen=True)
class ButtonPressed:
    """Rating button 1..5 (1 = 非常满意) went down (already debounced)."""

    button: int


@dataclass(frozen=True)
class ButtonReleased:
    button: int


@dataclass(frozen=True)
class StaffRequested:
    """The staff pressed 请评价; ``session_id`` is made by the caller (pure step)."""

    session_id: str


@dataclass(frozen=True)
class SessionOpened:
    """The hall server opened a service session for this window."""

    session_id: str
    ticket: str = ""
    project_no: str = ""
    task_code: str = ""
    task_name: str = ""
    qr_url: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed; lets timeouts fire."""


@dataclass(frozen=True)
class RatingCommitted:
    """The outbox durably holds the rating."""

    level: Level
    event_id: str


@dataclass(frozen=True)
class CommitFailed:
    """The outbox could not keep the rating (disk full, outbox full, I/O error)."""

    reason: str


@dataclass(frozen=True)
class StorageChanged:
    """The outbox became full (rating pauses) or has room again."""

    full: bool
    reason: str = ""


# --- Effects ----------------------------------------------------------------


@dataclass(frozen=True)
class CommitRating:
    """Append a ``rating`` event to the outbox; answer with RatingCommitted or CommitFailed."""

    level: Level
    session: "Session | None"
    suspect: bool


@dataclass(frozen=True)
class CommitUnrated:
    """Append an ``unrated`` event for a session that expired without a press."""

    session: "Session"


@dataclass(frozen=True)
class PressIgnored:
    """A press that is not a rating: only counted and logged."""

    button: int
    why: str


# --- State ------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """A service session: one press may rate it before ``deadline``."""

    session_id: str
    opened_at: float
    deadline: float
    ticket: str = ""
    project_no: str = ""
    task_code: str = ""
    task_name: str = ""
    qr_url: str = ""


@dataclass(frozen=True)
class Rules:
    """The parts of the configuration the state machine needs."""

    source: str = "free"
    min_interval_s: float = 10.0
    rating_window_s: float = 30.0
    thanks_s: float = 3.0
    later_s: float = 20.0
    suspect_reaction_s: float = 0.3
    suspect_count: int = 4
    suspect_window_s: float = 60.0

    @classmethod
    def from_config(cls, config):
        s = config.session
        return cls(**{f.name: getattr(s, f.name) for f in dataclasses.fields(cls)})


IDLE, PROMPT, THANKS, LATER, PAUSED = "idle", "prompt", "thanks", "later", "paused"


@dataclass(frozen=True)
class State:
    screen: str = IDLE
    #: When the current screen (thanks, later, paused) gives way to idle.
    screen_until: float = 0.0
    session: Session | None = None
    #: Level shown on the thank-you screen.
    level: Level | None = None
    #: ``free`` mode: presses before this are not ratings.
    lockout_until: float = 0.0
    #: Times of recently accepted ratings, for the burst guard.
    recent: tuple = ()
    #: Presses that were not ratings.
    ignored: int = 0
    #: Set while the outbox is full: rating is paused.
    storage_full: str = ""
    #: Why the last commit failed (shown on the paused screen).
    fault: str = ""
    #: QR shown on the later/paused screen; empty means the window's QR.
    later_qr: str = ""
    #: The session whose rating is being committed.
    committing: Session | None = field(default=None, repr=False)


def step(state, event, now, rules):
    """Advance the state machine by one event.

    Args:
        state: the current :class:`State`.
        event: one of the input dataclasses above.
        now: monotonic seconds.
        rules: :class:`Rules`.

    Returns:
        ``(new_state, effects)``; effects is a list, possibly empty.
    """
    state, effects = _expire(state, now, rules)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return state, effects
    state, more = handler(state, event, now, rules)
    return state, effects + more


def next_deadline(state):
    """The earliest monotonic time at which a Tick would change something, or None."""
    times = []
    if state.screen in (THANKS, LATER, PAUSED) and state.screen_until:
        times.append(state.screen_until)
    if state.session is not None:
        times.append(state.session.deadline)
    return min(times) if times else None


def _expire(state, now, rules):
    effects = []
    session = state.session
    if session is not None and now >= session.deadline:
        # Nobody pressed in time: record it as unrated, never as a rating.
        effects.append(CommitUnrated(session))
        state = dataclasses.replace(
            state, session=None, screen=LATER, screen_until=now + rules.later_s,
            later_qr=session.qr_url)
    if state.screen in (THANKS, LATER, PAUSED) and state.screen_until and now >= state.screen_until:
        state = dataclasses.replace(state, screen=IDLE, screen_until=0.0, level=None, fault="", later_qr="")
    return state, effects


def _on_press(state, event, now, rules):
    if state.storage_full:
        return _ignore(state, event, "rating paused: " + state.storage_full)
    if rules.source == "free":
        if now < state.lockout_until:
            return _ignore(state, event, "inside the lockout after a rating")
        session = None
    else:
        session = state.session
        if session is None:
            return _ignore(state, event, "no rating was requested")
    recent = tuple(t for t in state.recent if now - t < rules.suspect_window_s) + (now,)
    suspect = len(recent) >= rules.suspect_count or (
        session is not None and now - session.opened_at < rules.suspect_reaction_s)
    level = Level.from_button(event.button)
    state = dataclasses.replace(state, recent=recent, session=None, committing=session)
    return state, [CommitRating(level, session, suspect)]


def _on_committed(state, event, now, rules):
    state = dataclasses.replace(
        state, screen=THANKS, screen_until=now + rules.thanks_s, level=event.level,
        lockout_until=now + rules.min_interval_s if rules.source == "free" else 0.0,
        committing=None, fault="")
    return state, []


def _on_commit_failed(state, event, now, rules):
    # Never thank for a rating we did not keep: say rating is paused and
    # offer the QR code so the citizen can still rate on the phone.
    qr = state.committing.qr_url if state.committing else ""
    state = dataclasses.replace(
        state, screen=PAUSED, screen_until=now + rules.later_s, fault=event.reason,
        later_qr=qr, committing=None)
    return state, []


def _open_session(state, now, rules, **fields):
    session = Session(opened_at=now, deadline=now + rules.rating_window_s, **fields)
    return dataclasses.replace(state, session=session, screen=PROMPT, screen_until=0.0, level=None)


def _on_staff(state, event, now, rules):
    if rules.source != "staff_button":
        return _ignore(state, None, "staff key is not the session source")
    if state.session is not None:
        # One open session at a time: a second 请评价 neither stacks nor extends.
        return state, []
    return _open_session(state, now, rules, session_id=event.session_id), []


def _on_hall_session(state, event, now, rules):
    if rules.source != "hall":
        return state, []
    effects = []
    if state.session is not None:
        # The hall moved on to the next service: the open one was not rated.
        effects.append(CommitUnrated(state.session))
    fields = dataclasses.asdict(event)
    return _open_session(state, now, rules, **fields), effects


def _on_storage(state, event, now, rules):
    return dataclasses.replace(state, storage_full=event.reason if event.full else ""), []


def _ignore(state, event, why):
    button = event.button if event is not None else 0
    return dataclasses.replace(state, ignored=state.ignored + 1), [PressIgnored(button, why)]


def _on_tick(state, event, now, rules):
    return state, []


_HANDLERS = {
    ButtonPressed: _on_press,
    StaffRequested: _on_staff,
    SessionOpened: _on_hall_session,
    RatingCommitted: _on_committed,
    CommitFailed: _on_commit_failed,
    StorageChanged: _on_storage,
    Tick: _on_tick,
}
