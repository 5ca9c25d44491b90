"""A man in the middle on loopback: between the device and the hall back end, with a motive.

The proxy reads each request from the device whole, then, by its ``mode``:

- ``pass``: forwards it as it is and returns the hall's answer;
- ``bad_length`` / ``over_cap`` / ``changed_body`` / ``other_path``: copies
  the device's signature headers (``Signature-Input``, ``Signature``,
  ``Content-Digest``) onto a bogus request of its own (``Content-Length: -1``;
  200 MiB declared; the body with the 差评 taken out; the heartbeat path) and
  returns whatever the hall answers to that — a hall that signs answers to
  requests it did not verify signs it with the device's own nonce;
- ``replay``: forwards, but returns the answer the hall gave to an earlier
  request (one signed, for another nonce);
- ``forge``: answers itself, a 400 or 413 wearing the signature headers of
  an earlier real answer;
- ``bad_only``: plays ``over_cap`` only on batches that hold a 差评
  (dissatisfied, very_dissatisfied), passes the rest.

``interfered`` counts the requests it tampered with.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
from typing import Any

MODES = ("pass", "bad_length", "over_cap", "changed_body", "other_path", "replay", "forge", "bad_only")
BAD_LEVELS = ("dissatisfied", "very_dissatisfied")
SIGNATURE_HEADERS = ("signature-input", "signature", "content-digest")
ANSWER_HEADERS = ("signature-input", "signature", "content-digest", "request-nonce")


def holds_bad(body: bytes) -> bool:
    try:
        events = json.loads(body).get("events", [])
    except (ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("level") in BAD_LEVELS for e in events)


class Proxy:
    """A loopback proxy in front of ``(host, port)``; ``mode`` may change at any time."""

    def __init__(self, mode: str = "pass") -> None:
        self.mode = mode
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.interfered = 0
        self.seen = 0
        #: The last real answer: ``(status, [(name, value)], body)``.
        self.last_answer: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length)
                status, lines, content = outer.handle(self.command, self.path, list(self.headers.items()), body)
                self.send_response(status)
                for name, value in lines:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "date",
                                            "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="mitm", daemon=True)

    def start(self, target: tuple[str, int]) -> Proxy:
        self.target = target
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the proxy does with one request ------------------------------------------

    def handle(self, method: str, path: str, headers: list[tuple[str, str]],
               body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        with self.lock:
            self.seen += 1
            mode = self.mode
        evaluations = method == "POST" and path == "/api/v1/evaluations"
        if mode == "bad_only":
            mode = "over_cap" if evaluations and holds_bad(body) else "pass"
        if mode in ("bad_length", "over_cap", "changed_body", "other_path") and not evaluations:
            mode = "pass"
        if mode == "pass":
            answer = self.forward(method, path, headers, body)
            self.last_answer = answer
            return answer
        with self.lock:
            self.interfered += 1
        if mode == "replay":
            earlier = self.last_answer
            answer = self.forward(method, path, headers, body)
            self.last_answer = answer
            return earlier if earlier is not None else (502, [], b"")
        if mode == "forge":
            lines = [(n, v) for n, v in (self.last_answer[1] if self.last_answer else [])
                     if n.lower() in ANSWER_HEADERS]
            return 413, lines, b'{"error": "body over the limit; send smaller batches"}'
        copied = [(n, v) for n, v in headers if n.lower() in SIGNATURE_HEADERS or n.lower() == "host"]
        if mode == "bad_length":
            return self.raw(method, path, copied, "-1", b"")
        if mode == "over_cap":
            return self.raw(method, path, copied, str(200 << 20), b"")
        if mode == "changed_body":
            data = json.loads(body)
            data["events"] = [e for e in data["events"] if e.get("level") not in BAD_LEVELS]
            changed = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
            return self.raw(method, path, copied, str(len(changed)), changed)
        device = json.loads(body).get("device_id", "d1")
        return self.raw("POST", f"/api/v1/devices/{device}/heartbeat", copied, str(len(body)), body)

    def forward(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.target, timeout=30)
        try:
            sent = {n: v for n, v in headers if n.lower() not in ("connection", "content-length")}
            conn.request(method, path, body=body if method == "POST" else None, headers=sent)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def raw(self, method: str, path: str, headers: list[tuple[str, str]], length: str,
            body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """A request of the proxy's own making, with a Content-Length of its choice."""
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        sock = socket.create_connection(self.target, timeout=30)
        try:
            sock.sendall(head.encode("latin-1") + body)
            if not body and length not in ("0", "-1"):
                sock.shutdown(socket.SHUT_WR)     # declared a huge body, sends none
            response = http.client.HTTPResponse(sock)
            response.begin()
            return response.status, response.getheaders(), response.read()
        except (OSError, http.client.HTTPException):
            return 502, [], b""
        finally:
            sock.close()
