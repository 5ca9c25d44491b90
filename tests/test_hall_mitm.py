"""A man in the middle between the device's uploader and the hall back end (issue 16, the hall's part).

The proxy copies the device's signature headers onto a bogus request of its
own (an unreadable length, a body over the cap, a changed body, another
path), sends that to the hall and hands the hall's answer back to the
device as the answer to the device's request. The hall answers every one
unsigned, so the device takes none of them for the hall's word: no rating is
given up, and once the proxy lets traffic through every rating arrives.
The device here is the real uploader (shared ``hmac-sha256`` key).
"""

import http.server
import threading
import urllib.parse

import pytest
from hall_rig import Reply, exchange, raw_request

from device.config import Secret
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from hall import HallServer
from helpers import rating

pytestmark = pytest.mark.timeout(60)

KEY = "mitm-test-key"
N = 8


def tamper(kind, method, path, headers, body):
    """The bogus request made with the device's signature headers: ``(method, path, body, length)``."""
    if kind == "negative length":
        return method, path, b"", "-1"
    if kind == "200 MiB declared":
        return method, path, b"", str(200 << 20)
    if kind == "changed body":
        return method, path, body.replace(b'"satisfied"', b'"very_dissatisfied"'), None
    if kind == "another path":
        return "POST", "/api/v1/devices/d1/heartbeat", body, None
    return method, path, body, None


class Proxy:
    """A loopback HTTP proxy that tampers with every request while ``kind`` is set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.kind: str | None = None
        self.answers: list[Reply] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.relay()

            def do_GET(self):
                self.relay()

            def relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {n: v for n, v in self.headers.items()
                           if n.lower() not in ("host", "content-length", "connection")}
                method, path, sent, length = tamper(proxy.kind, self.command, self.path, headers, body)
                reply = exchange(proxy.upstream, raw_request(method, path, headers, sent, host=self.headers["Host"],
                                                             length=length))
                proxy.answers.append(reply)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    if name.lower() not in ("content-length", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("kind", ["negative length", "200 MiB declared", "changed body", "another path"])
def test_signature_headers_copied_onto_bogus_requests_cost_no_rating(kind, tmp_path, outbox):
    events = [outbox.append(rating(i, level="dissatisfied" if i % 3 == 0 else "satisfied",
                                   satisfaction=2 if i % 3 == 0 else 4)) for i in range(N)]
    with HallServer(tmp_path / "hall.db", {"d1": KEY}) as hall:
        proxy = Proxy(hall.url)
        hall.add_public_url(proxy.url)          # devices are given the proxy's URL (a hall behind a proxy)
        try:
            assert urllib.parse.urlsplit(proxy.url).port != urllib.parse.urlsplit(hall.url).port
            transport = HttpTransport(proxy.url, "d1", Secret(KEY), timeout=2.0)
            up = Uploader(outbox, transport, "d1", batch_size=3, backoff_min_s=0.01, backoff_max_s=0.05,
                          heartbeat_s=0, retain_days=0, synced=lambda: True)
            proxy.kind = kind
            for _ in range(6):
                up.send_batch()
            assert proxy.answers and all(a.status >= 400 for a in proxy.answers)
            assert all(a.header("Signature") == "" for a in proxy.answers)     # never the hall's word
            assert outbox.count("rejected") == 0                                  # no rating given up
            assert hall.events() == []
            assert any(f.startswith("unauthenticated_answer") for f in up.refresh_status().faults)
            proxy.kind = None                                                     # the proxy lets it through
            assert up.drain()
            stored = hall.events("d1")
            assert [e["id"] for e in stored] == [e["id"] for e in events]
            assert sum(e["level"] == "dissatisfied" for e in stored) == 3         # every 差评 arrived
            assert outbox.count("rejected") == 0
        finally:
            proxy.close()
