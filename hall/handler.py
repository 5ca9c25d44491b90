"""HTTP for the hall: one request read, verified, routed, faulted, signed and answered.

The state lives behind :class:`Hall`, the handler's whole view of the hall
(:class:`~hall.server.HallServer` implements it); a handler only turns
bytes into calls on it and its answers back into bytes.

**Only an answer to a verified request is signed.** The body is read
first (its length, chunking and size checked), then the request's
signature and ``Content-Digest`` against the hall's public URL. An answer
given before that or without it (an unreadable body, 404, 405, a bad or
unknown key, no signature) goes out unsigned, so nobody can copy a device's
signature onto a bogus request and get the hall's signed word on the
device's nonce. A verified request refused as stale, replayed or busy gets
a signed refusal.

**Bounded.** :class:`HallHTTPServer` hands accepted connections to a pool of
at most ``workers`` threads (a listen backlog of ``backlog`` holds the rest);
a request must be read within ``read_timeout_s`` (the device's own
``upload.timeout_s``), an idle keep-alive connection is closed after
``idle_timeout_s``, and every read and write has a deadline.

The injected faults of :mod:`hall.faults` are acted out here, the lying
and the slow ones included.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import queue
import secrets
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from hall import auth
from hall.contract import DEVICE_ID_RULE, DEVICE_PATH, EVALUATIONS_PATH, BadRequest, is_device_id, parse_wait
from hall.faults import Fault
from hall.phone import PAGE_HEADERS, PhonePage
from hall.phone_link import is_page

logger = logging.getLogger(__name__)

#: Past this, an oversized body is not drained before the 413, just cut off.
_MAX_DRAIN = 64 << 20
#: A ``huge`` answer is written this much at a time.
_HUGE_CHUNK = 64 << 10
#: What an impostor serves as the assignment: another staff member gets the credit.
ROGUE_ASSIGNMENT = {"window": {"no": "99", "name": "冒名窗口"}, "staff": {"no": "6666", "name": "冒名者", "dept": ""},
                    "qr_url": "https://rogue.example.org/", "reasons": [], "reasons_version": "rogue"}

#: ``(status, payload, headers)``: payload is JSON-able, or bytes/str sent as they are.
Answer = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Capacity:
    """How much the server holds at once, and how long it waits for a client.

    Sized for a hall: 300 long polls held and 50 devices posting, with room to spare.
    """

    #: Worker threads at most (each handles one connection at a time; a long poll holds one).
    workers: int = 512
    #: The listen backlog: connections the kernel holds while every worker is busy.
    backlog: int = 1024
    #: A request (line, headers and body) must arrive within this; the device's ``upload.timeout_s``.
    read_timeout_s: float = 10.0
    #: A kept-alive connection with no new request is closed after this.
    idle_timeout_s: float = 15.0
    #: Each write of an answer must go through within this.
    write_timeout_s: float = 10.0


class Hall(Protocol):
    """What a handler needs of the hall: its whole interface to it."""

    max_body: int
    capacity: Capacity
    stopping: threading.Event
    #: The phone page (hall/phone.py), None where the hall keeps no database.
    phone: PhonePage | None

    def target_uri(self, path: str, host: str | None) -> str:
        """The ``@target-uri`` a request for ``path`` must have been signed for: the hall's public URL."""
        ...

    def verify(self, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes,
               ) -> auth.Verified:
        """Verify the request (raises :class:`~hall.auth.Refused`) and count it in flight."""
        ...

    def done(self, verified: auth.Verified) -> None:
        """The verified request is answered: no longer in flight."""
        ...

    def sign(self, mode: str, verified: auth.Verified | None, claimed_nonce: str, status: int,
             headers: dict[str, str], data: bytes) -> None:
        """Sign an answer as the hall (``mode`` ``"hall"``, only when verified) or as an impostor would."""
        ...

    def capture(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None: ...

    def take_fault(self, method: str, path: str) -> Fault | None: ...

    def record(self, method: str, path: str, status: int, device_id: str) -> None:
        """Log one answered request (status 0: reset)."""
        ...

    def receive_batch(self, device_id: str, body: bytes) -> dict[str, Any]: ...

    def serve_assignment(self, device_id: str, if_none_match: str | None) -> Answer: ...

    def wait_session(self, device_id: str, wait: float) -> dict[str, Any] | None: ...

    def receive_heartbeat(self, device_id: str, body: bytes) -> None: ...


class HallHTTPServer(http.server.HTTPServer):
    """A bounded pool of worker threads; tracks open connections so ``stop()`` can cut them.

    Args:
        address: ``(host, port)`` to bind.
        hall: what the handlers use.
    """

    def __init__(self, address: tuple[str, int], hall: Hall) -> None:
        self.hall = hall
        self.capacity = hall.capacity
        self.request_queue_size = self.capacity.backlog
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.closing = threading.Event()
        self._work: queue.Queue[tuple[Any, Any] | None] = queue.Queue(maxsize=self.capacity.workers)
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._pool_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to an idle worker (a new one while under ``workers``); else wait for one."""
        with self._pool_lock:
            # An idle worker is spoken for by this connection; else a new one, while under the bound.
            if self._idle > 0:
                self._idle -= 1
            elif len(self._workers) < self.capacity.workers:
                worker = threading.Thread(target=self._serve_connections, daemon=True,
                                          name=f"hall-worker-{len(self._workers)}")
                self._workers.append(worker)
                worker.start()
        while True:
            try:
                self._work.put((request, client_address), timeout=0.2)
                return
            except queue.Full:
                if self.closing.is_set():
                    self.shutdown_request(request)
                    return

    def _serve_connections(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                with self._pool_lock:
                    self._idle += 1

    @property
    def worker_count(self) -> int:
        """Worker threads started so far (never more than ``capacity.workers``)."""
        with self._pool_lock:
            return len(self._workers)

    def server_close(self) -> None:
        self.closing.set()
        super().server_close()
        with self._pool_lock:
            workers = list(self._workers)
        for _ in workers:
            try:
                self._work.put_nowait(None)
            except queue.Full:
                break

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is not a server
        # fault; the default prints a traceback to stderr.
        logger.debug("connection from %s failed", client_address[0], exc_info=True)


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each given only the time left until ``deadline`` (monotonic seconds)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not read within its deadline")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _Writer(io.BufferedIOBase):
    """Unbuffered writes that send everything (``sendall``), as the standard library's own writer."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class Handler(http.server.BaseHTTPRequestHandler):
    """One HTTP request: read, verify, route, apply faults, sign (when verified), answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, so batches are not per-connection
    server_version = "HallStandIn/3"
    server: HallHTTPServer
    #: The request's signature, once it verified; None until then (and for good when it did not).
    verified: auth.Verified | None
    claim: auth.Claim
    _reader: _DeadlineReader

    def setup(self) -> None:
        # Headers and body go out in separate writes; with Nagle on, each
        # answer on a keep-alive connection would wait ~40 ms for an ACK.
        capacity = self.server.capacity
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.connection = self.request
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
        if isinstance(self.connection, ssl.SSLSocket):
            # Done here, not in accept(), so one slow client cannot stall the accept loop.
            self.connection.settimeout(capacity.read_timeout_s)
            try:
                self.connection.do_handshake()
            except BaseException:
                with self.server.connections_lock:  # finish() is not called when setup() fails
                    self.server.connections.discard(self.connection)
                raise
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile = _Writer(self.connection)
        self._in_flight: auth.Verified | None = None

    def finish(self) -> None:
        try:
            self.rfile.close()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def handle_one_request(self) -> None:
        """The standard library's, with a deadline for the request line and one for the rest."""
        capacity = self.server.capacity
        try:
            self._reader.deadline = time.monotonic() + capacity.idle_timeout_s
            self.raw_requestline = self.rfile.readline(65537)
            self._reader.deadline = time.monotonic() + capacity.read_timeout_s
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except TimeoutError as e:
            logger.debug("%s: %s", self.address_string(), e)
            self.close_connection = True
        except OSError as e:
            logger.debug("%s: connection failed: %s", self.address_string(), e)
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        hall = self.server.hall
        path, _, query = self.path.partition("?")
        lines = list(self.headers.items())
        self.claim = auth.claim(lines)
        self.verified = None
        fault = None
        try:
            try:
                body = self._read_body(hall.max_body)
                hall.capture(method, self.path, lines, body)
                fault = hall.take_fault(method, path)
                if fault and fault.kind == "latency":
                    hall.stopping.wait(fault.seconds)
                    fault = None
                if fault and fault.kind == "reset":
                    return self._reset(method, path)
                if fault and fault.kind == "huge":
                    return self._huge(method, path, fault)
                if fault and fault.kind in ("status", "rogue"):
                    # Signed as the hall only if the request verified, as every answer.
                    self._try_verify(method, path, lines, body)
                    answer = fault.status_answer() if fault.kind == "status" else self._rogue_answer(path, body)
                    return self._answer(method, path, *answer, sign=fault.sign)
                if fault and fault.kind == "session" and path.endswith("/session"):
                    self._verify(method, lines, body)
                    return self._answer(method, path, 200, {"session": _storm_session(fault)}, {})
                status, payload, headers = self._route(method, path, query, lines, body)
            except auth.Refused as exc:
                self.verified = exc.verified
                status, payload, headers = exc.status, {"error": exc.code, "message": str(exc)}, {}
                if exc.retry_after is not None:
                    headers["Retry-After"] = str(exc.retry_after)
            except BadRequest as exc:
                status, payload, headers = exc.status, {"error": str(exc)}, {}
            except Exception:
                logger.exception("handler failed for %s %s", method, path)
                status, payload, headers = 500, {"error": "internal server error"}, {}
                fault = None
            if fault and fault.kind == "reset_after_commit":
                return self._reset(method, path)
            if fault and fault.kind == "malformed":
                return self._answer(method, path, 200, fault.malformed_body(), {}, sign=fault.sign)
            if fault and fault.kind == "dribble":
                return self._answer(method, path, status, payload, headers, dribble=fault.seconds)
            self._answer(method, path, status, payload, headers)
        finally:
            if self._in_flight is not None:
                hall.done(self._in_flight)
                self._in_flight = None

    def _read_body(self, max_body: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest("chunked bodies are not accepted; send Content-Length", 411)
        declared = self.headers.get_all("Content-Length") or ["0"]
        if len(set(declared)) != 1 or not declared[0].strip().isdigit():
            self.close_connection = True
            raise BadRequest("bad Content-Length")
        length = int(declared[0])
        if length > max_body:
            # Drain what the client is sending, so it reads our 413 instead
            # of a reset; a huge body is cut off instead.
            self.close_connection = True
            if length <= _MAX_DRAIN:
                try:
                    while length > 0:
                        chunk = self.rfile.read(min(length, 65536))
                        if not chunk:
                            break
                        length -= len(chunk)
                except OSError:
                    pass  # the deadline passed: answer all the same
            raise BadRequest(f"body over {max_body} bytes; send smaller batches", 413)
        try:
            body = self.rfile.read(length) if length else b""
        except OSError:
            self.close_connection = True
            raise BadRequest("the body did not arrive within the read deadline") from None
        if len(body) != length:
            self.close_connection = True
            raise BadRequest("the body ended before its Content-Length")
        return body

    def _verify(self, method: str, lines: list[tuple[str, str]], body: bytes) -> auth.Verified:
        """Verify the request against the hall's public URL; the answer is signed from here on."""
        hall = self.server.hall
        self.verified = self._in_flight = hall.verify(
            method, hall.target_uri(self.path, self.headers.get("Host")), lines, body)
        return self.verified

    def _try_verify(self, method: str, path: str, lines: list[tuple[str, str]], body: bytes) -> None:
        """Verify if the request can be; an injected answer is sent either way (signed only if it was)."""
        if path != EVALUATIONS_PATH and not DEVICE_PATH.fullmatch(path):
            return
        try:
            self._verify(method, lines, body)
        except auth.Refused as exc:
            self.verified = exc.verified

    def _route(self, method: str, path: str, query: str, lines: list[tuple[str, str]], body: bytes) -> Answer:
        hall = self.server.hall
        if hall.phone is not None and is_page(path):
            # A citizen's browser: an HTML page, no device, nothing to sign (hall/phone.py).
            status, page = hall.phone.serve(method, path, body, self.headers.get("Content-Type", ""))
            return status, page, dict(PAGE_HEADERS)
        if path == EVALUATIONS_PATH:
            if method != "POST":
                raise BadRequest("use POST", 405)
            verified = self._verify(method, lines, body)
            return 200, hall.receive_batch(verified.device_id, body), {}
        match = DEVICE_PATH.fullmatch(path)
        if not match:
            raise BadRequest(f"no such endpoint: {path[:200]}", 404)
        device_id, action = match.groups()
        if not is_device_id(device_id):
            raise BadRequest(f"bad device id in the path: {DEVICE_ID_RULE}")
        if method != ("POST" if action == "heartbeat" else "GET"):
            raise BadRequest("method not allowed", 405)
        verified = self._verify(method, lines, body)
        if device_id != verified.device_id:
            raise BadRequest("a device may only use its own endpoints", 403)
        if action == "assignment":
            return hall.serve_assignment(device_id, self.headers.get("If-None-Match"))
        if action == "session":
            return 200, {"session": hall.wait_session(device_id, parse_wait(query))}, {}
        hall.receive_heartbeat(device_id, body)
        return 200, {"ok": True}, {}

    # --- answering ------------------------------------------------------------------

    @property
    def _device(self) -> str:
        """The verified device, for the log ("" when none)."""
        return self.verified.device_id if self.verified is not None else ""

    def _answer(self, method: str, path: str, status: int, payload: Any, headers: dict[str, str],
                sign: str = "hall", dribble: float = 0.0) -> None:
        if status == 304:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", **headers}
        self.server.hall.sign(sign, self.verified, self.claim.nonce, status, headers, data)
        # Logged before answering, so a client that has its answer also
        # finds it in requests_log.
        self.server.hall.record(method, path, status, self._device)
        self.connection.settimeout(self.server.capacity.write_timeout_s)
        if dribble:
            return self._dribble(status, headers, data, dribble)
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _rogue_answer(self, path: str, body: bytes) -> Answer:
        """What an impostor answers: every event acknowledged, a session, another staff member."""
        if path == EVALUATIONS_PATH:
            try:
                events = json.loads(body)["events"]
                ids = [e["id"] for e in events]
                head = {"seq": max(e["seq"] for e in events), "hash": events[-1]["hash"]}
            except Exception:
                ids, head = [], {"seq": 0, "hash": "0" * 64}
            return 200, {"accepted": ids, "duplicate": [], "rejected": [], "head": head}, {}
        if path.endswith("/session"):
            return 200, {"session": {"session_id": uuid.uuid4().hex, "ticket": "R001", "project_no": None,
                                     "task_code": None, "task_name": None, "qr_url": None}}, {}
        if path.endswith("/assignment"):
            return 200, ROGUE_ASSIGNMENT, {"ETag": '"rogue"'}
        return 200, {"ok": True}, {}

    def _huge(self, method: str, path: str, fault: Fault) -> None:
        """An answer of ``size`` bytes, with or without saying so up front; stops when the client does."""
        hall = self.server.hall
        self.close_connection = True
        hall.record(method, path, 200, self._device)
        self.connection.settimeout(self.server.capacity.write_timeout_s)
        size = fault.huge_size
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if fault.params.get("declared", True):
            self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * _HUGE_CHUNK
        try:
            while size > 0 and not hall.stopping.is_set():
                self.wfile.write(chunk[:size])
                size -= len(chunk)
        except OSError:
            pass  # the client stopped reading, as it should

    def _dribble(self, status: int, headers: dict[str, str], data: bytes, seconds: float) -> None:
        """The whole answer, status line first, one byte every ``seconds``; stops when the client does."""
        self.close_connection = True
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                f"Content-Length: {len(data)}", "Connection: close",
                *(f"{name}: {value}" for name, value in headers.items())]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace") + data
        stopping = self.server.hall.stopping
        try:
            for i in range(len(raw)):
                self.wfile.write(raw[i:i + 1])
                if stopping.wait(seconds):
                    break
        except OSError:
            pass  # the client gave up, as it should

    def _reset(self, method: str, path: str) -> None:
        # SO_LINGER 0 makes close() send an RST: the client sees a reset,
        # as after a cut link or a crashed proxy.
        self.close_connection = True
        self.server.hall.record(method, path, 0, self._device)
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # Hall.record logs with the device id instead


def _storm_session(fault: Fault) -> dict[str, Any]:
    """A session as a misbehaving hall opens it on every poll (the same id again when asked)."""
    return {"session_id": str(fault.params.get("session_id") or uuid.uuid4().hex),
            "ticket": f"S{secrets.randbelow(1000):03d}", "project_no": None, "task_code": None,
            "task_name": None, "qr_url": None}
