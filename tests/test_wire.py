"""The wire contract (device/queue/wire.py) and the transport that carries it.

Paths, headers, signing and limits are checked against what the stand-in hall
server expects, and the answer limits against a tiny HTTP server that sends
what a misbehaving peer would: too much, without a length, or headers spelt
in lower case.
"""

import datetime
import email.utils
import http.server
import json
import pathlib
import threading

import pytest
from requests.structures import CaseInsensitiveDict

from device.config import Secret
from device.errors import TransportError
from device.queue import wire
from device.queue.transport import HttpTransport, Reply
from sim.hall import auth

KEY = "wire-test-key"

pytestmark = pytest.mark.timeout(30)

NOW = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.UTC)


# --- a tiny HTTP server that answers what the test tells it ------------------------

class TinyServer:
    """A loopback HTTP/1.1 server answering every request with ``answer`` (status, headers, body).

    ``headers`` are sent exactly as given, lower case included; a ``None``
    body length means no Content-Length (the answer ends with the connection).
    """

    def __init__(self):
        self.answer = (200, {}, b"{}")
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                status, headers, body = outer.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if not any(name.lower() == "content-length" for name in headers):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client stopped reading: as it should past the limit
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, status, headers=None, body=b"", length=True):
        headers = dict(headers or {})
        if length:
            headers.setdefault("content-length", str(len(body)))
        self.answer = (status, headers, body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tiny():
    server = TinyServer()
    yield server
    server.close()


# --- paths ---------------------------------------------------------------------------

def test_paths_are_the_contracts_and_a_device_id_is_quoted_whole():
    assert wire.evaluations_path() == "/api/v1/evaluations"
    assert wire.assignment_path("WE-0001") == "/api/v1/devices/WE-0001/assignment"
    assert wire.heartbeat_path("WE-0001") == "/api/v1/devices/WE-0001/heartbeat"
    assert wire.session_path("WE-0001", 25) == "/api/v1/devices/WE-0001/session?wait=25"
    assert wire.session_path("WE-0001", 0.5) == "/api/v1/devices/WE-0001/session?wait=0.5"
    # A "/" or "?" in an id can never reach another endpoint or add a query.
    assert wire.heartbeat_path("a/../b?x=1") == "/api/v1/devices/a%2F..%2Fb%3Fx%3D1/heartbeat"


def test_answer_limits_are_one_mebibyte_for_evaluations_and_64_kibibytes_otherwise():
    assert wire.answer_limit(wire.evaluations_path()) == 1024 * 1024
    assert wire.answer_limit(wire.heartbeat_path("d1")) == 64 * 1024
    assert wire.answer_limit(wire.session_path("d1", 25)) == 64 * 1024


def test_no_other_device_module_spells_a_path_or_a_header():
    device = pathlib.Path(__file__).resolve().parent.parent / "device"
    spelt = {}
    for path in device.rglob("*.py"):
        if path.name == "wire.py":
            continue
        text = path.read_text(encoding="utf-8")
        found = [s for s in ("/api/v1", "X-Signature", "X-Device-Id", '"Retry-After"', '"If-None-Match"',
                             '"ETag"') if s in text]
        if found:
            spelt[str(path.relative_to(device))] = found
    assert spelt == {}


# --- bodies, signing, verification ----------------------------------------------------

def test_a_body_is_compact_utf8_json():
    assert wire.encode({"staff_name": "张三", "n": [1, 2]}) == '{"staff_name":"张三","n":[1,2]}'.encode()
    assert wire.decode(b"") is None and wire.decode(b"<html>502</html>") is None
    assert wire.decode(b'{"ok":true}') == {"ok": True}


def test_a_signed_request_is_what_the_hall_server_checks():
    body = wire.encode({"events": []})
    headers = wire.sign_request(Secret(KEY), "WE-0001", "POST", wire.evaluations_path(), body)
    assert headers[wire.DEVICE_ID] == "WE-0001"
    assert headers[wire.SIGNATURE] == auth.sign(KEY, body)
    assert KEY not in json.dumps(headers)
    assert wire.sign_request(KEY, "WE-0001", "POST", "/x", body) == headers   # a str key signs alike


def test_v1_answers_are_not_signed_so_every_answer_verifies():
    signed = wire.sign_request(Secret(KEY), "d1", "GET", "/x", b"")
    assert wire.verify_answer(Secret(KEY), signed, 200, {}, b"{}") is True


def test_an_answer_that_does_not_verify_is_no_answer(tiny, monkeypatch):
    tiny.reply(200, {"content-type": "application/json"}, b'{"accepted":[],"duplicate":[],"rejected":[]}')
    monkeypatch.setattr(wire, "verify_answer", lambda *args: False)
    with pytest.raises(TransportError, match="unauthenticated_answer"):
        HttpTransport(tiny.url, "d1", Secret(KEY)).request("POST", wire.evaluations_path(), {"events": []})


def test_the_evaluations_answer_is_read_or_refused_as_a_whole():
    answer = wire.EvaluationsAnswer.from_json(
        {"accepted": ["a"], "duplicate": ["b"], "rejected": [{"id": "c", "error": "bad level"}]})
    assert answer.accepted == ("a",) and answer.duplicate == ("b",) and answer.rejected == {"c": "bad level"}
    for bad in (None, "page", {"accepted": 5}, {"accepted": []}, {"accepted": [], "duplicate": [],
                                                                    "rejected": [{"no-id": 1}]}):
        with pytest.raises(ValueError, match="malformed"):
            wire.EvaluationsAnswer.from_json(bad)


# --- Retry-After ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Retry-After", "retry-after", "RETRY-AFTER", "rEtRy-AfTeR"])
def test_retry_after_is_found_however_its_name_is_spelt(name):
    assert wire.retry_after({name: "7"}, NOW) == 7
    assert wire.retry_after(CaseInsensitiveDict({name: " 7 "}), NOW) == 7
    assert Reply(503, {name: "7"}).headers.get("Retry-After") == "7"


def test_retry_after_as_an_http_date_and_what_is_no_answer():
    later = email.utils.format_datetime(NOW + datetime.timedelta(seconds=90), usegmt=True)
    assert wire.retry_after({"retry-after": later}, NOW) == 90
    earlier = email.utils.format_datetime(NOW - datetime.timedelta(seconds=90), usegmt=True)
    assert wire.retry_after({"Retry-After": earlier}, NOW) == 0
    assert wire.retry_after({"Retry-After": "-5"}, NOW) == 0
    for value in ("", "soon", "nan", "inf"):
        assert wire.retry_after({"Retry-After": value}, NOW) is None, value
    assert wire.retry_after({}, NOW) is None


# --- the transport: limits, headers -----------------------------------------------------------

def test_the_transport_sends_the_contracts_headers_and_reads_headers_case_insensitively(tiny):
    tiny.reply(304, {"etag": '"e1"'})
    reply = HttpTransport(tiny.url, "d1", Secret(KEY)).request(
        "GET", wire.assignment_path("d1"), headers=wire.conditional('"e0"'))
    method, path, headers, body = tiny.requests[0]
    assert (method, path, body) == ("GET", "/api/v1/devices/d1/assignment", b"")
    assert headers[wire.IF_NONE_MATCH] == '"e0"' and headers[wire.DEVICE_ID] == "d1"
    assert headers[wire.SIGNATURE] == auth.sign(KEY, b"")
    assert reply.status == 304 and reply.headers.get(wire.ETAG) == '"e1"' and reply.headers["ETAG"] == '"e1"'


def test_an_answer_within_the_limit_is_read_whole(tiny):
    ids = [f"id-{i:08d}" for i in range(40_000)]          # about 600 KiB: a big batch's answer
    body = json.dumps({"accepted": ids, "duplicate": [], "rejected": []}).encode()
    assert 64 * 1024 < len(body) <= wire.MAX_EVALUATIONS_ANSWER
    tiny.reply(200, {"content-type": "application/json"}, body)
    reply = HttpTransport(tiny.url, "d1", Secret(KEY)).request("POST", wire.evaluations_path(), {"events": []})
    assert reply.data["accepted"] == ids


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_an_answer_over_its_limit_is_a_transport_error(tiny, declared):
    transport = HttpTransport(tiny.url, "d1", Secret(KEY), timeout=5)
    tiny.reply(200, {}, b"x" * (wire.MAX_ANSWER + 1), length=declared)
    with pytest.raises(TransportError, match=f"more than {wire.MAX_ANSWER}|the most read is {wire.MAX_ANSWER}"):
        transport.request("POST", wire.heartbeat_path("d1"), {})
    tiny.reply(200, {}, b"x" * (wire.MAX_EVALUATIONS_ANSWER + 1), length=declared)
    with pytest.raises(TransportError, match=str(wire.MAX_EVALUATIONS_ANSWER)):
        transport.request("POST", wire.evaluations_path(), {"events": []})
    tiny.reply(200, {}, b'{"ok":true}')                   # the transport goes on working
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).data == {"ok": True}


def test_a_huge_declared_answer_is_refused_without_reading_it(tiny):
    tiny.reply(200, {"content-length": str(100 * 1024 * 1024)}, b"x" * 1000, length=False)
    with pytest.raises(TransportError, match="104857600 bytes"):
        HttpTransport(tiny.url, "d1", Secret(KEY), timeout=5).request("GET", wire.session_path("d1", 1))
