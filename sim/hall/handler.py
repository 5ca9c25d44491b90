"""HTTP for the hall: one request read, authenticated, routed, faulted, signed and answered.

The state lives in :class:`~sim.hall.server.HallServer`; a handler only
turns bytes into calls on it and its answers back into signed bytes. Every
answer is signed (:func:`sim.hall.auth.sign_answer`) with the key of the
device the request names, whatever its status; the injected faults of
:mod:`sim.hall.faults` are acted out here, the lying and the slow ones
included.
"""

from __future__ import annotations

import http.server
import json
import logging
import secrets
import socket
import ssl
import struct
import threading
import uuid
from typing import TYPE_CHECKING, Any

from sim.hall import auth
from sim.hall.contract import DEVICE_PATH, EVALUATIONS_PATH, BadRequest, parse_wait
from sim.hall.faults import Fault
from sim.hall.phone import PAGE_HEADERS
from sim.hall.phone_link import is_page

if TYPE_CHECKING:
    from sim.hall.server import HallServer

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


class HallHTTPServer(http.server.ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can cut keep-alives and long polls.

    Args:
        address: ``(host, port)`` to bind.
        hall: the server whose state the handlers use.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], hall: HallServer) -> None:
        self.hall = hall
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is not a server
        # fault; the default prints a traceback to stderr.
        logger.debug("connection from %s failed", client_address[0], exc_info=True)


class Handler(http.server.BaseHTTPRequestHandler):
    """One HTTP request: read, authenticate, route, apply faults, sign, answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, so batches are not per-connection
    server_version = "HallStandIn/2"
    #: Idle keep-alive connections close after this; above the 30 s long poll.
    timeout = 65
    server: HallHTTPServer
    device_id: str
    claim: auth.Claim

    def setup(self) -> None:
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

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        hall = self.server.hall
        path, _, query = self.path.partition("?")
        lines = list(self.headers.items())
        self.claim = auth.claim(lines)
        self.device_id = self.claim.keyid
        fault = None
        try:
            body = self._read_body(hall.max_body)
            hall._capture(method, self.path, lines, body)
            fault = hall._take_fault(method, path)
            if fault and fault.kind == "latency":
                hall._stopping.wait(fault.seconds)
                fault = None
            if fault and fault.kind == "reset":
                return self._reset(method, path)
            if fault and fault.kind == "status":
                return self._answer(method, path, *fault.status_answer(), sign=fault.sign)
            if fault and fault.kind == "rogue":
                return self._answer(method, path, *self._rogue_answer(path, body), sign=fault.sign)
            if fault and fault.kind == "huge":
                return self._huge(method, path, fault)
            if fault and fault.kind == "session" and path.endswith("/session"):
                self._authenticate(method, body)
                return self._answer(method, path, 200, {"session": _storm_session(fault)}, {})
            status, payload, headers = self._route(method, path, query, body)
        except auth.Refused as exc:
            status, payload, headers = exc.status, {"error": exc.code, "message": str(exc)}, {}
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

    def _read_body(self, max_body: int) -> bytes:
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

    def target_uri(self) -> str:
        """The request's ``@target-uri``: the scheme served, the ``Host`` it names, the path and query."""
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        return f"{scheme}://{self.headers.get('Host', '')}{self.path}"

    def _authenticate(self, method: str, body: bytes) -> None:
        hall = self.server.hall
        self.device_id = hall._auth.authenticate(method, self.target_uri(), self.headers.items(), body)

    def _route(self, method: str, path: str, query: str, body: bytes) -> Answer:
        hall = self.server.hall
        if hall.phone is not None and is_page(path):
            # A citizen's browser: an HTML page, no device, nothing to sign (sim/hall/phone.py).
            status, page = hall.phone.serve(method, path, body, self.headers.get("Content-Type", ""))
            return status, page, dict(PAGE_HEADERS)
        if path == EVALUATIONS_PATH:
            if method != "POST":
                raise BadRequest("use POST", 405)
            self._authenticate(method, body)
            return 200, hall._receive_batch(self.device_id, body), {}
        match = DEVICE_PATH.fullmatch(path)
        if not match:
            raise BadRequest(f"no such endpoint: {path}", 404)
        device_id, action = match.groups()
        if method != ("POST" if action == "heartbeat" else "GET"):
            raise BadRequest("method not allowed", 405)
        self._authenticate(method, body)
        if device_id != self.device_id:
            raise BadRequest("a device may only use its own endpoints", 403)
        if action == "assignment":
            return hall._serve_assignment(device_id, self.headers.get("If-None-Match"))
        if action == "session":
            return 200, {"session": hall._wait_session(device_id, parse_wait(query))}, {}
        hall._receive_heartbeat(device_id, body)
        return 200, {"ok": True}, {}

    # --- answering ------------------------------------------------------------------

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
        self._sign(status, headers, data, sign)
        # Logged before answering, so a client that has its answer also
        # finds it in requests_log.
        self.server.hall._log_request(method, path, status, self.device_id)
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

    def _sign(self, status: int, headers: dict[str, str], data: bytes, mode: str) -> None:
        """Sign as the hall does, or as a peer that is not the hall would."""
        hall = self.server.hall
        nonce = hall._remember_nonce(self.claim.nonce)
        if mode == "none":
            if nonce:
                headers[auth.REQUEST_NONCE] = nonce  # echoing is easy; signing is not
            return
        key = hall._keys.key_for(self.claim.keyid) if self.claim.keyid else None
        if mode == "wrong_key":
            key = "not-" + (key or "the-device-key")
        elif mode == "other_nonce":
            nonce = hall._other_nonce(nonce)
        if key is None or not nonce:
            return  # a request naming no device the hall knows: there is no key to sign with
        auth.sign_answer(key, status, headers, data, nonce, int(hall._clock()))

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
        self.close_connection = True
        self.server.hall._log_request(method, path, 200, self.device_id)
        size = fault.huge_size
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if fault.params.get("declared", True):
            self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * _HUGE_CHUNK
        try:
            while size > 0 and not self.server.hall._stopping.is_set():
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
        stopping = self.server.hall._stopping
        try:
            for i in range(len(raw)):
                self.wfile.write(raw[i:i + 1])
                self.wfile.flush()
                if stopping.wait(seconds):
                    break
        except OSError:
            pass  # the client gave up, as it should

    def _reset(self, method: str, path: str) -> None:
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

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _log_request logs with the device id instead


def _storm_session(fault: Fault) -> dict[str, Any]:
    """A session as a misbehaving hall opens it on every poll (the same id again when asked)."""
    return {"session_id": str(fault.params.get("session_id") or uuid.uuid4().hex),
            "ticket": f"S{secrets.randbelow(1000):03d}", "project_no": None, "task_code": None,
            "task_name": None, "qr_url": None}
