"""The provincial push (rules, 第六条: 实时向全省系统推送): every rating, 追评 and unrated service, as it arrives.

The hall keeps its own durable outbox in its SQLite file, beside the events:

- :meth:`ProvincePush.collect` turns newly stored events into push items in
  one transaction with a cursor over the events table, so an item is made
  exactly once whatever crashes, and an event the hall cannot date yet (an
  unsynced boot without its ``clock`` event) waits until it can;
- :meth:`ProvincePush.send_due` posts the items in order to the provincial
  endpoint, each with ``Idempotency-Key: <itemId>``; a refused or failed post
  is retried with exponential backoff (nothing is dropped while the platform
  is down), and an item is marked sent only on a 2xx answer;
- a service left unrated past the limit (5 working days of its China date,
  第八条, China's calendar) gets a second item with the default marker
  ``isDefault: "1"``: the platform applies its default rating; the hall
  never makes one up, and an unrated service is never sent as a rating.

Every item has every field, with one type per field (strings, except the
integer ``assessNumber``): see :data:`FIELDS` and docs/province-push.md.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from hall import ledger
from hall.contract import Event
from hall.dating import CHINA, china_time, clock_events, exact_time
from hall.workdays import WorkCalendar, load_calendar

logger = logging.getLogger(__name__)

#: A citizen may rate within this many working days of the service (第八条).
RATE_WITHIN_WORKING_DAYS = 5
#: How often the push looks for unrated services past the limit (unless woken).
SWEEP_EVERY_S = 60.0
#: ``dataSource`` of every item: a window evaluator (评价器; Anhui marks it ``PJQ``).
DATA_SOURCE = "PJQ"
#: The channel of a window whose hall set none and whose device sent no rating yet (政务大厅其他终端).
DEFAULT_CHANNEL = "5"
#: Item types: a rating, a 追评 (a ``detail`` with ``assess_number`` 2), an unrated service, the default marker
#: after the limit, and an update of a pushed rating (the reasons chosen at the counter right after it, a
#: ``detail`` without ``assess_number``; or its overturning on appeal).
ITEM_TYPES = ("rating", "followup", "unrated", "default", "update")
#: Every field of an item, in order, and its type.
FIELDS: dict[str, type] = {
    "itemId": str, "itemType": str, "projectNo": str, "taskCode": str, "taskName": str, "deptCode": str,
    "areaCode": str, "proManager": str, "pf": str, "satisfaction": str, "evalDetail": str,
    "writingEvaluation": str, "assessTime": str, "assessNumber": int, "dataSource": str, "isPublic": str,
    "isDefault": str, "withheld": str, "ratingId": str, "deviceId": str, "windowNo": str,
}
_TIME = "%Y-%m-%d %H:%M:%S"

SCHEMA = """
CREATE TABLE IF NOT EXISTS push_outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL UNIQUE, item_type TEXT NOT NULL,
    body TEXT NOT NULL, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0, sent_at TEXT, last_error TEXT);
CREATE INDEX IF NOT EXISTS push_outbox_pending ON push_outbox (sent_at, n);
CREATE TABLE IF NOT EXISTS push_cursor (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS push_waiting (event_id TEXT PRIMARY KEY, event_rowid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS push_matters (
    hall TEXT NOT NULL, window_no TEXT NOT NULL, task_code TEXT NOT NULL, task_name TEXT NOT NULL,
    dept_code TEXT NOT NULL DEFAULT '', channel TEXT NOT NULL DEFAULT '', PRIMARY KEY (hall, window_no));
"""


def create_tables(db: sqlite3.Connection) -> None:
    """Create the push tables (idempotent)."""
    db.executescript(SCHEMA)


def set_matter(db: sqlite3.Connection, hall: str, window_no: str, task_code: str, task_name: str,
               dept_code: str = "", channel: str = "") -> None:
    """The window's default matter (事项), department code and channel, for services that name none."""
    create_tables(db)
    db.execute("INSERT OR REPLACE INTO push_matters VALUES (?, ?, ?, ?, ?, ?)",
               (hall, window_no, task_code, task_name, dept_code, channel))


def queue_status(db: sqlite3.Connection) -> dict[str, Any]:
    """``pending``, ``sent``, ``oldest_pending`` (created_at) and the ``last_error`` of the queue."""
    create_tables(db)
    pending, oldest = db.execute("SELECT COUNT(*), MIN(created_at) FROM push_outbox WHERE sent_at IS NULL").fetchone()
    sent = db.execute("SELECT COUNT(*) FROM push_outbox WHERE sent_at IS NOT NULL").fetchone()[0]
    error = db.execute("SELECT last_error FROM push_outbox WHERE sent_at IS NULL AND last_error IS NOT NULL "
                       "ORDER BY n LIMIT 1").fetchone()
    return {"pending": pending, "sent": sent, "oldest_pending": oldest, "last_error": error[0] if error else None}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class ProvincePush:
    """The hall's durable outbox to the provincial platform, and the thread that drains it.

    Args:
        db_path: the hall server's SQLite file (a file: the push keeps its own connection).
        url: the provincial endpoint items are POSTed to.
        clock: the hall's clock (Unix seconds): the 5-working-day limit and the items' creation times.
        timer: wall seconds for the backoff (real time even when a test moves the hall's clock).
        calendar: China's working days (the shipped calendar by default).
        retry_base_s: the first retry waits this long; each further one twice as long ...
        retry_max_s: ... up to this.
        timeout_s: a POST's deadline.
        poll_s: how often the thread looks for new events without being woken.
    """

    def __init__(self, db_path: str, url: str, *, clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.time, calendar: WorkCalendar | None = None,
                 retry_base_s: float = 0.5, retry_max_s: float = 60.0,
                 timeout_s: float = 5.0, poll_s: float = 1.0) -> None:
        self.url = url
        self._clock = clock
        self._timer = timer
        self._calendar = calendar or load_calendar()
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self.timeout_s, self.poll_s = timeout_s, poll_s
        # One connection, used under ``_lock`` by the push thread and by callers (status, tests).
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        ledger.create_tables(self._db)
        create_tables(self._db)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: Timer reading of the last look for unrated services past the limit (a day changes rarely).
        self._last_sweep: float | None = None
        self._thread: threading.Thread | None = None

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Drain in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="province-push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (items stay in the outbox)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=self.timeout_s + 5)

    def close(self) -> None:
        """Stop, then close the connection."""
        self.stop()
        with self._lock:
            self._db.close()

    def wake(self) -> None:
        """New events are stored, or the hall's clock moved: collect, look for defaults and send now."""
        self._last_sweep = None
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.poll_s
            try:
                self.collect()
                wait = min(wait, self.send_due())
            except Exception:  # one bad round must not end the push: log it, wait, go on
                logger.exception("province push: round failed")
                wait = max(wait, 1.0)
            self._wake.wait(max(0.01, wait))
            self._wake.clear()

    # -- making items ----------------------------------------------------------------------------

    def collect(self) -> int:
        """Turn newly stored events into items (and unrated services past the limit into defaults).

        Returns:
            How many items were added.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                added = self._collect(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if added:
            logger.info("province push: %d new items", added)
        return added

    def _collect(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM push_cursor WHERE name = 'events'").fetchone()
        cursor = row[0] if row else 0
        fresh = db.execute("SELECT rowid, json FROM events WHERE rowid > ? ORDER BY rowid", (cursor,)).fetchall()
        waiting = db.execute("SELECT e.rowid, e.json FROM push_waiting w JOIN events e ON e.id = w.event_id "
                             "ORDER BY e.rowid").fetchall()
        candidates = [(rowid, json.loads(body)) for rowid, body in [*waiting, *fresh]]
        if fresh:
            db.execute("INSERT OR REPLACE INTO push_cursor VALUES ('events', ?)", (fresh[-1][0],))
        added = 0
        if candidates:
            context = _Context(db)
            for rowid, event in candidates:
                if event.get("type") not in ("rating", "detail", "unrated"):
                    continue
                item = context.item(event)
                if item is None:  # not datable yet: try again when its boot's clock event arrives
                    db.execute("INSERT OR IGNORE INTO push_waiting VALUES (?, ?)", (str(event["id"]), rowid))
                    continue
                db.execute("DELETE FROM push_waiting WHERE event_id = ?", (str(event["id"]),))
                added += self._enqueue(db, item)
        # Ratings made on the phone page before the defaults: one made on a service's last day is never defaulted.
        added += self._phone_records(db)
        if self._last_sweep is None or self._timer() - self._last_sweep >= SWEEP_EVERY_S:
            self._last_sweep = self._timer()
            added += self._defaults(db)
        added += self._overturned(db)
        return added

    def _phone_records(self, db: sqlite3.Connection) -> int:
        """An item for each rating and 追评 made on the phone page (hall/phone.py), after its service's events."""
        row = db.execute("SELECT value FROM push_cursor WHERE name = 'phone'").fetchone()
        try:
            rows = db.execute("SELECT n, json FROM phone_records WHERE n > ? ORDER BY n",
                              (row[0] if row else 0,)).fetchall()
        except sqlite3.OperationalError:  # no phone page on this database
            return 0
        if not rows:
            return 0
        db.execute("INSERT OR REPLACE INTO push_cursor VALUES ('phone', ?)", (rows[-1][0],))
        context = _Context(db)
        added = 0
        for _, body in rows:
            record = json.loads(body)
            if record.get("flag"):  # its service's event is flagged: withheld with it
                context.flags[str(record["id"])] = str(record["flag"])
            item = context.item(record)  # the hall's own time: always datable
            if item is not None:
                added += self._enqueue(db, item)
        return added

    def _enqueue(self, db: sqlite3.Connection, item: Mapping[str, Any]) -> int:
        cursor = db.execute(
            "INSERT OR IGNORE INTO push_outbox (item_id, item_type, body, created_at) VALUES (?, ?, ?, ?)",
            (item["itemId"], item["itemType"], json.dumps(item, ensure_ascii=False), self._now_text()))
        return cursor.rowcount

    def _now_text(self) -> str:
        return datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).isoformat(timespec="seconds")

    def _defaults(self, db: sqlite3.Connection) -> int:
        """A default marker for each unrated service whose limit has passed and that nobody rated since."""
        today = datetime.datetime.fromtimestamp(self._clock(), CHINA).date()
        rows = db.execute(
            "SELECT o.body FROM push_outbox o WHERE o.item_type = 'unrated' AND NOT EXISTS "
            "(SELECT 1 FROM push_outbox d WHERE d.item_id = o.item_id || ':default')").fetchall()
        added = 0
        for (body,) in rows:
            item = json.loads(body)
            served = datetime.datetime.strptime(item["assessTime"], _TIME).date()
            limit = self._calendar.add_working_days(served, RATE_WITHIN_WORKING_DAYS)
            if today <= limit:
                continue
            rated = db.execute("SELECT 1 FROM push_outbox WHERE item_type = 'rating' AND json_extract(body, "
                               "'$.projectNo') = ? AND json_extract(body, '$.deviceId') = ?",
                               (item["projectNo"], item["deviceId"])).fetchone()
            if rated:  # rated later (on the phone): never a default
                continue
            default = {**item, "itemId": f"{item['itemId']}:default", "itemType": "default", "isDefault": "1",
                       "assessTime": f"{limit.isoformat()} 23:59:59"}
            added += self._enqueue(db, default)
        return added

    def _overturned(self, db: sqlite3.Connection) -> int:
        """An update with the marking for each pushed rating overturned on appeal since."""
        try:
            rows = db.execute(
                "SELECT o.body, a.n FROM appeals a JOIN push_outbox o ON o.item_id = a.rating_id "
                "WHERE a.decision = 'overturned' AND NOT EXISTS "
                "(SELECT 1 FROM push_outbox u WHERE u.item_id = a.rating_id || ':overturned')").fetchall()
        except sqlite3.OperationalError:  # no appeals table on this database yet
            return 0
        added = 0
        for body, n in rows:
            item = json.loads(body)
            added += self._enqueue(db, {**item, "itemId": f"{item['itemId']}:overturned", "itemType": "update",
                                        "withheld": f"overturned:{n}"})
        return added

    # -- sending ---------------------------------------------------------------------------------

    def send_due(self) -> float:
        """POST every due item in order; stop at the first failure (backoff).

        Returns:
            Seconds until the next item is due (the thread waits that long at most).
        """
        while not self._stop.is_set() or self._thread is None:
            with self._lock:
                row = self._db.execute("SELECT n, item_id, body, attempts, next_at FROM push_outbox "
                                       "WHERE sent_at IS NULL ORDER BY n LIMIT 1").fetchone()
            if row is None:
                return self.poll_s
            n, item_id, body, attempts, next_at = row
            now = self._timer()
            if next_at > now:
                return next_at - now
            error = self._post(item_id, body.encode("utf-8"))
            with self._lock:
                if error is None:
                    self._db.execute("UPDATE push_outbox SET sent_at = ?, attempts = ?, last_error = NULL "
                                     "WHERE n = ?", (self._now_text(), attempts + 1, n))
                    continue
                delay = min(self.retry_max_s, self.retry_base_s * 2 ** attempts)
                self._db.execute("UPDATE push_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE n = ?",
                                 (attempts + 1, self._timer() + delay, error, n))
            logger.warning("province push: item %s not sent (%s); again in %.1f s", item_id, error, delay)
            return delay
        return self.poll_s

    def _post(self, item_id: str, body: bytes) -> str | None:
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Idempotency-Key": item_id})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read()
                return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return str(exc) or type(exc).__name__

    # -- for tests and the desk -------------------------------------------------------------------

    def items(self) -> list[dict[str, Any]]:
        """Every item made so far, in order, with ``sent`` (bool)."""
        with self._lock:
            rows = self._db.execute("SELECT body, sent_at FROM push_outbox ORDER BY n").fetchall()
        return [{**json.loads(body), "sent": sent is not None} for body, sent in rows]

    def status(self) -> dict[str, Any]:
        """See :func:`queue_status`."""
        with self._lock:
            return queue_status(self._db)


class _Context:
    """What making items needs from the hall's records, read once per round."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        records = ledger.read_records(db)
        self.registry = records.registry
        self.clocks = clock_events(json.loads(body) for (body,) in db.execute(
            "SELECT json FROM events WHERE type = 'clock'"))
        self.matters = {(hall, window): (code, name, dept, channel) for hall, window, code, name, dept, channel
                        in db.execute("SELECT * FROM push_matters")}
        self.flags = ledger.read_flags(db)
        self.channels: dict[str, str] = {}

    def _rating(self, rating_id: str) -> Event | None:
        row = self.db.execute("SELECT json FROM events WHERE id = ?", (rating_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def _channel(self, event: Event, matter: tuple[str, str, str, str] | None) -> str:
        if event.get("channel"):
            return str(event["channel"])
        if matter and matter[3]:
            return matter[3]
        device = str(event.get("device_id") or "")
        if device not in self.channels:
            row = self.db.execute("SELECT json_extract(json, '$.channel') FROM events WHERE device_id = ? AND "
                                  "type = 'rating' ORDER BY rowid DESC LIMIT 1", (device,)).fetchone()
            self.channels[device] = str(row[0]) if row and row[0] else DEFAULT_CHANNEL
        return self.channels[device]

    def item(self, event: Event) -> dict[str, Any] | None:
        """The item for ``event``, or None while it cannot be dated."""
        when = exact_time(event, self.clocks.get((event.get("device_id"), event.get("boot_id"))))
        if when is None:
            return None
        kind = event["type"]
        event_id = str(event["id"])
        source = event  # the service's fields: for a 追评 or the reasons of a rating, those of its rating
        item_type = str(kind)
        if kind == "detail":
            source = self._rating(str(event.get("rating_id"))) or event
            # assess_number 2: a 追评 (added later, on the phone page); otherwise the reasons the citizen chose
            # right after rating at the counter: an update of the rating's evalDetail.
            item_type = "followup" if event.get("assess_number") == 2 else "update"
        hall = self.registry.hall_of(str(event.get("device_id") or ""))
        window = str(source.get("window_no") or "")
        matter = self.matters.get((hall, window)) or self.matters.get((hall, "*"))
        level_code = source.get("satisfaction") if kind in ("rating", "detail") else None
        withheld = ""
        flag = self.flags.get(event_id)
        if flag:
            withheld = f"flagged:{flag}"
        elif source.get("suspect"):
            withheld = "suspect"
        codes = event.get("reason_codes")
        reasons: list[Any] = codes if isinstance(codes, list) else []
        return {
            "itemId": event_id,
            "itemType": item_type,
            "projectNo": _text(source.get("project_no") or source.get("session_id") or source.get("id")),
            "taskCode": _text(source.get("task_code") or (matter[0] if matter else "")),
            "taskName": _text(source.get("task_name") or (matter[1] if matter else "")),
            "deptCode": _text((matter[2] if matter and matter[2] else None) or source.get("staff_dept")),
            "areaCode": self.registry.hall(hall).area_code,
            "proManager": _text(source.get("staff_name")),
            "pf": self._channel(source, matter),
            "satisfaction": _text(level_code) if isinstance(level_code, int) and kind != "unrated" else "",
            "evalDetail": ",".join(str(code) for code in reasons),
            "writingEvaluation": _text(event.get("comment")),
            "assessTime": china_time(when).strftime(_TIME),
            "assessNumber": {"rating": 1, "followup": 2, "update": 1, "unrated": 0}[item_type],
            "dataSource": DATA_SOURCE,
            "isPublic": "0" if event.get("public") is False or source.get("public") is False else "1",
            "isDefault": "0",
            "withheld": withheld,
            "ratingId": _text(event.get("rating_id")) if kind == "detail" else (event_id if kind == "rating" else ""),
            "deviceId": _text(event.get("device_id")),
            "windowNo": window,
        }


def check_item(item: Mapping[str, Any]) -> list[str]:
    """What is wrong with an item's fields (missing, extra, or of another type); empty when right."""
    problems = [f"{name} missing" for name in FIELDS if name not in item]
    problems += [f"{name} is {type(item[name]).__name__}, not {kind.__name__}"
                 for name, kind in FIELDS.items() if name in item and type(item[name]) is not kind]
    problems += [f"{name} is not a field" for name in item if name not in FIELDS]
    return problems


