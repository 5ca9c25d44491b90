"""The wire contract v2 (device/queue/wire.py) and the transport that carries it.

Signing and verification are checked against the stand-in hall server's own
implementation (hall/auth.py, which imports nothing from device/), both
ways; the transport's limits and deadline against a tiny HTTP server that
sends what a misbehaving peer would: too much, without a length, headers
spelt in lower case, or one byte at a time.
"""

import datetime
import email.utils
import http.server
import json
import pathlib
import threading
import time
from typing import Any

import pytest

from device.config import Secret
from device.errors import TransportError, UnauthenticatedAnswer
from device.queue import wire
from device.queue.transport import Headers, HttpTransport, Reply
from hall import auth

KEY = "wire-test-key"

pytestmark = pytest.mark.timeout(60)

NOW = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.UTC)


# --- a tiny HTTP server that answers what the test tells it ------------------------

class TinyServer:
    """A loopback HTTP/1.1 server answering every request with ``answer`` (status, headers, body).

    ``headers`` are sent exactly as given, lower case included; a ``None``
    body length means no Content-Length (the answer ends with the connection).
    Answers are signed as the hall signs them (``sign``: with ``key``, echoing
    the request's nonce) unless told otherwise; ``dribble`` sends the whole
    answer one byte every that many seconds.
    """

    def __init__(self, key=KEY):
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
        self.requests: list[Any] = []
        self.sign = True
        self.key = key
        self.dribble = 0.0
        self.closed = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                status, headers, body = outer.answer
                headers = dict(headers)
                if outer.sign:
                    nonce = auth.claim(self.headers.items()).nonce
                    auth.sign_answer(outer.key, status, headers, body, nonce, int(time.time()))
                if outer.dribble:
                    return self._dribble(status, headers, body)
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

            def _dribble(self, status, headers, body):
                self.close_connection = True
                raw = (f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                       + "Connection: close\r\n\r\n").encode() + body
                try:
                    for i in range(len(raw)):
                        self.wfile.write(raw[i:i + 1])
                        self.wfile.flush()
                        if outer.closed.wait(outer.dribble):
                            return
                except OSError:
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
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tiny():
    server = TinyServer()
    yield server
    server.close()


def signed_answer(status, body, nonce, key=KEY, created=None):
    headers = {"Content-Type": "application/json"}
    auth.sign_answer(key, status, headers, body, nonce, int(created if created is not None else time.time()))
    return headers


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
        found = [s for s in ("/api/v1", "Signature-Input", "Content-Digest", "Request-Nonce", '"Retry-After"',
                             '"If-None-Match"', '"ETag"', "X-Signature") if s in text]
        if found:
            spelt[str(path.relative_to(device))] = found
    assert spelt == {}


def test_the_device_and_the_hall_agree_on_the_contracts_constants():
    assert wire.LABEL == auth.LABEL and wire.ALGORITHM == auth.ALGORITHM == "hmac-sha256"
    assert wire.HALL_KEY_ID == auth.HALL_KEY_ID == "hall"
    assert wire.REQUEST_COMPONENTS == auth.REQUEST_COMPONENTS == ("@method", "@target-uri", "content-digest")
    assert wire.ANSWER_COMPONENTS == auth.ANSWER_COMPONENTS == ("@status", "content-digest", "request-nonce")
    assert wire.REQUEST_NONCE == auth.REQUEST_NONCE and wire.WINDOW_S == auth.WINDOW_S == 300
    assert wire.STALE_REQUEST == auth.STALE


# --- bodies ----------------------------------------------------------------------------

def test_a_body_is_compact_utf8_json():
    assert wire.encode({"staff_name": "张三", "n": [1, 2]}) == '{"staff_name":"张三","n":[1,2]}'.encode()
    assert wire.decode(b"") is None and wire.decode(b"<html>502</html>") is None
    assert wire.decode(b'{"ok":true}') == {"ok": True}


def test_the_evaluations_answer_is_read_or_refused_as_a_whole():
    answer = wire.EvaluationsAnswer.from_json(
        {"accepted": ["a"], "duplicate": ["b"], "rejected": [{"id": "c", "error": "bad level"}],
         "head": {"seq": 7, "hash": "ab" * 32}})
    assert answer.accepted == ("a",) and answer.duplicate == ("b",) and answer.rejected == {"c": "bad level"}
    assert answer.head == wire.Head(7, "ab" * 32)
    assert wire.EvaluationsAnswer.from_json({"accepted": [], "duplicate": [],
                                             "head": {"seq": 0, "hash": "0" * 64}}).head is None
    bad: Any
    for bad in (None, "page", {"accepted": 5}, {"accepted": []}, {"accepted": [], "duplicate": [],
                                                                    "rejected": [{"no-id": 1}]},
                {"accepted": [], "duplicate": [], "head": {"seq": "7", "hash": "x"}}):
        with pytest.raises(ValueError, match="malformed"):
            wire.EvaluationsAnswer.from_json(bad)


# --- signing: the device signs, the hall verifies ----------------------------------------

URI = "http://127.0.0.1:8080/api/v1/evaluations"


def hall_checks(signed, method="POST", uri=URI, body=b"{}", key=KEY, now=None, authenticator=None):
    checker = authenticator or auth.Authenticator(lambda d: key if d == "WE-0001" else None,
                                                  clock=lambda: now if now is not None else time.time())
    return checker.authenticate(method, uri, signed.headers.items(), body)


def test_a_signed_request_is_what_the_hall_accepts():
    signed = wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", time.time())
    assert hall_checks(signed) == "WE-0001"
    inputs = signed.headers[wire.SIGNATURE_INPUT]
    assert inputs.startswith('sig1=("@method" "@target-uri" "content-digest");created=')
    assert 'keyid="WE-0001"' in inputs and 'alg="hmac-sha256"' in inputs and f'nonce="{signed.nonce}"' in inputs
    assert signed.headers[wire.CONTENT_DIGEST].startswith("sha-256=:")
    assert len(signed.nonce) >= 22                                   # 128 random bits
    assert KEY not in json.dumps(signed.headers) and KEY not in repr(signed)


def test_the_signature_covers_method_target_and_body():
    signed = wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", time.time())
    for changed in ({"method": "GET"}, {"uri": URI.replace("evaluations", "devices/WE-0001/heartbeat")},
                    {"uri": URI.replace("8080", "8081")}, {"body": b'{"x":1}'}, {"key": "another"}):
        with pytest.raises(auth.Refused) as refused:
            hall_checks(signed, **changed)
        assert refused.value.status == 401 and refused.value.code == auth.BAD_SIGNATURE, changed


def test_an_empty_body_is_digested_too():
    signed = wire.sign_request(Secret(KEY), "WE-0001", "GET", URI, b"", time.time())
    assert signed.headers[wire.CONTENT_DIGEST] == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    assert hall_checks(signed, method="GET", body=b"") == "WE-0001"


def test_the_hall_refuses_stale_replayed_and_unknown_requests():
    now = time.time()
    checker = auth.Authenticator(lambda d: KEY if d == "WE-0001" else None, clock=lambda: now)
    fresh = wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", now - 299)
    assert hall_checks(fresh, authenticator=checker) == "WE-0001"
    with pytest.raises(auth.Refused, match="seen before") as replayed:
        hall_checks(fresh, authenticator=checker)
    assert replayed.value.code == auth.REPLAYED
    for created in (now - 302, now + 302):
        stale = wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", created)
        with pytest.raises(auth.Refused) as refused:
            hall_checks(stale, authenticator=checker)
        assert refused.value.code == auth.STALE
    stranger = wire.sign_request(Secret(KEY), "WE-9999", "POST", URI, b"{}", now)
    with pytest.raises(auth.Refused) as refused:
        hall_checks(stranger, authenticator=checker)
    assert refused.value.code == auth.UNKNOWN_DEVICE
    weak = wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", now, nonce="abc")
    with pytest.raises(auth.Refused) as refused:
        hall_checks(weak, authenticator=checker)
    assert refused.value.code == auth.WEAK_NONCE


# --- verification: the hall signs, the device verifies -------------------------------------

def request():
    return wire.sign_request(Secret(KEY), "WE-0001", "POST", URI, b"{}", time.time())


def test_an_answer_signed_by_the_hall_for_this_request_verifies_and_tells_the_hall_time():
    signed = request()
    body = b'{"accepted":[]}'
    headers = signed_answer(200, body, signed.nonce, created=1_800_000_000)
    verdict = wire.verify_answer(Secret(KEY), signed, 200, headers, body)
    assert verdict.ok and verdict.hall_time == 1_800_000_000
    # A device in 1970 verifies it all the same: freshness is the nonce, not the device's clock.
    old = signed_answer(401, b"{}", signed.nonce, created=946_684_800)
    assert wire.verify_answer(Secret(KEY), signed, 401, old, b"{}").ok


@pytest.mark.parametrize("case", ["unsigned", "wrong key", "another nonce", "other bytes", "other status",
                                  "status not covered", "no echo", "two signatures", "garbage"])
def test_an_answer_that_is_not_the_halls_answer_to_this_request_does_not_verify(case):
    signed, body = request(), b'{"accepted":["x"]}'
    headers = signed_answer(200, body, signed.nonce)
    status = 200
    if case == "unsigned":
        headers = {"Content-Type": "application/json", wire.REQUEST_NONCE: signed.nonce}
    elif case == "wrong key":
        headers = signed_answer(200, body, signed.nonce, key="not-the-key")
    elif case == "another nonce":
        headers = signed_answer(200, body, request().nonce)
    elif case == "other bytes":
        body = b'{"accepted":["x","y"]}'
    elif case == "other status":
        status = 400
    elif case == "status not covered":
        headers = {wire.REQUEST_NONCE: signed.nonce}
        signer = auth.HTTPMessageSigner(signature_algorithm=auth.algorithms.HMAC_SHA256,
                                        key_resolver=auth.MappingKeyResolver(public_keys={},
                                                                             private_keys={"hall": KEY.encode()}))
        signer.sign(auth._Answer(200, headers), key_id="hall", label="sig1",
                    covered_component_ids=("content-digest", "request-nonce"), body=body)
    elif case == "no echo":
        headers = {k: v for k, v in headers.items() if k != wire.REQUEST_NONCE}
    elif case == "two signatures":
        headers = [*headers.items(), (wire.SIGNATURE, "sig2=:AAAA:")]
    elif case == "garbage":
        headers = dict(headers, **{wire.SIGNATURE_INPUT: 'sig1=("@status" ((((', wire.SIGNATURE: "\x00\xff"})
    verdict = wire.verify_answer(Secret(KEY), signed, status, headers, body)
    assert not verdict.ok and verdict.hall_time is None and verdict.why


# --- Retry-After -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Retry-After", "retry-after", "RETRY-AFTER", "rEtRy-AfTeR"])
def test_retry_after_is_found_however_its_name_is_spelt(name):
    assert wire.retry_after({name: "7"}, NOW) == 7
    assert wire.retry_after([(name, " 7 ")], NOW) == 7
    assert Reply(503, Headers({name: "7"})).headers.get("Retry-After") == "7"


def test_retry_after_as_an_http_date_and_what_is_no_answer():
    later = email.utils.format_datetime(NOW + datetime.timedelta(seconds=90), usegmt=True)
    assert wire.retry_after({"retry-after": later}, NOW) == 90
    earlier = email.utils.format_datetime(NOW - datetime.timedelta(seconds=90), usegmt=True)
    assert wire.retry_after({"Retry-After": earlier}, NOW) == 0
    assert wire.retry_after({"Retry-After": "-5"}, NOW) == 0
    for value in ("", "soon", "nan", "inf", "Fri, 99 Foo 99999 99:99:99 GMT"):
        assert wire.retry_after({"Retry-After": value}, NOW) is None, value
    assert wire.retry_after({}, NOW) is None


def test_headers_keep_repeated_lines_and_look_up_any_spelling():
    headers = Headers([("Set-Thing", "a"), ("set-thing", "b"), ("ETag", '"e"')])
    assert headers["SET-THING"] == "a, b" and headers.get("etag") == '"e"' and "Etag" in headers
    assert len(headers) == 2 and headers.lines[1] == ("set-thing", "b")


# --- the transport: signing, verification, limits, deadline ----------------------------------

def test_the_transport_signs_and_reads_headers_case_insensitively(tiny):
    tiny.reply(304, {"etag": '"e1"'})
    reply = HttpTransport(tiny.url, "d1", Secret(KEY)).request(
        "GET", wire.assignment_path("d1"), headers=wire.conditional('"e0"'))
    method, path, headers, body = tiny.requests[0]
    assert (method, path, body) == ("GET", "/api/v1/devices/d1/assignment", b"")
    assert headers[wire.IF_NONE_MATCH] == '"e0"' and 'keyid="d1"' in headers[wire.SIGNATURE_INPUT]
    assert reply.status == 304 and reply.headers.get(wire.ETAG) == '"e1"' and reply.headers["ETAG"] == '"e1"'
    assert reply.hall_time is not None and abs(reply.hall_time - time.time()) < 5


def test_an_answer_that_does_not_verify_is_no_answer(tiny):
    tiny.sign = False
    tiny.reply(200, {"content-type": "application/json"}, b'{"accepted":["a"],"duplicate":[],"rejected":[]}')
    with pytest.raises(UnauthenticatedAnswer, match="unauthenticated_answer"):
        HttpTransport(tiny.url, "d1", Secret(KEY)).request("POST", wire.evaluations_path(), {"events": []})
    tiny.sign, tiny.key = True, "another-key"
    with pytest.raises(UnauthenticatedAnswer):
        HttpTransport(tiny.url, "d1", Secret(KEY)).request("POST", wire.evaluations_path(), {"events": []})


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


def test_a_server_that_dribbles_is_given_up_on_at_the_deadline(tiny):
    tiny.reply(200, {"content-type": "application/json"}, b'{"ok":true}')
    tiny.dribble = 0.2                                      # the status line alone takes seconds
    transport = HttpTransport(tiny.url, "d1", Secret(KEY), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransportError, match="did not answer within 1 s"):
        transport.request("POST", wire.heartbeat_path("d1"), {})
    assert time.monotonic() - started < 1.5
    tiny.dribble = 0.0
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).data == {"ok": True}


def test_a_kept_alive_connection_the_server_closed_is_replaced_before_sending(tiny):
    tiny.reply(200, {"content-type": "application/json"}, b'{"ok":true}')
    transport = HttpTransport(tiny.url, "d1", Secret(KEY), timeout=5)
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).status == 200
    tiny.reply(200, {"content-type": "application/json", "connection": "close"}, b'{"ok":true}')
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).status == 200   # then closed by the server
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).status == 200   # a new connection
    assert len(tiny.requests) == 3                                                  # no hidden retries


def test_transport_names_the_server_it_cannot_reach():
    transport = HttpTransport("http://127.0.0.1:9", "d1", Secret("s"), timeout=1)
    with pytest.raises(TransportError, match=r"127\.0\.0\.1:9"):
        transport.request("POST", wire.evaluations_path(), {"events": []})
