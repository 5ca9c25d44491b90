"""A small loopback hall that speaks contract v3 with Ed25519, for the device's key tests.

It holds several public keys per device (old and new during a rotation),
verifies each request with the ``http-message-signatures`` library against
them, and signs answers only to requests it verified, with its own Ed25519
key (``keyid="hall"``), echoing the nonce. An unknown key gets an unsigned
401, as v3 says. It stores evaluations idempotently by id and answers
heartbeats; that is all (the project's hall back end is the full one).
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver, algorithms

from device.keys import parse_public_key, public_key_text


@dataclass
class _Req:
    method: str
    url: str
    headers: Any


@dataclass
class _Ans:
    status_code: int
    headers: Any


class _Lines:
    def __init__(self, lines):
        self._lines = list(lines)

    def items(self):
        return self._lines

    def __iter__(self):
        return iter(dict.fromkeys(n for n, _ in self._lines))

    def __contains__(self, name):
        return any(n.lower() == str(name).lower() for n, _ in self._lines)

    def get(self, name, default=""):
        values = [v for n, v in self._lines if n.lower() == name.lower()]
        return ", ".join(values) if values else default


class _Verifier(HTTPMessageVerifier):
    def validate_created_and_expires(self, sig_input, max_age=None):
        pass


class Ed25519Hall:
    """Loopback hall; ``register(device_id, public_key_text)`` before the device talks to it."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_key = public_key_text(self.key)
        self.devices: dict[str, list[Ed25519PublicKey]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.heartbeats: list[dict[str, Any]] = []
        #: ``(path, keyid fingerprint index or -1 when refused)`` per request.
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length)
                status, payload, nonce = outer.handle(self.command, self.path, self.headers.items(), body)
                raw = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", "Content-Length": str(len(raw))}
                if nonce:
                    outer.sign(status, headers, raw, nonce)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def register(self, device_id: str, public_key: str) -> None:
        with self.lock:
            self.devices.setdefault(device_id, []).append(parse_public_key(public_key))

    def forget(self, device_id: str, public_key: str) -> None:
        with self.lock:
            self.devices[device_id] = [k for k in self.devices.get(device_id, [])
                                       if public_key_text(k) != public_key]

    def sign(self, status, headers, body, nonce):
        headers["Request-Nonce"] = nonce
        signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                                   key_resolver=MappingKeyResolver(public_keys={}, private_keys={"hall": self.key}))
        signer.sign(_Ans(status, headers), key_id="hall", label="sig1",
                    covered_component_ids=("@status", "content-digest", "request-nonce"), body=body,
                    created=datetime.datetime.fromtimestamp(int(time.time()), datetime.UTC))

    def verify(self, method, path, lines, body) -> tuple[str, str, int]:
        """``(device_id, nonce, index of the key that verified)``, or ``("", "", -1)``."""
        fields = _Lines(lines)
        for device_id, keys in list(self.devices.items()):
            for index, key in enumerate(keys):
                verifier = _Verifier(signature_algorithm=algorithms.ED25519,
                                     key_resolver=MappingKeyResolver(public_keys={device_id: key}, private_keys={}))
                try:
                    (result,) = verifier.verify(_Req(method, self.url + path, fields),
                                                require_components=("@method", "@target-uri", "content-digest"),
                                                body=body, max_age=None)
                except Exception:
                    continue
                if result.parameters.get("alg") == "ed25519" and result.parameters.get("keyid") == device_id:
                    return device_id, str(result.parameters.get("nonce")), index
        return "", "", -1

    def handle(self, method, path, lines, body):
        device_id, nonce, index = self.verify(method, path, lines, body)
        with self.lock:
            self.log.append((path, index))
        if not device_id:
            return 401, {"error": "bad_signature"}, ""          # unsigned: v3 signs only verified requests
        data: Any = json.loads(body) if body else {}
        if path == "/api/v1/evaluations":
            accepted: list[str] = []
            duplicate: list[str] = []
            with self.lock:
                for event in data["events"]:
                    (duplicate if event["id"] in self.events else accepted).append(event["id"])
                    self.events.setdefault(event["id"], event)
                seqs = sorted(e["seq"] for e in self.events.values() if e["device_id"] == device_id)
            head = None
            if seqs:
                top = max(seqs)
                head = {"seq": top, "hash": next(e["hash"] for e in self.events.values() if e["seq"] == top)}
            return 200, {"accepted": accepted, "duplicate": duplicate, "rejected": [], "head": head}, nonce
        if path.endswith("/heartbeat"):
            with self.lock:
                self.heartbeats.append(data)
            return 200, {"ok": True}, nonce
        if path.endswith("/assignment"):
            return 404, {"error": "no_assignment"}, nonce
        return 200, {"session": None}, nonce
