"""A stand-in provincial 好差评 platform: a real HTTP server on loopback that records the pushed items.

Idempotent as the unified interface asks: an item posted again under the
same ``Idempotency-Key`` (its ``itemId``) is answered 200 and kept once;
``posts`` counts every POST, so a test sees both what arrived and how often.
``down()`` makes it answer 503 (the platform in maintenance); ``stop()``
closes the port (the platform unreachable); ``start()`` comes back on the
same port.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class ProvinceStandIn:
    """The stand-in provincial endpoint.

    Args:
        host: loopback by default.
        port: 0 picks a free port (kept across ``stop()``/``start()``).
    """

    PATH = "/haochaping/v1/evaluations"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self.posts = 0
        self.refused = 0
        self._down = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where items are posted."""
        return f"http://{self._host}:{self._port}{self.PATH}"

    def start(self) -> Self:
        """Listen (again, on the same port after a stop)."""
        if self._httpd is not None:
            return self
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, answer = stand_in._receive(self.path, self.headers.get("Idempotency-Key"), body)
                data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        httpd.daemon_threads = True
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="province-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: posts are refused at the TCP level."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def down(self, down: bool = True) -> None:
        """Answer every post 503 (``down(False)``: normal again)."""
        with self._lock:
            self._down = down

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _receive(self, path: str, key: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.posts += 1
            if self._down:
                self.refused += 1
                return 503, {"code": "503", "msg": "维护中"}
            if path != self.PATH:
                return 404, {"code": "404", "msg": "no such path"}
            try:
                item = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return 400, {"code": "400", "msg": "not JSON"}
            if not isinstance(item, dict) or not key or item.get("itemId") != key:
                return 400, {"code": "400", "msg": "itemId and Idempotency-Key must agree"}
            if key not in self._items:
                self._items[key] = item
                self._order.append(key)
            return 200, {"code": "200", "msg": "ok"}

    @property
    def items(self) -> list[dict[str, Any]]:
        """Every distinct item received, in the order first received."""
        with self._lock:
            return [self._items[key] for key in self._order]
