"""The pure state machine that decides what the device does.

``step(state, event, now, rules) -> (state, effects)`` does no I/O and reads
no clock: ``now`` is monotonic seconds passed in by the caller, so timeouts
are tested by passing times, never by sleeping. Drivers turn hardware into
the events below; the loop turns the effects into storage and screen actions
and puts the outcome of a commit (``RatingCommitted`` or ``CommitFailed``) on
its own queue of outcomes, handled before the next input, so the thank-you
screen can only follow a rating that is already on disk.

A rating is one button pressed **and released with no other button down in
between** (a "chord" of one). Two buttons at once — a palm on the keys, or a
technician holding 1 and 5 for the service screen — never make a rating.

A session (``staff_button`` or ``hall``) ends in exactly one event: the
rating of its one press, or ``unrated`` — when its window expires, when a new
session replaces it, when the hall closes it (:class:`SessionClosed`) or when
the loop stops (:class:`Stopping`). No path turns an unrated session into a
rating: default ratings are the platform's job, never the device's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device.levels import Level
from device.service_link import service_link

if TYPE_CHECKING:
    from device.config import Config

#: Buttons held together for the technician's service screen.
SERVICE_COMBO = frozenset({1, 5})

# --- Inputs -----------------------------------------------------------------


@dataclass(frozen=True)
class ButtonPressed:
    """Rating button 1..5 (1 = 非常满意) went down (already debounced)."""

    button: int


@dataclass(frozen=True)
class ButtonReleased:
    """Rating button 1..5 came up again (already debounced)."""

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
class SessionVetted:
    """A :class:`SessionOpened` with the facts the state machine decides it on.

    The loop's preparer (:meth:`device.loop.Loop.prepare`) reads them where
    the pure step cannot: whether the outbox already holds an event of the
    session, and whether the panel can show its ``qr_url``.
    """

    opened: SessionOpened
    recorded: bool = False
    qr_fits: bool = True


@dataclass(frozen=True)
class SessionClosed:
    """The hall server closed the session ``session_id`` before anyone rated it."""

    session_id: str


@dataclass(frozen=True)
class Stopping:
    """The loop is stopping (a restart, a rebuild, a shutdown): an open session ends here."""


@dataclass(frozen=True)
class PanelSlept:
    """The panel went to sleep (outside opening hours) or woke up."""

    asleep: bool


@dataclass(frozen=True)
class ButtonTestSet:
    """The technician's button test began (presses are reported, never rated) or ended."""

    active: bool


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
    session: Session | None
    suspect: bool


@dataclass(frozen=True)
class CommitUnrated:
    """Append an ``unrated`` event for a session that ended without a press."""

    session: Session


@dataclass(frozen=True)
class CommitDetail:
    """Append a ``detail`` event: the reason chosen for a 差评."""

    rating_id: str
    reason_codes: tuple[str, ...]
    session: Session | None


@dataclass(frozen=True)
class PressIgnored:
    """A press that is not a rating: only counted and logged."""

    button: int
    why: str


@dataclass(frozen=True)
class ButtonTested:
    """A press during the technician's button test: reported to the console, never a rating."""

    button: int


@dataclass(frozen=True)
class SessionSkipped:
    """A session the device already recorded that the hall still offers: not opened again."""

    session_id: str


@dataclass(frozen=True)
class QrReplaced:
    """A session's QR URL the panel cannot show: the window's own QR is shown instead (a fault)."""

    session_id: str
    length: int


# Effects for the outputs (issue 19): only with ``Rules.audio``; handled off the press path by
# device.outputs (the speaker's and the buzzer's own threads).

#: The voice prompts: asked for when a session opens, thanks once a rating is kept
#: (the same words for every level), the hint to scan the code when a session expires.
ASK, THANKS_PROMPT, HINT = "ask", "thanks", "hint"
#: Beeps: a press that counted (the same for every level), a press that did not.
BEEP_OK, BEEP_REFUSED = "ok", "refused"


@dataclass(frozen=True)
class Say:
    """Play a voice prompt (:data:`ASK`, :data:`THANKS_PROMPT` or :data:`HINT`)."""

    prompt: str


@dataclass(frozen=True)
class Beep:
    """Sound the buzzer: :data:`BEEP_OK` or :data:`BEEP_REFUSED`."""

    kind: str


#: What :func:`step` may ask the caller to do.
Effect = (CommitRating | CommitUnrated | CommitDetail | PressIgnored | ButtonTested | SessionSkipped | QrReplaced
          | Say | Beep)

#: The reason tags of one level: ``((code, text), ...)``, at most four.
Reasons = tuple[tuple[str, str], ...]


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

    source: str = "staff_button"
    min_interval_s: float = 10.0
    rating_window_s: float = 30.0
    thanks_s: float = 3.0
    later_s: float = 20.0
    reasons_s: float = 15.0
    service_hold_s: float = 5.0
    service_s: float = 30.0
    suspect_reaction_s: float = 0.3
    suspect_count: int = 4
    suspect_window_s: float = 60.0
    #: ``{Level: ((code, text), ...)}`` as pairs, at most four per level, for 差评 only.
    reasons: tuple[tuple[Level, Reasons], ...] = ()
    #: ``display.show_level``: thank with the level and offer reason tags after a 差评.
    #: Off (the default), every rating is followed by the same screens, whatever its level.
    show_level: bool = False
    #: The link template naming a session (``qr.service_url`` resolved, device/service_link.py); ``""``: none,
    #: the later and follow-up screens show the window's code (or the hall's ``qr_url`` for the session).
    service_qr: str = ""
    #: ``audio.enabled``: step also emits :class:`Say` and :class:`Beep` (issue 19).
    audio: bool = False

    @classmethod
    def from_config(cls, config: Config, reasons: Mapping[Level, Reasons] | None = None,
                    service_qr: str = "") -> Rules:
        """The rules from the ``[session]`` settings, ``display.show_level`` and the hall's reason tags."""
        s = config.session
        names = {f.name for f in dataclasses.fields(cls)} - {"reasons", "show_level", "service_qr", "audio"}
        return cls(**{n: getattr(s, n) for n in names}, reasons=tuple((reasons or {}).items()),
                   show_level=config.display.show_level, service_qr=service_qr, audio=config.audio.enabled)

    def reasons_for(self, level: Level | None) -> Reasons:
        """The reason tags offered after a rating of ``level`` (none for good ratings).

        Only with ``show_level``: tags of a 差评 on the screen would tell the
        staff and the queue which level was chosen.
        """
        if not self.show_level or level is None:
            return ()
        return dict(self.reasons).get(level, ())


IDLE, PROMPT, THANKS, REASONS, FOLLOWUP, LATER, PAUSED, SERVICE = (
    "idle", "prompt", "thanks", "reasons", "followup", "later", "paused", "service")
#: Screens that give way to idle (or the next screen) by themselves.
TIMED = (THANKS, REASONS, FOLLOWUP, LATER, PAUSED, SERVICE)


@dataclass(frozen=True)
class State:
    """Everything the state machine remembers between two events."""

    screen: str = IDLE
    #: When the current timed screen gives way.
    screen_until: float = 0.0
    session: Session | None = None
    #: Level shown on the thank-you and reasons screens; only kept with ``show_level``.
    level: Level | None = None
    #: The rating a reason would refer to (set while reasons may be chosen).
    rating_id: str = ""
    rating_session: Session | None = None
    #: ``free`` mode: presses before this are not ratings.
    lockout_until: float = 0.0
    #: Times of recently accepted ratings, for the burst guard.
    recent: tuple[float, ...] = ()
    #: Presses that were not ratings.
    ignored: int = 0
    #: Set while the outbox is full: rating is paused.
    storage_full: str = ""
    #: Why the last commit failed (shown on the paused screen).
    fault: str = ""
    #: QR shown on the later/follow-up/paused screen; empty means the window's QR.
    later_qr: str = ""
    #: Buttons down now, every button pressed since all were last up, and when that began.
    held: frozenset[int] = frozenset()
    chord: frozenset[int] = frozenset()
    chord_since: float = 0.0
    #: The session whose rating is being committed.
    committing: Session | None = field(default=None, repr=False)
    #: The technician's button test is on: presses are reported, never rated.
    button_test: bool = False
    #: The panel sleeps (outside opening hours): a press only wakes it.
    asleep: bool = False
    #: Buttons whose press only woke the panel; their release is not a rating either.
    waking: frozenset[int] = frozenset()
    #: When a person last pressed a button (the panel dims and sleeps from it).
    last_activity: float = 0.0


def step(state: State, event: object, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    """Advance the state machine by one event.

    Args:
        state: the current :class:`State`.
        event: one of the input dataclasses above; anything else only lets
            timeouts fire, like :class:`Tick`.
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
    if rules.audio and any(isinstance(e, PressIgnored) and e.button for e in more):
        # A rating button's press that did not count gets the other beep, so the citizen knows.
        more = [*more, Beep(BEEP_REFUSED)]
    return state, effects + more


def next_deadline(state: State, rules: Rules) -> float | None:
    """The earliest monotonic time at which a Tick would change something, or None."""
    times: list[float] = []
    if state.screen in TIMED and state.screen_until:
        times.append(state.screen_until)
    if state.session is not None:
        times.append(state.session.deadline)
    if state.held == SERVICE_COMBO and state.screen != SERVICE:
        times.append(state.chord_since + rules.service_hold_s)
    return min(times) if times else None


def _replace(state: State, **changes: Any) -> State:
    return dataclasses.replace(state, **changes)


def _expire(state: State, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    effects: list[Effect] = []
    session = state.session
    if session is not None and now >= session.deadline:
        # Nobody pressed in time: record it as unrated, never as a rating.
        state, effects = _end_unrated(state, now, rules)
        effects += _sound(rules, Say(HINT))
    if state.held == SERVICE_COMBO and state.chord == SERVICE_COMBO and state.screen != SERVICE \
            and now - state.chord_since >= rules.service_hold_s:
        state = _replace(state, screen=SERVICE, screen_until=now + rules.service_s)
    if state.screen in TIMED and state.screen_until and now >= state.screen_until:
        if state.screen == THANKS and state.rating_id and rules.reasons_for(state.level):
            # show_level: after thanks for a 差评, offer the reasons (optional, times out).
            state = _replace(state, screen=REASONS, screen_until=now + rules.reasons_s)
        elif state.screen == THANKS and not rules.show_level:
            # Private: every rating, whatever its level, is followed by the same
            # screen for the same time: the QR code to add details on the phone.
            qr = state.rating_session.qr_url if state.rating_session else ""
            state = _replace(state, screen=FOLLOWUP, screen_until=now + rules.reasons_s, later_qr=qr,
                             rating_session=None)
        else:
            state = _replace(state, screen=IDLE, screen_until=0.0, level=None, fault="", later_qr="",
                             rating_id="", rating_session=None)
    return state, effects


def _end_unrated(state: State, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    """End the open session without a rating: one ``unrated`` event, then its QR to rate later."""
    session = state.session
    if session is None:
        return state, []
    state = _replace(state, session=None, screen=LATER, screen_until=now + rules.later_s,
                     later_qr=session.qr_url, level=None, rating_id="", rating_session=None)
    return state, [CommitUnrated(session)]


def _on_press(state: State, event: ButtonPressed, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    if state.button_test:
        # The technician's button test: presses are reported, never rated.
        return state, [ButtonTested(event.button)]
    state = _replace(state, last_activity=now)
    if state.asleep:
        # A press on a sleeping panel only wakes it: nobody could see what they rated.
        return _replace(state, waking=state.waking | {event.button}), []
    if not state.held:
        state = _replace(state, chord=frozenset(), chord_since=now)
    return _replace(state, held=state.held | {event.button}, chord=state.chord | {event.button}), []


def _on_release(state: State, event: ButtonReleased, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    if state.button_test:
        return state, []
    state = _replace(state, last_activity=now)
    if event.button in state.waking:
        return _replace(state, waking=state.waking - {event.button}), []
    if event.button not in state.held:
        return state, []
    state = _replace(state, held=state.held - {event.button})
    if state.held:
        return state, []
    chord = state.chord
    state = _replace(state, chord=frozenset())
    if len(chord) > 1:
        return _ignore(state, event.button, "several buttons at once")
    if state.screen == SERVICE:
        # Any single press leaves the technician's screen.
        return _replace(state, screen=IDLE, screen_until=0.0), []
    if state.screen == REASONS:
        return _choose_reason(state, event.button, now, rules)
    return _rate(state, event.button, now, rules)


def _rate(state: State, button: int, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    if state.storage_full:
        return _ignore(state, button, "rating paused: " + state.storage_full)
    if rules.source == "free":
        if now < state.lockout_until:
            return _ignore(state, button, "inside the lockout after a rating")
        session = None
    else:
        session = state.session
        if session is None:
            return _ignore(state, button, "no rating was requested")
    # Only the last suspect_count times can make a burst: keep no more (a storm stays small).
    recent = (*(t for t in state.recent if now - t < rules.suspect_window_s), now)[-rules.suspect_count:]
    suspect = len(recent) >= rules.suspect_count or (
        session is not None and now - session.opened_at < rules.suspect_reaction_s)
    level = Level.from_button(button)
    state = _replace(state, recent=recent, session=None, committing=session)
    return state, [CommitRating(level, session, suspect)]


def _choose_reason(state: State, button: int, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    reasons = rules.reasons_for(state.level)
    if button == 5:
        # Details are written on the phone: show the QR code.
        qr = state.rating_session.qr_url if state.rating_session else ""
        return _replace(state, screen=LATER, screen_until=now + rules.later_s, later_qr=qr,
                        rating_id=""), []
    if button > len(reasons):
        return _ignore(state, button, "no reason on this button")
    code = reasons[button - 1][0]
    effect = CommitDetail(state.rating_id, (code,), state.rating_session)
    # A short thank-you again; no second offer of reasons.
    return _replace(state, screen=THANKS, screen_until=now + rules.thanks_s, rating_id=""), \
        [effect, *_sound(rules, Beep(BEEP_OK))]


def _on_committed(state: State, event: RatingCommitted, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    # Private (the default): the level is not even kept past this point, so no
    # screen can show it; what follows is the same for every level.
    shown = event.level if rules.show_level else None
    state = _replace(
        state, screen=THANKS, screen_until=now + rules.thanks_s, level=shown,
        lockout_until=now + rules.min_interval_s if rules.source == "free" else 0.0,
        rating_id=event.event_id if shown is not None and shown.is_bad else "",
        rating_session=state.committing, committing=None, fault="", later_qr="")
    # Kept: the same beep and the same words, whatever the level.
    return state, _sound(rules, Beep(BEEP_OK), Say(THANKS_PROMPT))


def _on_commit_failed(state: State, event: CommitFailed, now: float,
                      rules: Rules) -> tuple[State, list[Effect]]:
    # Never thank for a rating we did not keep: say rating is paused and
    # offer the QR code so the citizen can still rate on the phone.
    qr = state.committing.qr_url if state.committing else ""
    state = _replace(state, screen=PAUSED, screen_until=now + rules.later_s, fault=event.reason,
                     later_qr=qr, committing=None)
    return state, _sound(rules, Beep(BEEP_REFUSED), Say(HINT))


def _open_session(state: State, now: float, rules: Rules, **fields: Any) -> State:
    if not fields.get("qr_url") and rules.service_qr:
        # The later and follow-up screens name this service, so the phone page knows which one
        # (the hall's own qr_url for the session wins where it sends one the panel can show).
        fields["qr_url"] = service_link(rules.service_qr, str(fields.get("session_id", "")))
    session = Session(opened_at=now, deadline=now + rules.rating_window_s, **fields)
    return _replace(state, session=session, screen=PROMPT, screen_until=0.0, level=None, rating_id="",
                    later_qr="")


def _on_staff(state: State, event: StaffRequested, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    if rules.source != "staff_button":
        return _ignore(state, 0, "staff key is not the session source")
    effects: list[Effect] = []
    if state.session is not None:
        if now - state.session.opened_at < rules.min_interval_s:
            # A double press, or impatience: no service ends this fast. One
            # open session at a time, and a repeat neither stacks nor extends it.
            return state, []
        # The staff moved on to the next service: the open one was not rated,
        # and the next press belongs to the new service, not the old one.
        state, effects = _end_unrated(state, now, rules)
    return _open_session(state, now, rules, session_id=event.session_id), effects + _sound(rules, Say(ASK))


def _on_hall_session(state: State, event: SessionOpened, now: float,
                     rules: Rules) -> tuple[State, list[Effect]]:
    return _on_vetted(state, SessionVetted(event), now, rules)


def _on_vetted(state: State, vetted: SessionVetted, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    event = vetted.opened
    if rules.source != "hall" or not event.session_id:
        # A session without an id could not bind its rating to a service.
        return state, []
    if state.session is not None and state.session.session_id == event.session_id:
        return state, []
    if vetted.recorded:
        # A session this device already recorded (rated, or ended unrated before a restart)
        # that the hall still offers: opening it again could record it twice.
        return state, [SessionSkipped(event.session_id)]
    fields = dataclasses.asdict(event)
    effects: list[Effect] = []
    if event.qr_url and not vetted.qr_fits:
        # A session's QR from outside that the panel cannot show: the window's own QR instead, reported.
        fields["qr_url"] = ""
        effects.append(QrReplaced(event.session_id, len(event.qr_url)))
    # The hall moved on to the next service: the open one was not rated.
    state, ended = _end_unrated(state, now, rules)
    return _open_session(state, now, rules, **fields), ended + effects + _sound(rules, Say(ASK))


def _on_hall_closed(state: State, event: SessionClosed, now: float,
                    rules: Rules) -> tuple[State, list[Effect]]:
    if state.session is None or state.session.session_id != event.session_id:
        # Rated already, expired already, or some other session: nothing is open to end.
        return state, []
    return _end_unrated(state, now, rules)


def _on_stopping(state: State, event: Stopping, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    # A session cannot outlive the loop (nothing would take its press): it
    # ends unrated now, so a restart never leaves it unaccounted for.
    state, effects = _end_unrated(state, now, rules)
    return _replace(state, screen=IDLE, screen_until=0.0, later_qr=""), effects


def _on_storage(state: State, event: StorageChanged, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    return _replace(state, storage_full=event.reason if event.full else ""), []


def _on_panel(state: State, event: PanelSlept, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    return _replace(state, asleep=event.asleep), []


def _on_button_test(state: State, event: ButtonTestSet, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    return _replace(state, button_test=event.active, held=frozenset(), chord=frozenset(), waking=frozenset()), []


def _sound(rules: Rules, *effects: Effect) -> list[Effect]:
    """The output effects, when the outputs are on (``audio.enabled``)."""
    return list(effects) if rules.audio else []


def _ignore(state: State, button: int, why: str) -> tuple[State, list[Effect]]:
    return _replace(state, ignored=state.ignored + 1), [PressIgnored(button, why)]


def _on_tick(state: State, event: Tick, now: float, rules: Rules) -> tuple[State, list[Effect]]:
    return state, []


# Each handler takes the event type it is filed under.
_HANDLERS: dict[type, Callable[[State, Any, float, Rules], tuple[State, list[Effect]]]] = {
    ButtonPressed: _on_press,
    ButtonReleased: _on_release,
    StaffRequested: _on_staff,
    SessionOpened: _on_hall_session,
    SessionVetted: _on_vetted,
    SessionClosed: _on_hall_closed,
    Stopping: _on_stopping,
    RatingCommitted: _on_committed,
    CommitFailed: _on_commit_failed,
    StorageChanged: _on_storage,
    PanelSlept: _on_panel,
    ButtonTestSet: _on_button_test,
    Tick: _on_tick,
}


def inputs() -> tuple[type, ...]:
    """The input types :func:`step` takes (the loop steps these; other inputs go to handlers)."""
    return tuple(_HANDLERS)
