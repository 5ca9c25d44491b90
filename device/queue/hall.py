"""What the hall server tells the device: its assignment, and service sessions.

One thread fetches ``GET /api/v1/devices/{id}/assignment`` (with
``If-None-Match``) at start and every few minutes, and in ``hall`` mode
long-polls ``GET /api/v1/devices/{id}/session?wait=N`` in between. Both turn
into inputs on the app's queue; the last assignment is kept in a file so a
device that reboots with no network still shows who is serving.
"""

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass

from device.errors import TransportError
from device.levels import Level
from device.state import SessionOpened

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
    reasons: tuple
    reasons_version: str
    etag: str = ""

    @classmethod
    def from_json(cls, data, etag=""):
        """Parse the server's answer; ``ValueError`` naming the field when it is wrong."""
        def text(obj, key, where, required=True):
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

    def reasons_by_level(self):
        """``{Level: ((code, text), ...)}``: at most four per 差评 level."""
        out = {}
        for level_name, code, text in self.reasons:
            level = Level(level_name)
            if level.is_bad and len(out.get(level, ())) < 4:
                out[level] = out.get(level, ()) + ((code, text),)
        return out

    def apply_to(self, config):
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

    def to_json(self):
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AssignmentChanged:
    """Input for the app: the hall server assigned new identity or reasons."""

    assignment: Assignment


def load_assignment(path):
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


def save_assignment(path, assignment):
    """Keep the assignment across reboots: write, fsync, rename (never a torn file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(assignment.to_json(), f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class HallLink:
    """The thread that asks the hall server for the assignment and for sessions.

    Args:
        transport: an ``HttpTransport`` of its own (requests sessions are not shared
            between threads).
        device_id: this device.
        events: the app's input queue.
        hall_mode: long-poll sessions (``session.source = "hall"``).
        etag: of the assignment the device already has.
    """

    POLL_WAIT_S = 25

    def __init__(self, transport, device_id, events, *, hall_mode, etag="", poll_wait_s=POLL_WAIT_S,
                 assignment_every_s=300.0, retry_min_s=2.0, retry_max_s=60.0):
        self.transport = transport
        self.device_id = device_id
        self.events = events
        self.hall_mode = hall_mode
        self.etag = etag
        self.poll_wait_s = poll_wait_s
        self.assignment_every_s = assignment_every_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._failures = 0
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.run, name="hall-link", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=None):
        self._stop.set()
        self.transport.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self):
        import time

        next_assignment = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_assignment:
                    self.fetch_assignment()
                    next_assignment = time.monotonic() + self.assignment_every_s
                if self.hall_mode:
                    self.poll_session()
                else:
                    self._stop.wait(max(0.0, next_assignment - time.monotonic()))
                self._failures = 0
            except TransportError as e:
                self._wait_after_failure(str(e))
            except Exception:  # a hostile answer must never end the link
                logger.exception("hall link: unexpected error")
                self._wait_after_failure("unexpected error")

    def _wait_after_failure(self, why):
        delay = min(self.retry_max_s, self.retry_min_s * 2 ** self._failures)
        self._failures = min(self._failures + 1, 20)
        logger.info("hall link: %s; again in %.0f s", why, delay)
        self._stop.wait(delay)

    def fetch_assignment(self):
        """One GET; an assignment that changed goes onto the queue. Returns it or None."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        reply = self.transport.request("GET", f"/api/v1/devices/{self.device_id}/assignment",
                                       headers=headers)
        if reply.status in (304, 404):
            return None
        if reply.status != 200:
            raise TransportError(f"assignment: server answered {reply.status}")
        etag = _header(reply.headers, "ETag")
        try:
            assignment = Assignment.from_json(reply.data, etag)
        except ValueError as e:
            logger.error("%s; keeping the current one", e)
            return None
        self.etag = etag
        self.events.put(AssignmentChanged(assignment))
        return assignment

    def poll_session(self):
        """One long poll; an opened session goes onto the queue. Returns it or None."""
        reply = self.transport.request(
            "GET", f"/api/v1/devices/{self.device_id}/session?wait={self.poll_wait_s}")
        if reply.status != 200:
            raise TransportError(f"session poll: server answered {reply.status}")
        data = reply.data if isinstance(reply.data, dict) else {}
        session = data.get("session")
        if not isinstance(session, dict) or not isinstance(session.get("session_id"), str):
            return None
        fields = {f.name: session.get(f.name) for f in dataclasses.fields(SessionOpened)}
        opened = SessionOpened(**{k: str(v) if v is not None else "" for k, v in fields.items()})
        self.events.put(opened)
        return opened


def _header(headers, name):
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""
