"""What the hall server tells the device: its assignment, and service sessions.

One worker thread (:class:`HallLink`) fetches the assignment
(:func:`wire.assignment_path`, conditional on its ``ETag``) at start and
every few minutes, and in ``hall`` mode long-polls for sessions
(:func:`wire.session_path`) in between. Both turn into inputs on the app's
queue; the last assignment is kept in a file so a device that reboots with
no network still shows who is serving.

Only answers that verify as the hall's reach this module (the transport
raises for the rest), so no captive portal or rogue server can assign
another staff member or open a session. Even the hall is not believed
blindly: a session id seen before is ignored, and sessions opening faster
than a person could be served are refused and reported
(:class:`SessionGuard`), so a hall in a session storm cannot fill the
outbox with ``unrated`` events.

The hall answers every poll with the session it has open until that session
is rated or the hall closes it. The link remembers the session it opened;
while the hall still answers with it the link polls at a calm pace
(``OPEN_PAUSE_S``); once a verified answer says no session is open, the
link puts :class:`~device.state.SessionClosed` on the queue, once, and
forgets it. (Another session admitted in its place replaces it instead:
the state machine ends the replaced one unrated.) The state machine ends a
session unrated only if it is still open there: one the device rated
itself is not ended twice.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device import files
from device.clock import Clocks
from device.config import Config
from device.errors import TransportError, UnauthenticatedAnswer
from device.levels import Level
from device.queue.client import HallClient, as_client
from device.queue.transport import Backoff, Transport
from device.state import SessionClosed, SessionOpened
from device.worker import Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """Window, staff, QR code and reason tags as the hall server assigns them."""

    window_no: str
    window_name: str
    staff_no: str
    staff_name: str
    staff_dept: str
    qr_url: str
    #: ``((level_name, code, text), ...)``
    reasons: tuple[tuple[str, str, str], ...]
    reasons_version: str
    etag: str = ""

    @classmethod
    def from_json(cls, data: Any, etag: str = "") -> Assignment:
        """Parse the server's answer; ``ValueError`` naming the field when it is wrong."""
        def text(obj: Any, key: str, where: str, required: bool = True) -> str:
            value = obj.get(key, "") if isinstance(obj, dict) else None
            if value is None or (required and value == ""):
                raise ValueError(f"assignment: {where}.{key} is missing")
            if not isinstance(value, str):
                raise ValueError(f"assignment: {where}.{key} must be a string")
            return value

        if not isinstance(data, dict):
            raise ValueError("assignment: not a JSON object")
        window, staff = data.get("window"), data.get("staff")
        qr_url = text(data, "qr_url", "assignment")
        if not qr_url.startswith(("http://", "https://")):
            raise ValueError("assignment: qr_url must be an http(s) URL")
        reasons = []
        levels = {lv.value for lv in Level}
        for n, item in enumerate(data.get("reasons") or []):
            level = text(item, "level", f"reasons[{n}]")
            if level not in levels:
                raise ValueError(f"assignment: reasons[{n}].level {level!r} is not a level")
            reasons.append((level, text(item, "code", f"reasons[{n}]"), text(item, "text", f"reasons[{n}]")))
        return cls(
            window_no=text(window, "no", "window"), window_name=text(window, "name", "window", False),
            staff_no=text(staff, "no", "staff"), staff_name=text(staff, "name", "staff"),
            staff_dept=text(staff, "dept", "staff", False), qr_url=qr_url, reasons=tuple(reasons),
            reasons_version=str(data.get("reasons_version") or ""), etag=etag)

    def reasons_by_level(self) -> dict[Level, tuple[tuple[str, str], ...]]:
        """``{Level: ((code, text), ...)}``: at most four per 差评 level."""
        out: dict[Level, tuple[tuple[str, str], ...]] = {}
        for level_name, code, text in self.reasons:
            level = Level(level_name)
            if level.is_bad and len(out.get(level, ())) < 4:
                out[level] = (*out.get(level, ()), (code, text))
        return out

    def apply_to(self, config: Config) -> Config:
        """A new Config with this assignment in place of the configured identity."""
        reasons = self.reasons_by_level()
        return dataclasses.replace(
            config,
            device=dataclasses.replace(config.device, window_no=self.window_no,
                                       window_name=self.window_name),
            staff=dataclasses.replace(config.staff, no=self.staff_no, name=self.staff_name,
                                      dept=self.staff_dept),
            qr=dataclasses.replace(config.qr, url=self.qr_url),
            reasons=dataclasses.replace(
                config.reasons, version=self.reasons_version,
                dissatisfied=tuple(f"{c} {t}" for c, t in reasons.get(Level.DISSATISFIED, ())),
                very_dissatisfied=tuple(f"{c} {t}" for c, t in reasons.get(Level.VERY_DISSATISFIED, ()))))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AssignmentChanged:
    """Input for the app: the hall server assigned new identity or reasons."""

    assignment: Assignment


def load_assignment(path: str | os.PathLike[str]) -> Assignment | None:
    """The last assignment kept on disk, or None."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data["reasons"] = tuple(tuple(r) for r in data.get("reasons", ()))
        return Assignment(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        logger.warning("ignoring the kept assignment %s: %s", path, e)
        return None


def save_assignment(path: str | os.PathLike[str], assignment: Assignment) -> None:
    """Keep the assignment across reboots (:func:`device.files.write_atomic`: never a torn file)."""
    files.write_atomic(path, json.dumps(assignment.to_json(), ensure_ascii=False).encode("utf-8"))


#: The fault while sessions come faster than a person could be served.
SESSION_STORM = "session_storm"
#: The fault while the hall link's answers do not verify as the hall's.
UNAUTHENTICATED = "unauthenticated_answer"


class SessionGuard:
    """Which sessions the hall opens are believed: new ids, at a pace people can be served at.

    A token bucket: ``burst`` sessions may open back to back (a staff member
    correcting a ticket), then one every ``every_s`` seconds; a session past
    that is refused and counted. Ids seen before (the last ``remember`` of
    them) are ignored.

    Args:
        burst: sessions allowed back to back.
        every_s: seconds a session costs at the sustained pace.
        remember: how many session ids are remembered.
        storm_s: how long after the last refusal the storm is still reported.
    """

    def __init__(self, burst: int = 3, every_s: float = 20.0, remember: int = 1000, storm_s: float = 300.0) -> None:
        self.burst = burst
        self.every_s = every_s
        self.storm_s = storm_s
        self._tokens = float(burst)
        self._at: float | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self.refused = 0
        self.repeated = 0
        self.last_refused: float | None = None

    def admit(self, session_id: str, now: float) -> str:
        """``""`` to open the session, else why not (``"repeated"`` or ``"storm"``)."""
        if session_id in self._seen:
            self.repeated += 1
            return "repeated"
        self._seen[session_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.every_s)
        self._at = now
        if self._tokens < 1:
            self.refused += 1
            self.last_refused = now
            return "storm"
        self._tokens -= 1
        return ""

    def storming(self, now: float) -> bool:
        """Whether a session was refused within the last ``storm_s`` seconds."""
        return self.last_refused is not None and now - self.last_refused < self.storm_s


@dataclass(frozen=True)
class HallLinkStatus:
    """What the hall link shows of itself (a snapshot)."""

    online: bool | None = None      # None until the first answer or failure
    last_error: str = ""
    etag: str = ""                  # of the assignment the device has
    assignments: int = 0            # assignments received since start
    sessions: int = 0               # sessions opened by the hall since start
    sessions_ignored: int = 0       # session ids seen before (not the open one answered again)
    sessions_closed: int = 0        # sessions the hall closed (SessionClosed put on the queue)
    sessions_refused: int = 0       # sessions refused in a storm
    unauthenticated: int = 0        # answers that did not verify, since start
    faults: tuple[str, ...] = ()    # SESSION_STORM, UNAUTHENTICATED while they last


class HallLink(Worker[HallLinkStatus]):
    """The worker that asks the hall server for the assignment and for sessions.

    Its cycle is one assignment fetch when due and, in ``hall`` mode, one
    long poll; results go onto the app's queue. Other threads only read
    :attr:`status` or hand it a :meth:`reconfigure`.

    Args:
        transport: a transport of its own (requests' sessions are not shared
            between threads); the hall link owns it from now on.
        device_id: this device.
        events: the app's input queue.
        hall_mode: long-poll sessions (``session.source = "hall"``).
        etag: of the assignment the device already has.
        poll_wait_s: how long the server may hold a long poll.
        assignment_every_s: how often the assignment is fetched.
        retry_min_s, retry_max_s: the bounds of the delay after a failure.
        clocks, monotonic: the clock (seconds) that times the fetches;
            ``clocks`` also goes to the transport (it signs with them and
            teaches them the hall's time).
        guard: which sessions are believed (:class:`SessionGuard`).
        rand: jitter for the retry delay.
    """

    POLL_WAIT_S = 25
    #: After a refused session the next poll waits this long: a storm is not polled flat out.
    STORM_PAUSE_S = 5.0
    #: While the hall answers with the open session at once, polls are this far apart.
    OPEN_PAUSE_S = 2.0

    def __init__(self, transport: HallClient | Transport, device_id: str, events: queue.Queue[Any], *, hall_mode: bool,
                 etag: str = "", poll_wait_s: float = POLL_WAIT_S, assignment_every_s: float = 300.0,
                 retry_min_s: float = 2.0, retry_max_s: float = 60.0, clocks: Clocks | None = None,
                 monotonic: Callable[[], float] | None = None, guard: SessionGuard | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        super().__init__("hall-link", HallLinkStatus(etag=etag))
        self.clocks = clocks
        #: How the hall is reached (:class:`~device.queue.client.HallClient`); a bare transport is wrapped.
        self.client: HallClient = as_client(transport)
        self._hand_clocks(self.client)
        self.device_id = device_id
        self.events = events
        self.hall_mode = hall_mode
        self.etag = etag
        self.poll_wait_s = poll_wait_s
        self.assignment_every_s = assignment_every_s
        self.backoff = Backoff(retry_min_s, retry_max_s, rand)
        self.monotonic = monotonic or (clocks.monotonic if clocks else time.monotonic)
        self.guard = guard or SessionGuard()
        #: Monotonic seconds at which the assignment is fetched next (now: at start).
        self.next_assignment = 0.0
        self._pause = 0.0
        #: The session last put on the queue as opened, until the hall no longer names it.
        self.open_session_id: str | None = None

    @property
    def transport(self) -> Any:
        """The transport under the hall client (the client itself when it has none)."""
        return getattr(self.client, "transport", self.client)

    def reconfigure(self, *, transport: HallClient | Transport | None = None, device_id: str | None = None) -> None:
        """Use a new transport (server, key) or device id, and fetch the assignment again.

        Taken up when the current long poll ends (at most ``poll_wait_s``);
        the hall link closes the transport it replaces.
        """
        self.hand_over(lambda: self._apply(transport, device_id))

    def _apply(self, transport: HallClient | Transport | None, device_id: str | None) -> None:
        if transport is not None and transport is not self.client and transport is not self.transport:
            old, self.client = self.client, as_client(transport)
            old.close()
            self._hand_clocks(self.client)
        if device_id is not None:
            self.device_id = device_id
        self.next_assignment = 0.0
        self.backoff.reset()

    def _hand_clocks(self, transport: HallClient) -> None:
        use = getattr(transport, "use_clocks", None)
        if use is not None and self.clocks is not None:
            use(self.clocks)

    def on_stop(self) -> None:
        self.client.close()

    def cycle(self) -> float:
        """Fetch the assignment when due, then one long poll (``hall`` mode).

        Returns:
            Seconds until the next cycle: 0 after a poll, the time until the
            next fetch otherwise, a growing delay after a failure.
        """
        self._pause = 0.0
        try:
            if self.monotonic() >= self.next_assignment:
                self.fetch_assignment()
                self.next_assignment = self.monotonic() + self.assignment_every_s
            if self.hall_mode:
                self.poll_session()
        except UnauthenticatedAnswer as e:
            # No answer at all: never an assignment, a session or a time.
            logger.warning("hall link: %s", e)
            return self._after_failure(str(e), unauthenticated=True)
        except TransportError as e:
            return self._after_failure(str(e))
        except Exception:  # a hostile answer must never end the link
            logger.exception("hall link: unexpected error")
            return self._after_failure("unexpected error")
        self.backoff.reset()
        faults = self._faults(unauthenticated=False)
        if self.status.online is not True or self.status.faults != faults:
            self.publish(online=True, last_error="", faults=faults)
        if self.hall_mode:
            return self._pause
        return max(0.0, self.next_assignment - self.monotonic())

    def _faults(self, unauthenticated: bool) -> tuple[str, ...]:
        faults = [UNAUTHENTICATED] if unauthenticated else []
        if self.guard.storming(self.monotonic()):
            faults.append(f"{SESSION_STORM}: {self.guard.refused} sessions refused")
        return tuple(faults)

    def _after_failure(self, why: str, unauthenticated: bool = False) -> float:
        delay = self.backoff.next()
        self.publish(online=False, last_error=why, faults=self._faults(unauthenticated),
                     unauthenticated=self.status.unauthenticated + unauthenticated)
        logger.info("hall link: %s; again in %.0f s", why, delay)
        return delay

    def fetch_assignment(self) -> Assignment | None:
        """One GET; an assignment that changed goes onto the queue. Returns it or None."""
        answer = self.client.assignment(self.device_id, self.etag)
        if answer.data is None:
            return None  # unchanged, or none assigned
        etag = answer.etag
        try:
            assignment = Assignment.from_json(answer.data, etag)
        except ValueError as e:
            logger.error("%s; keeping the current one", e)
            return None
        self.etag = etag
        self.events.put(AssignmentChanged(assignment))
        self.publish(etag=etag, assignments=self.status.assignments + 1)
        return assignment

    def poll_session(self) -> SessionOpened | None:
        """One long poll; an opened or closed session goes onto the queue.

        Returns:
            The session opened, or None (none, the open one again, or refused).
        """
        session = self.client.poll_session(self.device_id, self.poll_wait_s)
        if not isinstance(session, dict) or not isinstance(session.get("session_id"), str):
            self._hall_closed()
            return None
        if session["session_id"] == self.open_session_id:
            # Still open at the hall: not news, and not a fault. Poll again calmly.
            self._pause = self.OPEN_PAUSE_S
            return None
        # Another session: once admitted it replaces the open one (the state machine
        # ends that one unrated); refused or repeated, it is not believed, and neither
        # is its word that the open one is over.
        fields = {f.name: session.get(f.name) for f in dataclasses.fields(SessionOpened)}
        opened = SessionOpened(**{k: str(v) if v is not None else "" for k, v in fields.items()})
        refused = self.guard.admit(opened.session_id, self.monotonic())
        if refused == "repeated":
            logger.warning("hall link: session %s was opened before; ignored", opened.session_id)
            self.publish(sessions_ignored=self.guard.repeated)
            self._pause = self.STORM_PAUSE_S
            return None
        if refused:
            logger.warning("hall link: sessions open faster than a person can be served; refused %s "
                           "(%d so far)", opened.session_id, self.guard.refused)
            self.publish(sessions_refused=self.guard.refused, faults=self._faults(unauthenticated=False))
            self._pause = self.STORM_PAUSE_S
            return None
        self.events.put(opened)
        self.open_session_id = opened.session_id
        self.publish(sessions=self.status.sessions + 1)
        return opened

    def _hall_closed(self) -> None:
        """The hall no longer names the open session: end it (once) and forget it."""
        if self.open_session_id is None:
            return
        closed, self.open_session_id = self.open_session_id, None
        logger.info("hall link: the hall closed session %s", closed)
        self.events.put(SessionClosed(closed))
        self.publish(sessions_closed=self.status.sessions_closed + 1)
