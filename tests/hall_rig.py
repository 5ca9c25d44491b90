"""Speaking contract v3 to the hall back end from tests, without the device's code.

A device is a :class:`Signer`: an id and an Ed25519 private key (the hall
holds only its public key) or a shared ``hmac-sha256`` key. Requests go out
through :func:`exchange` on a raw socket, so a test can send exactly the bytes
an attacker would (a negative ``Content-Length``, a body other than the one
signed). :func:`hall_signed` says whether an answer carries the hall's
signature for a given request's nonce.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import urllib.parse
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms

from device.records import GENESIS_HASH, seal
from hall import auth, keys

EVALUATIONS = "/api/v1/evaluations"


@dataclasses.dataclass
class Signer:
    """A device as the hall sees it: an id and what it signs with."""

    device_id: str
    key: str | ed25519.Ed25519PrivateKey

    @classmethod
    def ed25519(cls, device_id: str) -> Signer:
        return cls(device_id, ed25519.Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> str:
        assert not isinstance(self.key, str)
        return keys.public_key_text(self.key.public_key())

    def sign(self, method: str, url: str, body: bytes, created: float | None = None,
             nonce: str | None = None) -> tuple[dict[str, str], str]:
        """The signature headers for a request, and its nonce."""
        nonce = nonce or os.urandom(16).hex()
        return auth.sign_request(self.key, self.device_id, method, url, body, created, nonce), nonce


@dataclasses.dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        """The header's value ("" when the answer has none)."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")


def exchange(url: str, raw: bytes, timeout: float = 10.0) -> Reply:
    """Send raw request bytes to the hall at ``url`` and read one answer (the connection then closed)."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"no answer: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Reply(status, headers, rest[:length])  # type: ignore[arg-type]


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"", host: str = "x",
                length: str | None = None) -> bytes:
    """The bytes of a request: ``length`` replaces the true ``Content-Length`` (an attacker's)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             f"Content-Length: {len(body) if length is None else length}",
             *(f"{n}: {v}" for n, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def send(hall_url: str, signer: Signer, method: str, path: str, payload: Any = None, *,
         sign_url: str | None = None, created: float | None = None, nonce: str | None = None,
         host: str | None = None) -> tuple[Reply, str]:
    """A signed request as a device sends it; returns the answer and the request's nonce."""
    body = b"" if payload is None else json.dumps(payload).encode()
    signing, nonce = signer.sign(method, (sign_url or hall_url) + path, body, created, nonce)
    authority = urllib.parse.urlsplit(hall_url).netloc
    return exchange(hall_url, raw_request(method, path, {"Content-Type": "application/json", **signing}, body,
                                          host=host or authority)), nonce


class _HallKey(HTTPSignatureKeyResolver):
    def __init__(self, key: Any) -> None:
        self.key = key

    def resolve_public_key(self, key_id: str) -> Any:
        if key_id != "hall":
            raise KeyError(key_id)
        return self.key

    def resolve_private_key(self, key_id: str) -> Any:
        raise KeyError(key_id)


@dataclasses.dataclass
class _Answer:
    status_code: int
    headers: dict[str, str]


def hall_signed(reply: Reply, nonce: str, key: str | ed25519.Ed25519PublicKey) -> bool:
    """Whether ``reply`` carries the hall's signature over its status, body and ``nonce``.

    ``key``: the hall's public key (a device on ``ed25519``) or the shared key (``hmac-sha256``).
    """
    if reply.header("Request-Nonce") != nonce:
        return False
    if isinstance(key, str):
        algorithm: Any = algorithms.HMAC_SHA256
        material: Any = key.encode()
    else:
        algorithm, material = algorithms.ED25519, key
    verifier = HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=_HallKey(material))
    try:
        verifier.verify(_Answer(reply.status, dict(reply.headers)), require_components=auth.ANSWER_COMPONENTS,
                        body=reply.body, max_age=None)
    except Exception:
        return False
    return True


def chain(device_id: str, count: int, start_seq: int = 1, prev: str = GENESIS_HASH,
          level: str = "satisfied") -> list[dict[str, Any]]:
    """``count`` sealed ratings following ``prev``."""
    satisfaction = {"very_satisfied": 5, "satisfied": 4, "basically_satisfied": 3, "dissatisfied": 2,
                    "very_dissatisfied": 1}[level]
    events = []
    for i in range(count):
        fields = {"id": str(uuid.uuid4()), "type": "rating", "device_id": device_id, "window_no": "01",
                  "staff_no": "1001", "staff_name": "张三", "level": level, "satisfaction": satisfaction,
                  "channel": "5", "assess_number": 1, "suspect": False,
                  "occurred_at": f"2026-11-20T09:{i % 60:02d}:00+08:00", "clock_synced": True,
                  "boot_id": "boot-1", "mono_ms": 1000 * i}
        event = seal(fields, start_seq + i, prev)
        prev = event["hash"]
        events.append(event)
    return events


def batch(device_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"device_id": device_id, "sent_at": "2026-11-20T10:00:00+08:00", "events": events}
