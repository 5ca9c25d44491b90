"""The stand-in hall server: the device uplink contract v1 on loopback.

A real HTTP(S) server that the simulator, the uploader tests and the
benchmark talk to. It is a *contract checker*, deliberately written without
importing device code: it verifies signatures, validates every event, is
idempotent on event ``id``, detects ``seq`` gaps and hash-chain breaks, serves
assignments and long-poll sessions, injects faults on request and prints the
month's per-window 好差评 report.

Layout: ``Storage`` (SQLite), ``_Handler`` (one HTTP request), ``HallServer``
(lifecycle, state and the public API), then the report, the certificate
helper and the command line.

Run it with ``python -m sim.hall_server --port 8080 --db hall.db
--keys-file keys.toml``.
"""

import argparse
import collections
import datetime
import hashlib
import hmac
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
import time
import tomllib
import uuid

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
#: Added by the uploader at sending time, so outside the hash.
SEND_TIME_FIELDS = frozenset({"corrected_at"})
EVENT_TYPES = ("rating", "detail", "unrated")
#: Level name -> exchange-interface ``satisfaction`` (5 = 非常满意).
SATISFACTION = {
    "very_satisfied": 5,
    "satisfied": 4,
    "basically_satisfied": 3,
    "dissatisfied": 2,
    "very_dissatisfied": 1,
}
LEVEL_TEXT = {
    "very_satisfied": "非常满意",
    "satisfied": "满意",
    "basically_satisfied": "基本满意",
    "dissatisfied": "不满意",
    "very_dissatisfied": "非常不满意",
}
GOOD_LEVELS = ("very_satisfied", "satisfied")
BAD_LEVELS = ("dissatisfied", "very_dissatisfied")
#: A confirmed 差评 is rectified within 10 working days (rules, 第十三条).
RECTIFY_WORKING_DAYS = 10
MAX_WAIT_S = 30
DEFAULT_MAX_BODY = 1 << 20
#: Past this, an oversized body is not drained before the 413, just cut off.
_MAX_DRAIN = 64 << 20
FAULT_KINDS = ("status", "latency", "reset_after_commit", "malformed", "reset")
EVALUATIONS_PATH = "/api/v1/evaluations"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DEVICE_PATH = re.compile(r"/api/v1/devices/([^/]+)/(assignment|session|heartbeat)")


class BadRequest(ValueError):
    """The request cannot be processed; carries the HTTP status to answer."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def canonical_json(obj):
    """Keys sorted, no whitespace, UTF-8 without ASCII escaping."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event):
    """The ``hash`` an event must carry: SHA-256 of its other fields."""
    body = {k: v for k, v in event.items() if k != "hash" and k not in SEND_TIME_FIELDS}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def sign(key, body):
    """Hex HMAC-SHA256 of ``body`` under ``key``, as ``X-Signature`` carries."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _parse_time(value):
    """An ISO 8601 timestamp with offset, or ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _is_int(value):
    # bool is an int subclass; True must not pass for seq 1.
    return isinstance(value, int) and not isinstance(value, bool)


def validate_event(event, device_id):
    """Check one event against the records contract.

    Args:
        event: the event object as received (a dict with a string ``id``).
        device_id: the authenticated device.

    Returns:
        ``None`` if the event is acceptable, else the reason as text.
    """
    if not _is_int(event.get("seq")) or event["seq"] < 1:
        return "seq must be an integer >= 1"
    if event.get("type") not in EVENT_TYPES:
        return f"type must be one of {', '.join(EVENT_TYPES)}"
    if event.get("device_id") != device_id:
        return "device_id does not match X-Device-Id"
    for field in ("hash", "prev_hash"):
        if not isinstance(event.get(field), str) or not _HEX64.fullmatch(event[field]):
            return f"{field} must be 64 lowercase hex digits"
    if _parse_time(event.get("occurred_at")) is None:
        return "occurred_at must be ISO 8601 with a UTC offset"
    if "corrected_at" in event and _parse_time(event["corrected_at"]) is None:
        return "corrected_at must be ISO 8601 with a UTC offset"
    if event["type"] == "rating":
        level = event.get("level")
        if level not in SATISFACTION:
            return f"level must be one of {', '.join(SATISFACTION)}"
        if not _is_int(event.get("satisfaction")) or event["satisfaction"] != SATISFACTION[level]:
            return f"satisfaction must be {SATISFACTION[level]} for {level} (5 = very_satisfied)"
    elif event["type"] == "detail":
        if not isinstance(event.get("rating_id"), str) or not event["rating_id"]:
            return "detail needs rating_id"
        if "reason_codes" in event and not isinstance(event["reason_codes"], list):
            return "reason_codes must be a list"
    return None


def parse_batch(body, device_id):
    """Decode and shape-check a ``POST /api/v1/evaluations`` body.

    Raises:
        BadRequest: 400 for anything that is not the contract's shape, 403
            when the body speaks for another device.
    """
    try:
        batch = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(batch, dict):
        raise BadRequest("body must be a JSON object")
    if not isinstance(batch.get("device_id"), str) or not isinstance(batch.get("sent_at"), str):
        raise BadRequest("body needs device_id and sent_at strings")
    if batch["device_id"] != device_id:
        raise BadRequest("device_id in body does not match X-Device-Id", status=403)
    events = batch.get("events")
    if not isinstance(events, list):
        raise BadRequest("events must be a list")
    for index, event in enumerate(events):
        # Without an id nothing can be acknowledged or rejected by name, so
        # the whole batch is malformed and the device splits it.
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise BadRequest(f"events[{index}] must be an object with a string id")
    return events


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class Storage:
    """The server's own SQLite: one connection, one lock, WAL.

    ``id`` is UNIQUE, so a re-sent event can never be stored twice, whatever
    the threads do; ``(device_id, seq)`` is deliberately *not* unique, so a
    device that reuses a seq is stored and then reported by ``integrity()``.
    """

    def __init__(self, path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS events (
                device_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL, received_at TEXT NOT NULL, json TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS events_device_seq ON events (device_id, seq);
            CREATE TABLE IF NOT EXISTS heartbeats (
                device_id TEXT PRIMARY KEY, received_at TEXT NOT NULL, json TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS resolved (
                rating_id TEXT PRIMARY KEY, resolved_at TEXT NOT NULL, note TEXT NOT NULL);
            """
        )

    def store(self, device_id, events, received_at):
        """Store a batch in one transaction; returns ``(accepted, duplicate)`` ids."""
        accepted, duplicate = [], []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                        (device_id, event["seq"], event["id"], event["type"], received_at,
                         json.dumps(event, ensure_ascii=False)),
                    )
                    (accepted if cursor.rowcount == 1 else duplicate).append(event["id"])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return accepted, duplicate

    def events(self, device_id=None):
        """Stored events, ordered by device, then seq, then arrival."""
        sql = "SELECT json FROM events"
        args = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY device_id, seq, rowid", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def put_heartbeat(self, device_id, body, received_at):
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?)",
                (device_id, received_at, json.dumps(body, ensure_ascii=False)),
            )

    def heartbeats(self):
        with self._lock:
            rows = self._db.execute("SELECT device_id, json FROM heartbeats").fetchall()
        return {device_id: json.loads(body) for device_id, body in rows}

    def resolve(self, rating_id, note, resolved_at):
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO resolved VALUES (?, ?, ?)", (rating_id, resolved_at, note)
            )

    def resolved_ids(self):
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT rating_id FROM resolved")}

    def close(self):
        with self._lock:
            self._db.close()


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can cut keep-alives and long polls."""

    daemon_threads = True

    def __init__(self, address, hall):
        self.hall = hall
        self.connections = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        # A client that hangs up or fails the TLS handshake is not a server
        # fault; the default prints a traceback to stderr.
        logger.debug("connection from %s failed", client_address[0], exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    """One HTTP request: read, authenticate, route, apply faults, answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, so batches are not per-connection
    server_version = "HallStandIn/1"
    #: Idle keep-alive connections close after this; above the 30 s long poll.
    timeout = 65

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, each
        # answer on a keep-alive connection would wait ~40 ms for an ACK.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
        if isinstance(self.connection, ssl.SSLSocket):
            # Done here, not in accept(), so one slow client cannot stall the
            # accept loop.
            self.connection.do_handshake()

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method):
        hall = self.server.hall
        path, _, query = self.path.partition("?")
        self.device_id = self.headers.get("X-Device-Id", "")
        fault = None
        try:
            body = self._read_body(hall.max_body)
            fault = hall._take_fault(method, path)
            if fault and fault.kind == "latency":
                hall._stopping.wait(fault.params.get("seconds", 1.0))
                fault = None
            if fault and fault.kind == "reset":
                return self._reset(method, path)
            if fault and fault.kind == "status":
                status = fault.params.get("status", 503)
                headers = {}
                if fault.params.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault.params["retry_after"])
                payload = fault.params.get("body", {"error": f"injected {status}"})
                return self._answer(method, path, status, payload, headers)
            status, payload, headers = self._route(method, path, query, body)
        except BadRequest as exc:
            status, payload, headers = exc.status, {"error": str(exc)}, {}
        except Exception:
            logger.exception("handler failed for %s %s", method, path)
            status, payload, headers = 500, {"error": "internal server error"}, {}
            fault = None
        if fault and fault.kind == "reset_after_commit":
            return self._reset(method, path)
        if fault and fault.kind == "malformed":
            status, payload = 200, fault.params.get("body", b"<html>502 Bad Gateway</html>")
        self._answer(method, path, status, payload, headers)

    def _read_body(self, max_body):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest("chunked bodies are not accepted; send Content-Length", 411)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise BadRequest("bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise BadRequest("bad Content-Length")
        if length > max_body:
            # Drain what the client is sending, so it reads our 413 instead
            # of a reset; a huge body is cut off instead.
            self.close_connection = True
            if length <= _MAX_DRAIN:
                while length > 0:
                    chunk = self.rfile.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
            raise BadRequest(f"body over {max_body} bytes; send smaller batches", 413)
        return self.rfile.read(length) if length else b""

    def _authenticate(self, body):
        hall = self.server.hall
        key = hall._key_for(self.device_id)
        if not self.device_id or key is None:
            raise BadRequest("unknown device", 401)
        signature = self.headers.get("X-Signature", "").strip().lower()
        if not hmac.compare_digest(signature.encode("ascii", "replace"), sign(key, body).encode()):
            logger.warning("bad signature from device %s", self.device_id)
            raise BadRequest("bad signature", 401)

    def _route(self, method, path, query, body):
        hall = self.server.hall
        if path == EVALUATIONS_PATH:
            if method != "POST":
                raise BadRequest("use POST", 405)
            self._authenticate(body)
            return 200, hall._receive_batch(self.device_id, body), {}
        match = _DEVICE_PATH.fullmatch(path)
        if not match:
            raise BadRequest(f"no such endpoint: {path}", 404)
        device_id, action = match.groups()
        if method != ("POST" if action == "heartbeat" else "GET"):
            raise BadRequest("method not allowed", 405)
        self._authenticate(body)
        if device_id != self.device_id:
            raise BadRequest("a device may only use its own endpoints", 403)
        if action == "assignment":
            return hall._serve_assignment(device_id, self.headers.get("If-None-Match"))
        if action == "session":
            return 200, {"session": hall._wait_session(device_id, _wait_param(query))}, {}
        hall._receive_heartbeat(device_id, body)
        return 200, {"ok": True}, {}

    def _answer(self, method, path, status, payload, headers):
        if status == 304:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        # Logged before answering, so a client that has its answer also
        # finds it in requests_log.
        self.server.hall._log_request(method, path, status, self.device_id)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _reset(self, method, path):
        # SO_LINGER 0 makes close() send an RST: the client sees a reset,
        # as after a cut link or a crashed proxy.
        self.close_connection = True
        self.server.hall._log_request(method, path, 0, self.device_id)
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code="-", size="-"):
        pass  # _log_request logs with the device id instead


def _wait_param(query):
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "wait":
            try:
                wait = float(value)
            except ValueError:
                raise BadRequest("wait must be a number of seconds") from None
            if wait != wait:  # NaN
                raise BadRequest("wait must be a number of seconds")
            return max(0.0, min(wait, MAX_WAIT_S))
    return 0.0


class _Fault:
    def __init__(self, kind, count, path, params):
        self.kind, self.count, self.path, self.params = kind, count, path, params


class HallServer:
    """The stand-in hall server.

    Args:
        db_path: SQLite file for received events (``":memory:"`` works).
        device_keys: device id -> key.
        default_key: key for any device not in ``device_keys``.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (see ``url``).
        assignment: the assignment served to every device without its own.
        tls: ``(certfile, keyfile)`` to serve HTTPS.
        max_body: largest accepted request body in bytes; settable later.

    Use as a context manager, or call ``start()`` and ``stop()``/``close()``.
    """

    def __init__(self, db_path, device_keys=None, default_key=None, host="127.0.0.1", port=0,
                 assignment=None, tls=None, max_body=DEFAULT_MAX_BODY):
        self._storage = Storage(db_path)
        self._keys = dict(device_keys or {})
        self._default_key = default_key
        self._host, self._port = host, port
        self._tls = tls
        self.max_body = max_body
        self._lock = threading.Lock()
        self._assignments = {None: assignment} if assignment is not None else {}
        self._sessions = collections.defaultdict(collections.deque)
        self._session_cond = threading.Condition(self._lock)
        self._faults = []
        self._requests_log = []
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Bind and serve in a daemon thread; may be called again after ``stop()``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), self)
        if self._tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        # Keep the port, so a restart after stop() comes back at the same URL.
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="hall-server", daemon=True,
        )
        self._thread.start()
        logger.info("hall server listening on %s", self.url)
        return self

    def stop(self):
        """Stop serving, cut open connections and wake long polls; data stays."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        with self._session_cond:
            self._session_cond.notify_all()
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            connections = list(httpd.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def close(self):
        """Stop, then close the database."""
        self.stop()
        self._storage.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()

    @property
    def url(self):
        """Base URL, such as ``http://127.0.0.1:41234``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self._port}"

    @property
    def port(self):
        return self._port

    # -- state for tests and the simulator ---------------------------------

    def events(self, device_id=None):
        """Stored events (as received) ordered by device, then seq."""
        return self._storage.events(device_id)

    @property
    def heartbeats(self):
        """Device id -> the last heartbeat body received."""
        return self._storage.heartbeats()

    @property
    def requests_log(self):
        """``(method, path, status)`` per request; status 0 means reset, no answer."""
        with self._lock:
            return list(self._requests_log)

    def set_key(self, device_id, key):
        """Add or replace one device's key."""
        with self._lock:
            self._keys[device_id] = key

    def set_assignment(self, device_id, assignment):
        """Serve ``assignment`` to ``device_id`` (``None``: every device); ``None`` removes."""
        with self._lock:
            if assignment is None:
                self._assignments.pop(device_id, None)
            else:
                self._assignments[device_id] = json.loads(json.dumps(assignment))

    def open_session(self, device_id, ticket=None, project_no=None, task_code=None,
                     task_name=None, qr_url=None):
        """Open a service session, delivered once to the device's next session poll.

        Returns:
            The session as the device receives it, with a new ``session_id``.
        """
        session = {
            "session_id": uuid.uuid4().hex, "ticket": ticket, "project_no": project_no,
            "task_code": task_code, "task_name": task_name, "qr_url": qr_url,
        }
        with self._session_cond:
            self._sessions[device_id].append(session)
            self._session_cond.notify_all()
        return dict(session)

    def resolve(self, rating_id, note=""):
        """Mark a 差评 as rectified, so the report no longer lists it as open."""
        self._storage.resolve(rating_id, note, _now())

    def inject(self, kind, count=1, **params):
        """Inject a fault into the next ``count`` matching requests.

        Faults are used up in the order injected. By default they match
        ``POST /api/v1/evaluations``; ``path=`` targets another endpoint (any
        method, query ignored).

        Kinds and their params:
            ``status``: answer ``status`` (default 503) with ``body`` and an
                optional ``retry_after`` header, storing nothing.
            ``latency``: wait ``seconds`` (default 1.0), then handle normally.
            ``reset_after_commit``: handle (and store), then reset the connection.
            ``malformed``: handle (and store), then answer 200 with ``body``
                (default a non-JSON page; pass a dict for a wrong shape).
            ``reset``: reset the connection without handling.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not _is_int(count) or count < 1:
            raise ValueError("count must be a positive integer")
        path = params.pop("path", None)
        with self._lock:
            self._faults.append(_Fault(kind, count, path, params))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def integrity(self, device_id=None):
        """Check each device's stored events for gaps, reused seqs and chain breaks.

        Returns:
            device id -> list of problems, each ``{"seq", "problem", "detail"}``
            with ``problem`` one of ``gap``, ``duplicate_seq``, ``prev_hash``,
            ``hash``; an empty list when the device's chain is whole.
        """
        by_device = collections.defaultdict(list)
        for event in self.events(device_id):
            by_device[event["device_id"]].append(event)
        return {device: check_chain(events) for device, events in by_device.items()}

    def report_data(self, month, today=None):
        """The month's per-window figures as a dict; see ``build_report``."""
        return build_report(self.events(), month, self._storage.resolved_ids(), today)

    def report(self, month, today=None):
        """The month's per-window 好差评 report as text (``month`` is ``YYYY-MM``)."""
        return format_report(self.report_data(month, today))

    # -- used by the handler -------------------------------------------------

    def _key_for(self, device_id):
        with self._lock:
            return self._keys.get(device_id, self._default_key)

    def _take_fault(self, method, path):
        with self._lock:
            for fault in self._faults:
                if fault.path is None:
                    matches = method == "POST" and path == EVALUATIONS_PATH
                else:
                    matches = path == fault.path
                if matches:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _receive_batch(self, device_id, body):
        events = parse_batch(body, device_id)
        valid, rejected = [], []
        for event in events:
            error = validate_event(event, device_id)
            if error:
                rejected.append({"id": event["id"], "error": error})
            else:
                valid.append(event)
        accepted, duplicate = self._storage.store(device_id, valid, _now())
        if rejected:
            logger.warning("device %s: rejected %d events", device_id, len(rejected))
        return {"accepted": accepted, "duplicate": duplicate, "rejected": rejected}

    def _serve_assignment(self, device_id, if_none_match):
        with self._lock:
            assignment = self._assignments.get(device_id, self._assignments.get(None))
        if assignment is None:
            raise BadRequest(f"no assignment for device {device_id}", 404)
        etag = '"' + hashlib.sha256(canonical_json(assignment).encode()).hexdigest()[:32] + '"'
        if if_none_match:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            if etag in tags or "*" in tags:
                return 304, None, {"ETag": etag}
        return 200, assignment, {"ETag": etag}

    def _wait_session(self, device_id, wait):
        deadline = time.monotonic() + wait
        with self._session_cond:
            while not self._sessions[device_id]:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return None
                self._session_cond.wait(remaining)
            return self._sessions[device_id].popleft()

    def _receive_heartbeat(self, device_id, body):
        try:
            heartbeat = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(heartbeat, dict):
            raise BadRequest("heartbeat must be a JSON object")
        self._storage.put_heartbeat(device_id, heartbeat, _now())

    def _log_request(self, method, path, status, device_id):
        with self._lock:
            self._requests_log.append((method, path, status))
        logger.info("%s %s %s device=%s", method, path, status or "reset", device_id or "-")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def check_chain(events):
    """Problems in one device's events, given in ``seq`` order.

    The first stored event of each seq is the one the chain is checked with;
    later ones with the same seq are reported as ``duplicate_seq``.
    """
    problems, expected, prev = [], 1, None
    for event in events:
        seq = event["seq"]
        if prev is not None and seq == prev["seq"]:
            problems.append({"seq": seq, "problem": "duplicate_seq",
                             "detail": f"seq {seq} used by {prev['id']} and {event['id']}"})
            continue
        if seq > expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            problems.append({"seq": seq, "problem": "gap", "detail": f"missing seq {missing}"})
        elif seq == 1 and event["prev_hash"] != GENESIS_HASH:
            problems.append({"seq": seq, "problem": "prev_hash",
                             "detail": "seq 1 must have prev_hash of 64 zeros"})
        elif prev is not None and event["prev_hash"] != prev["hash"]:
            problems.append({"seq": seq, "problem": "prev_hash",
                             "detail": f"prev_hash does not match the hash of seq {prev['seq']}"})
        if event["hash"] != event_hash(event):
            problems.append({"seq": seq, "problem": "hash",
                             "detail": "hash does not match the event's contents"})
        expected, prev = seq + 1, event
    return problems


# -- the monthly report -------------------------------------------------------

def add_working_days(day, count):
    """The date ``count`` working days (Mon-Fri) after ``day``; holidays are not known."""
    while count > 0:
        day += datetime.timedelta(days=1)
        if day.weekday() < 5:
            count -= 1
    return day


def _event_date(event):
    # corrected_at is the uploader's fix for a clock that was not yet synced.
    when = _parse_time(event.get("corrected_at")) or _parse_time(event.get("occurred_at"))
    return when.date() if when else None


def build_report(events, month, resolved=(), today=None):
    """The per-window figures for ``month`` (``YYYY-MM``).

    Returns:
        ``{"month", "windows": {window_no: {"counts", "ratings", "good",
        "good_rate", "unrated", "suspect", "open_bad": [...]}}}``; each open
        差评 has ``id``, ``date``, ``level``, ``staff_no``, ``staff_name``,
        ``reason_codes``, ``deadline`` and ``overdue``.
    """
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month or ""):
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    today = today or datetime.date.today()
    reasons = collections.defaultdict(list)
    for event in events:
        if event.get("type") == "detail":
            reasons[event.get("rating_id")].extend(event.get("reason_codes") or [])
    windows = {}
    for event in events:
        day = _event_date(event)
        if day is None or day.strftime("%Y-%m") != month or event.get("type") == "detail":
            continue
        window = windows.setdefault(str(event.get("window_no") or "?"), {
            "counts": dict.fromkeys(SATISFACTION, 0), "unrated": 0, "suspect": 0, "open_bad": [],
        })
        if event["type"] == "unrated":
            window["unrated"] += 1
            continue
        level = event["level"]
        window["counts"][level] += 1
        window["suspect"] += bool(event.get("suspect"))
        if level in BAD_LEVELS and event["id"] not in resolved:
            deadline = add_working_days(day, RECTIFY_WORKING_DAYS)
            window["open_bad"].append({
                "id": event["id"], "date": day, "level": level,
                "staff_no": event.get("staff_no"), "staff_name": event.get("staff_name"),
                "reason_codes": reasons.get(event["id"], []),
                "deadline": deadline, "overdue": today > deadline,
            })
    for window in windows.values():
        window["ratings"] = sum(window["counts"].values())
        window["good"] = sum(window["counts"][level] for level in GOOD_LEVELS)
        window["good_rate"] = window["good"] / window["ratings"] if window["ratings"] else None
        window["open_bad"].sort(key=lambda item: (item["date"], item["id"]))
    return {"month": month, "windows": dict(sorted(windows.items()))}


def format_report(data):
    """Render ``build_report`` output as the text a hall manager reads."""
    lines = [f"好差评月报 {data['month']}"]
    if not data["windows"]:
        lines.append("(本月无评价)")
    for window_no, window in data["windows"].items():
        counts = "  ".join(f"{LEVEL_TEXT[level]} {n}" for level, n in window["counts"].items())
        rate = (f"{window['good_rate'] * 100:.1f}% ({window['good']}/{window['ratings']})"
                if window["good_rate"] is not None else "— (0 评价)")
        lines += [f"窗口 {window_no}", f"  {counts}  合计 {window['ratings']}",
                  f"  好评率 {rate}", f"  未评价 {window['unrated']}"]
        if window["suspect"]:
            lines.append(f"  可疑 {window['suspect']}")
        lines.append(f"  未整改差评 {len(window['open_bad'])}")
        for item in window["open_bad"]:
            staff = " ".join(str(x) for x in (item["staff_no"], item["staff_name"]) if x)
            reasons = ",".join(map(str, item["reason_codes"])) or "-"
            lines.append(
                f"    {item['date'].isoformat()} {LEVEL_TEXT[item['level']]} 工号 {staff or '-'}"
                f" 原因 {reasons} 整改期限 {item['deadline'].isoformat()}"
                f"{' 已逾期' if item['overdue'] else ''} id {item['id']}"
            )
    return "\n".join(lines) + "\n"


# -- TLS certificate for tests ------------------------------------------------

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_self_signed_cert(directory):
    """Make a self-signed certificate for ``localhost`` and ``127.0.0.1``.

    Uses the ``openssl`` command if present, else the ``cryptography``
    package. The certificate is its own CA, so clients verify with
    ``verify=cert``.

    Returns:
        ``(certfile, keyfile)`` paths inside ``directory``.

    Raises:
        RuntimeError: neither tool is available, or openssl failed.
    """
    cert = os.path.join(directory, "hall-cert.pem")
    key = os.path.join(directory, "hall-key.pem")
    openssl = shutil.which("openssl")
    if openssl:
        config = os.path.join(directory, "hall-openssl.cnf")
        with open(config, "w", encoding="ascii") as f:
            f.write(_OPENSSL_CONFIG)
        result = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-keyout", key, "-out", cert, "-config", config],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"openssl could not make a certificate: {result.stderr.strip()}")
        os.chmod(key, 0o600)
        return cert, key
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise RuntimeError(
            "making a test certificate needs the openssl command or the cryptography package"
        ) from None
    import ipaddress

    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(private_key, hashes.SHA256())
    )
    with open(key, "wb") as f:
        f.write(private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    os.chmod(key, 0o600)
    with open(cert, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


# -- command line -------------------------------------------------------------

def _load_keys_file(path):
    """``[devices]`` table of id = key, and an optional top-level ``default_key``."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    devices = data.get("devices", {})
    if not isinstance(devices, dict) or not all(
            isinstance(v, str) for v in devices.values()):
        raise ValueError(f"{path}: [devices] must map device ids to key strings")
    default = data.get("default_key")
    if default is not None and not isinstance(default, str):
        raise ValueError(f"{path}: default_key must be a string")
    return devices, default


def main(argv=None):
    """``python -m sim.hall_server``: serve until SIGINT/SIGTERM, or print a report."""
    parser = argparse.ArgumentParser(prog="python -m sim.hall_server", description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="SQLite file for received events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--device-key", help="one key for every device (test use)")
    keys.add_argument("--keys-file", help="TOML: [devices] id = key, optional default_key")
    parser.add_argument("--assignment", help="JSON file served as every device's assignment")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (with --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--report", metavar="YYYY-MM", help="print the month's report and exit")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.report:
        server = HallServer(args.db)
        try:
            sys.stdout.write(server.report(args.report))
        except ValueError as exc:
            parser.error(str(exc))
        finally:
            server.close()
        return 0

    device_keys, default_key = {}, args.device_key
    try:
        if args.keys_file:
            device_keys, default_key = _load_keys_file(args.keys_file)
        assignment = None
        if args.assignment:
            with open(args.assignment, encoding="utf-8") as f:
                assignment = json.load(f)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if not device_keys and default_key is None:
        logger.warning("no device keys given: every request will be refused with 401")

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()  # only a flag: the main loop below does the shutdown

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = HallServer(args.db, device_keys, default_key, host=args.host, port=args.port,
                        assignment=assignment, max_body=args.max_body,
                        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)
    try:
        server.start()
        print(f"hall server listening on {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
    logger.info("hall server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
