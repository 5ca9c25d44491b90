"""The phone page the device's QR code leads to (rules, 第八条、第十条), and the SMS reminder.

``GET /S/<code>`` (path and code read case-insensitively): the code is the
service session's UUID in base32 (26 characters, see
``device/service_link.py``). The page knows a service only once the hall
holds the device's signed ``rating`` or ``unrated`` event with that
``session_id``; a forged, altered or guessed code, or one whose device has
not delivered yet, finds nothing and the page takes no rating.

- unrated, within 5 working days of the service's China date (China's
  calendar, :mod:`hall.workdays`): five levels, the hall's reason tags
  of the chosen level, a comment, 公开评价 or 不公开 → the hall's own rating
  record (channel ``3`` 二维码, ``assess_number`` 1);
- rated (at the counter or here) → only a 追评 (reasons and comment,
  ``assess_number`` 2), once; never a second rating;
- past the limit → closed: the service stays unrated and the provincial push
  sends its default marker (:mod:`hall.push`);
- the window's own code (``/W/...``, ``/``) → what can and cannot be done there.

The hall's records live in ``phone_records`` beside the events (which stay
the devices' own): a rating here is pushed once (the push reads this table
after the events, so the service's ``unrated`` item goes first) and counted once in the report
(:func:`with_phone_records` puts it in place of the service's ``unrated``
event). Only one rating per service can be stored: a unique index says so.

A citizen's mobile number, when the hall's queue or case system gives one
for a session (:meth:`PhonePage.expect_mobile`), stays at the hall, is used
for one SMS with the same link once the service's event has arrived, and is
blanked once sent.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hall import ledger, push
from hall.contract import Event
from hall.dating import CHINA, china_time, clock_events, exact_time
from hall.levels import LEVELS
from hall.phone_link import code_of, link, session_ids
from hall.phone_pages import (
    MAX_COMMENT,
    render_followup,
    render_message,
    render_rate,
    render_thanks,
    render_unknown,
    render_window,
)
from hall.sms import SmsError, SmsGateway, masked, normalise_mobile
from hall.workdays import WorkCalendar, load_calendar

logger = logging.getLogger(__name__)

#: A citizen may rate (and add a 追评) within this many working days of the service (第八条).
RATE_WITHIN_WORKING_DAYS = push.RATE_WITHIN_WORKING_DAYS
#: The 二维码 channel (``pf``) of a rating made on this page.
QR_CHANNEL = "3"
#: A number whose service never arrived (a device offline for good, a session never served) is forgotten after this.
FORGET_MOBILE_AFTER_S = 14 * 86400
#: The largest form accepted, in bytes.
MAX_FORM = 16 << 10
#: 1 = 非常满意 … 5 = 非常不满意 on the exchange interface's ``satisfaction`` (5 = 非常满意).
SATISFACTION = {level: 5 - i for i, level in enumerate(LEVELS)}

#: Every phone page's headers: never cached (a page's state changes), no script, no other origin, and the link
#: (which names a service) never sent on as a referrer.
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS phone_records (
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL,
    kind TEXT NOT NULL, service_event_id TEXT NOT NULL, json TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS phone_records_one ON phone_records (session_id, kind);
CREATE TABLE IF NOT EXISTS phone_sms (
    session_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, mobile TEXT NOT NULL, given_at TEXT NOT NULL,
    sent_at TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_session ON events (json_extract(json, '$.session_id'));
"""


def create_tables(db: sqlite3.Connection) -> None:
    """The phone page's tables and an index of the events by session (the events table must exist)."""
    db.executescript(SCHEMA)


@dataclass(frozen=True)
class Service:
    """What the hall knows of the service a code names."""

    #: The device's ``rating`` or ``unrated`` event.
    event: Event
    #: When it happened, in China time (None: its boot is not dated yet).
    when: datetime.datetime | None
    #: The last day a rating or 追评 is taken (None while undated).
    last_day: datetime.date | None
    #: The rating of the service: the device's, or the one made here (None: unrated).
    rating: Event | None
    #: Whether a 追评 was already added.
    followed_up: bool

    def state(self, today: datetime.date) -> str:
        """``undated``, ``closed``, ``done`` (rated and 追评'd), ``followup`` or ``rate``."""
        if self.last_day is None:
            return "undated"
        if today > self.last_day:
            return "closed"
        if self.rating is not None:
            return "done" if self.followed_up else "followup"
        return "rate"


class FormError(ValueError):
    """A submitted form the page cannot take (the message is shown to the citizen)."""


class PhonePage:
    """The phone pages and SMS reminders of one hall, on the server's SQLite file.

    Args:
        db_path: the server's database file (the page keeps its own connection).
        public_url: the hall's public base URL (a callable: the server's URL is known once it is bound).
        clock: the hall's clock (Unix seconds): the 5-working-day limit and the records' times.
        calendar: China's working days (the shipped calendar by default).
        reasons: device id -> the hall's reason tags ``[{"level", "code", "text"}]`` for it.
        sms: the gateway SMS reminders go through (None: no reminders, and no numbers are kept).
        on_stored: called after a rating or 追评 is stored (e.g. to wake the provincial push).
    """

    def __init__(self, db_path: str, *, public_url: Callable[[], str], clock: Callable[[], float] = time.time,
                 calendar: WorkCalendar | None = None,
                 reasons: Callable[[str], Sequence[Mapping[str, Any]]] = lambda device_id: (),
                 sms: SmsGateway | None = None, on_stored: Callable[[], None] | None = None) -> None:
        self.db_path = db_path
        self.public_url = public_url
        self.clock = clock
        self.calendar = calendar or load_calendar()
        self.reasons = reasons
        self.sms = sms
        self.on_stored = on_stored
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        ledger.create_tables(self._db)
        push.create_tables(self._db)
        create_tables(self._db)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def today(self) -> datetime.date:
        """The hall's today in China."""
        return datetime.datetime.fromtimestamp(self.clock(), CHINA).date()

    # -- finding the service ----------------------------------------------------------------

    def service(self, code: str) -> Service | None:
        """The service a code names, or None when the hall holds no event of it."""
        ids = session_ids(code)
        if ids is None:
            return None
        with self._lock:
            return self._service(ids)

    def _service(self, ids: tuple[str, str]) -> Service | None:
        db = self._db
        rows = db.execute("SELECT json FROM events WHERE json_extract(json, '$.session_id') IN (?, ?) "
                          "AND type IN ('rating', 'unrated') ORDER BY rowid", ids).fetchall()
        if not rows:
            return None
        found = [json.loads(body) for (body,) in rows]
        event = next((e for e in found if e.get("type") == "rating"), found[0])
        clock_rows = db.execute("SELECT json FROM events WHERE type = 'clock' AND device_id = ?",
                                (str(event.get("device_id")),)).fetchall()
        clocks = clock_events(json.loads(body) for (body,) in clock_rows)
        moment = exact_time(event, clocks.get((event.get("device_id"), event.get("boot_id"))))
        when = china_time(moment) if moment is not None else None
        last_day = self.calendar.add_working_days(when.date(), RATE_WITHIN_WORKING_DAYS) if when else None
        records = {kind: json.loads(body) for kind, body in db.execute(
            "SELECT kind, json FROM phone_records WHERE session_id IN (?, ?)", ids)}
        rating = event if event.get("type") == "rating" else records.get("rating")
        return Service(event, when, last_day, rating, "followup" in records)

    # -- storing -----------------------------------------------------------------------------

    def _store(self, service: Service, record: dict[str, Any], kind: str) -> bool:
        """Store a record (the provincial push makes its item after the service's own); False when one is there."""
        session_id = str(service.event["session_id"])
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO phone_records (id, session_id, kind, service_event_id, json, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (record["id"], session_id, kind, str(service.event["id"]),
                            json.dumps(record, ensure_ascii=False), record["occurred_at"]))
                db.execute("COMMIT")
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                return False
            except BaseException:
                db.execute("ROLLBACK")
                raise
        logger.info("phone page: %s stored for session %s", kind, session_id)
        if self.on_stored is not None:
            self.on_stored()
        return True

    def _utc_now(self) -> str:
        return datetime.datetime.fromtimestamp(self.clock(), datetime.UTC).isoformat(timespec="seconds")

    def _china_now(self) -> str:
        return datetime.datetime.fromtimestamp(self.clock(), CHINA).isoformat(timespec="seconds")

    def _base(self, service: Service) -> dict[str, Any]:
        """The service's fields every record of it carries (who served, the case, the window), and its flag.

        A service whose event the hall flagged (a chain break, a taken seq: interface 7) passes the flag on:
        its rating here is listed apart and pushed withheld, as the event itself would be.
        """
        source = service.event
        keep = ("device_id", "window_no", "staff_no", "staff_name", "staff_dept", "session_id", "ticket",
                "project_no", "task_code", "task_name")
        base = {key: source[key] for key in keep if key in source}
        with self._lock:
            row = self._db.execute("SELECT problem FROM flags WHERE id = ? ORDER BY rowid LIMIT 1",
                                   (str(source["id"]),)).fetchone()
        flag = source.get("flag") or (row[0] if row else None)
        if flag:
            base["flag"] = str(flag).split(",")[0]
        return base

    def rate(self, service: Service, level: str, reasons: Sequence[str], comment: str, public: bool) -> Event:
        """Store the service's rating made on the phone.

        Raises:
            FormError: the service cannot take a rating now, or the form is wrong.
        """
        if service.state(self.today()) != "rate":
            raise FormError("本次服务不能再评价")
        if level not in LEVELS:
            raise FormError("请选择满意程度")
        reasons = list(dict.fromkeys(reasons))
        allowed = {str(tag["code"]) for tag in self._tags(service) if tag.get("level") == level}
        unknown = [code for code in reasons if code not in allowed]
        if unknown:
            raise FormError("所选原因不属于该等级")
        record = {**self._base(service), "id": str(uuid.uuid4()), "type": "rating", "level": level,
                  "satisfaction": SATISFACTION[level], "channel": QR_CHANNEL, "assess_number": 1,
                  "suspect": False, "public": public, "comment": comment, "reason_codes": list(reasons),
                  "occurred_at": self._china_now(), "clock_synced": True, "source": "phone"}
        if not self._store(service, record, "rating"):
            raise FormError("本次服务已有评价，不能重复评价")
        return record

    def follow_up(self, service: Service, reasons: Sequence[str], comment: str, public: bool) -> Event:
        """Store the service's 追评 (``assess_number`` 2).

        Raises:
            FormError: the service cannot take a 追评 now, or the form is wrong.
        """
        if service.state(self.today()) != "followup" or service.rating is None:
            raise FormError("本次服务不能追加评价")
        reasons = list(dict.fromkeys(reasons))
        allowed = {str(tag["code"]) for tag in self._tags(service)}
        if any(code not in allowed for code in reasons):
            raise FormError("所选原因不在列表中")
        if not reasons and not comment:
            raise FormError("请选择原因或填写意见")
        rating = service.rating
        record = {**self._base(service), "id": str(uuid.uuid4()), "type": "detail",
                  "rating_id": str(rating["id"]), "assess_number": 2, "satisfaction": rating.get("satisfaction"),
                  "channel": QR_CHANNEL, "public": public, "comment": comment, "reason_codes": list(reasons),
                  "occurred_at": self._china_now(), "clock_synced": True, "source": "phone"}
        if not self._store(service, record, "followup"):
            raise FormError("本次服务已追加过评价")
        return record

    def _tags(self, service: Service) -> list[Mapping[str, Any]]:
        tags = self.reasons(str(service.event.get("device_id") or ""))
        return [tag for tag in tags if isinstance(tag, Mapping) and tag.get("code") and tag.get("level") in LEVELS]

    def with_records(self, events: Sequence[Event]) -> list[Event]:
        """See :func:`with_phone_records`."""
        with self._lock:
            return with_phone_records(self._db, events)

    # -- SMS ---------------------------------------------------------------------------------

    def expect_mobile(self, device_id: str, session_id: str, mobile: str) -> bool:
        """Keep a citizen's number for the session's reminder (from the queue or case system).

        Returns:
            Whether it is kept (a gateway is set, the number is a mobile number, the session a UUID).
        """
        number = normalise_mobile(mobile)
        if self.sms is None or number is None or code_of(session_id) is None:
            return False
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO phone_sms (session_id, device_id, mobile, given_at) "
                             "VALUES (?, ?, ?, ?)", (str(uuid.UUID(session_id)), device_id, number, self._utc_now()))
        return True

    def arrived(self, device_id: str | None = None) -> int:
        """Send the reminders due: one per service whose event the hall now holds and whose number it knows.

        Args:
            device_id: only that device's services (the one whose batch just arrived: no other's can
                have become due); None: every device's.

        Returns:
            How many messages were sent.
        """
        if self.sms is None:
            return 0
        forget_before = datetime.datetime.fromtimestamp(self.clock() - FORGET_MOBILE_AFTER_S, datetime.UTC)
        with self._lock:
            # Called for every batch a device delivers: a read only, unless some number waits.
            mine, args = ("AND device_id = ?", (device_id,)) if device_id is not None else ("", ())
            if self._db.execute("SELECT 1 FROM phone_sms WHERE sent_at IS NULL AND mobile != '' " + mine + " LIMIT 1",
                                args).fetchone() is None:
                return 0
            # Numbers are kept for their reminder only: one whose service never arrived is not kept either.
            self._db.execute("UPDATE phone_sms SET mobile = '' WHERE sent_at IS NULL AND mobile != '' "
                             "AND given_at < ?", (forget_before.isoformat(timespec="seconds"),))
            due = self._db.execute("SELECT session_id, mobile FROM phone_sms WHERE sent_at IS NULL "
                                   "AND mobile != '' " + mine, args).fetchall()
        sent = 0
        for session_id, mobile in due:
            code = code_of(session_id)
            service = self.service(code) if code else None
            if service is None or service.last_day is None:
                continue  # the device has not delivered it yet (or it cannot be dated yet)
            text = self.reminder_text(service)
            try:
                self.sms.send(mobile, text)
            except SmsError as exc:
                logger.warning("SMS to %s for session %s not sent: %s", masked(mobile), session_id, exc)
                with self._lock:
                    self._db.execute("UPDATE phone_sms SET attempts = attempts + 1 WHERE session_id = ?",
                                     (session_id,))
                continue
            with self._lock:
                # Sent once: the number is not kept past its use.
                self._db.execute("UPDATE phone_sms SET sent_at = ?, mobile = '', attempts = attempts + 1 "
                                 "WHERE session_id = ?", (self._utc_now(), session_id))
            logger.info("SMS reminder for session %s sent to %s", session_id, masked(mobile))
            sent += 1
        return sent

    def reminder_text(self, service: Service) -> str:
        """The SMS: the link, what it is for and until when."""
        url = link(self.public_url(), str(service.event["session_id"]))
        window = service.event.get("window_no") or ""
        last = f"{service.last_day:%m月%d日}" if service.last_day else ""
        if service.rating is None:
            return (f"【政务服务好差评】您在{window}号窗口办理的业务已完成，请在{last}前对本次服务进行评价"
                    f"（可选择不公开）：{url}")
        return f"【政务服务好差评】感谢您对{window}号窗口服务的评价，{last}前可在此追加评价：{url}"

    # -- HTTP --------------------------------------------------------------------------------

    def serve(self, method: str, path: str, body: bytes, content_type: str = "") -> tuple[int, str]:
        """``(status, html)`` for a phone page request."""
        lower = path.lower()
        if not lower.startswith("/s/"):
            return (200, render_window()) if method == "GET" else (405, render_message("不支持的操作", ""))
        code = path[3:].strip("/")
        service = self.service(code)
        if service is None:
            return 404, render_unknown()
        if method == "GET":
            return 200, self._render(service)
        if method != "POST":
            return 405, render_message("不支持的操作", "")
        if "application/x-www-form-urlencoded" not in content_type.lower() or len(body) > MAX_FORM:
            return 400, render_message("提交的内容无法识别", "请返回重新填写。")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            return self._submit(service, form)
        except FormError as exc:
            fresh = self.service(code) or service
            return 409, self._render(fresh, error=str(exc))

    def _submit(self, service: Service, form: Mapping[str, list[str]]) -> tuple[int, str]:
        def one(name: str) -> str:
            return (form.get(name) or [""])[0]

        comment = clean_comment(one("comment"))
        public = one("public") != "0"
        kind = one("kind")
        if kind == "rating":
            level = one("level")
            record = self.rate(service, level, form.get(f"reason_{level}", []), comment, public)
        elif kind == "followup":
            record = self.follow_up(service, form.get("reason", []), comment, public)
        else:
            raise FormError("提交的内容无法识别")
        return 200, render_thanks(record, self.service(code_of(str(service.event["session_id"])) or ""))

    def _render(self, service: Service, error: str = "") -> str:
        state = service.state(self.today())
        if state == "rate":
            return render_rate(service, self._tags(service), error)
        if state == "followup":
            return render_followup(service, self._tags(service), error)
        if state == "done":
            return render_message("已评价并追评", "本次服务已评价，并已追加评价。感谢您的参与！", service, error)
        if state == "closed":
            text = (f"本次服务的评价期限（服务后 {RATE_WITHIN_WORKING_DAYS} 个工作日，截至 "
                    f"{service.last_day:%Y年%m月%d日}）已过，不能再评价。")
            if service.rating is None:
                text += "本次服务未作评价，由全省系统按规定处理。"
            return render_message("评价期限已过", text, service, error)
        return render_message("暂时无法评价", "本次服务的时间尚待设备确认，请稍后再打开本链接。", service, error)


def clean_comment(text: str) -> str:
    """A comment as kept: control characters become spaces, at most :data:`MAX_COMMENT` characters."""
    text = "".join(" " if (ord(ch) < 32 and ch not in "\n") or 0x7F <= ord(ch) < 0xA0 else ch for ch in text)
    return text.strip()[:MAX_COMMENT]


def with_phone_records(db: sqlite3.Connection, events: Sequence[Event]) -> list[Event]:
    """``events`` with the ratings and 追评 made on the phone, for the report, the export and the desk.

    A rating made on the phone takes the place of its service's ``unrated``
    event: the service is counted once, as rated, dated when it was rated
    (the rating's China date starts its 10 working days for a 差评, and the
    month is the one its push item's ``assessTime`` names); its reasons and a
    追评's reasons and words come as ``detail`` events referring to the rating.
    """
    try:
        rows = db.execute("SELECT kind, service_event_id, json FROM phone_records ORDER BY n").fetchall()
    except sqlite3.OperationalError:  # a database without the phone page's tables
        return list(events)
    if not rows:
        return list(events)
    replaced: dict[str, Event] = {}
    extra: list[Event] = []
    by_id = {str(e.get("id")): e for e in events}
    for kind, service_event_id, body in rows:
        record = json.loads(body)
        service = by_id.get(str(service_event_id))
        if service is None:
            continue
        if kind == "rating" and service.get("type") == "unrated":
            replaced[str(service_event_id)] = {**record, "service_event_id": str(service_event_id)}
        if record.get("reason_codes") or record.get("comment"):
            detail = {**{k: v for k, v in record.items() if k not in ("level", "type", "id")},
                      "type": "detail", "id": f"{record['id']}:detail",
                      "rating_id": record.get("rating_id") or record["id"]}
            extra.append(detail)
    return [replaced.get(str(e.get("id")), e) for e in events] + extra
