"""HTTP to the hall server: one signed request, one verified and bounded answer, one deadline.

What goes on the wire (paths, headers, signing, verification, limits) is
:mod:`device.queue.wire`'s; this module only carries it, over the standard
library's :mod:`http.client` on a socket of its own, because that is the
one way to hold a request to one deadline: every connect, TLS handshake,
write and read is given only the time left of ``timeout`` seconds for the
whole request, so a server that dribbles a byte a second (in its headers or
its body) cannot hold the uploader longer than that. Answers are read within
their size limit and verified before anything else looks at them.

Every failure to get a usable answer (refused, reset, timeout, TLS, an
answer over its size limit, an answer that does not verify) becomes a
:class:`~device.errors.TransportError` naming the server; an answer that
does not verify is its subclass :class:`~device.errors.UnauthenticatedAnswer`
and is never shown to the caller. The device key is held by
:class:`Secret`, which never shows itself in a repr, a log line or an
exception.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import random
import select
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from device.clock import Clocks
from device.config import Secret
from device.errors import TransportError, UnauthenticatedAnswer
from device.keys import ED25519, HMAC_SHA256, Ed25519PrivateKey, Ed25519Signing
from device.queue import wire

logger = logging.getLogger(__name__)

#: Bytes read from the socket at a time while an answer is read in.
READ_CHUNK = 64 << 10
#: Standing faults a transport may carry (see :attr:`HttpTransport.faults`).
INSECURE_HTTP = "insecure_http"
TLS_UNVERIFIED = "tls_unverified"
PLAIN_HTTP_REFUSED = "plain_http_refused"
#: ``ed25519`` without the hall's public key: no answer can verify.
NO_HALL_KEY = "no_hall_public_key"
class Headers(Mapping[str, str]):
    """An answer's header fields, looked up case-insensitively; repeated lines kept in :attr:`lines`."""

    def __init__(self, lines: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = lines.items() if isinstance(lines, Mapping) else lines
        self.lines = [(str(name), str(value)) for name, value in pairs]
        self._values: dict[str, str] = {}
        self._names: dict[str, str] = {}
        for name, value in self.lines:
            key = name.lower()
            self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value
            self._names.setdefault(key, name)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __repr__(self) -> str:
        return f"Headers({self.lines!r})"


@dataclass
class Reply:
    """A verified answer: status, headers and the parsed JSON (or None).

    ``headers`` is case-insensitive whatever it is given, so
    ``reply.headers.get(wire.RETRY_AFTER)`` finds a ``retry-after`` too.
    """

    status: int
    headers: Headers = field(default_factory=Headers)
    data: Any = None
    text: str = ""
    #: The hall's time (Unix seconds) the answer was signed at.
    hall_time: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)


class Transport(Protocol):
    """What the workers need of a transport: :class:`HttpTransport`, or a test's fake."""

    def request(self, method: str, path: str, obj: object = None,
                headers: Mapping[str, str] | None = None, *, probe: bool = False) -> Reply: ...

    def close(self) -> None: ...


# --- one deadline for everything a request does on its socket ------------------------

class _Deadline:
    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.at = monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; ``TimeoutError`` once there are none."""
        left = self.at - self.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline passed")
        return left


class _DeadlineSocket:
    """A connected socket that gives each write and read only the time left of the request.

    http.client reads through :meth:`makefile`; the socket is closed when
    both the connection and the last reader are done with it (like a
    socket's own ``makefile``).
    """

    def __init__(self, sock: socket.socket, owner: _Connection) -> None:
        self.sock = sock
        self.owner = owner
        self._readers = 0
        self._closed = False

    def _arm(self) -> None:
        deadline = self.owner.deadline
        self.sock.settimeout(deadline.remaining() if deadline is not None else None)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self._arm()
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_Reader(self))

    def fileno(self) -> int:
        return self.sock.fileno()

    def dropped(self) -> bool:
        """Whether the server closed this idle connection (it is readable: EOF or an alert)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and self._readers <= 0:
            self.sock.close()

    def close(self) -> None:
        self._closed = True
        if self._readers <= 0:
            self.sock.close()


class _Reader(io.RawIOBase):
    def __init__(self, owner: _DeadlineSocket) -> None:
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.owner.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self.owner.reader_closed()
        super().close()


class _Connection(http.client.HTTPConnection):
    """http.client's connection, connecting (and shaking hands) within the request's deadline."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        # Before super(): it reads default_port to tell the Host header's port.
        self.default_port = 443 if context is not None else 80
        super().__init__(host, port)
        self.context = context
        self.deadline: _Deadline | None = None

    def connect(self) -> None:
        deadline = self.deadline or _Deadline(30.0, time.monotonic)
        sock = socket.create_connection((self.host, self.port), deadline.remaining())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                # A handshake's timeout is its whole duration (Python >= 3.5): the time left.
                sock.settimeout(deadline.remaining())
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self)


# --- the transport -------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (plain HTTP is allowed to it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpTransport:
    """Signed JSON requests to one hall server on one kept-alive connection.

    A transport belongs to one thread: the worker it is handed to uses and
    closes it.

    Args:
        base_url: e.g. ``https://hall.example.org``. Plain ``http://`` only to
            a loopback address, or with ``insecure_http``.
        device_id: who signs the requests.
        key: the shared device key (:class:`Secret`, ``hmac-sha256``), or
            :class:`~device.keys.Ed25519Signing` (the device's key pair and
            the hall's public key, ``ed25519``).
        timeout: seconds for a whole request: connect, handshake, sending and
            reading the answer, together (``upload.timeout_s``).
        verify: ``True`` (the system's CAs), a CA bundle path
            (``upload.ca_bundle``), or ``False`` (no certificate check: a
            standing fault).
        insecure_http: allow plain HTTP to a host that is not this machine
            (``upload.insecure_http``; a standing fault).
        clocks: the device's :class:`~device.clock.Clocks`: signs with the
            hall's time when it is known, and learns it from every verified answer.
        monotonic: the clock the deadline is kept with.
    """

    def __init__(self, base_url: str, device_id: str, key: Secret | str | Ed25519Signing, timeout: float = 10.0,
                 verify: bool | str = True, *, insecure_http: bool = False, clocks: Clocks | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        parts = urllib.parse.urlsplit(base_url.strip())
        self.scheme = (parts.scheme or "http").lower()
        self.host = parts.hostname or ""
        default = 443 if self.scheme == "https" else 80
        try:
            self.port = parts.port or default
        except ValueError:
            self.port = default
        authority = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default:
            authority += f":{self.port}"
        #: ``scheme://authority`` as signed in ``@target-uri`` and sent in ``Host``.
        self.base_url = f"{self.scheme}://{authority}"
        self.device_id = device_id
        #: The ``ed25519`` keys, or None with the shared key.
        self.signing = key if isinstance(key, Ed25519Signing) else None
        self.key = Secret("") if isinstance(key, Ed25519Signing) else key if isinstance(key, Secret) else Secret(key)
        #: ``upload.signature`` in use: ``"ed25519"`` or ``"hmac-sha256"``.
        self.algorithm = ED25519 if self.signing is not None else HMAC_SHA256
        self.timeout = timeout
        self.verify = verify
        self.clocks = clocks or Clocks()
        self.monotonic = monotonic
        self._context: ssl.SSLContext | None = None
        self._conn: _Connection | None = None
        self.refused = ""
        faults: list[str] = []
        if self.scheme not in ("http", "https") or not self.host:
            self.refused = f"{base_url!r} is not an http(s) URL with a host"
        elif self.scheme == "http" and not is_loopback(self.host):
            if insecure_http:
                faults.append(INSECURE_HTTP)
            else:
                self.refused = (f"plain HTTP to {self.host} is refused: use https://, or set "
                                "upload.insecure_http = true")
                faults.append(PLAIN_HTTP_REFUSED)
        if self.scheme == "https" and verify is False:
            faults.append(TLS_UNVERIFIED)
        if self.signing is not None and self.signing.hall is None and not self.refused:
            self.refused = "upload.signature is ed25519 but no upload.hall_public_key is set: no answer can verify"
            faults.append(NO_HALL_KEY)
        #: Standing faults of this transport's configuration, for Status and the heartbeat.
        self.faults: tuple[str, ...] = tuple(faults)

    def use_clocks(self, clocks: Clocks) -> None:
        """Sign with, and teach, these clocks (the worker that owns the transport hands its own)."""
        self.clocks = clocks

    # --- one request ------------------------------------------------------------------

    def pending_key(self) -> str:
        """The fingerprint of the next key while a rotation waits for the hall to know it, else ``""``."""
        pending = self.signing.keys.pending_info() if self.signing is not None else None
        return pending.fingerprint if pending is not None else ""

    def _keys(self, probe: bool) -> tuple[wire.SigningKey, wire.VerifyingKey]:
        if self.signing is None:
            return self.key, self.key
        hall = self.signing.hall
        assert hall is not None  # refused at construction otherwise
        pending = self.signing.keys.pending if probe else None
        return (pending or self.signing.keys.current), hall

    def request(self, method: str, path: str, obj: object = None,
                headers: Mapping[str, str] | None = None, *, probe: bool = False) -> Reply:
        """Send one signed request and read its verified answer, all within ``timeout`` seconds.

        A verified 401 refusing the request's ``created`` teaches the hall's
        time, and the request is signed again with it and sent once more at
        once (within the same deadline).

        Args:
            method: ``GET`` or ``POST``.
            path: from :mod:`~device.queue.wire` (with its query).
            obj: the JSON body, or None for none.
            headers: extra headers (e.g. :func:`wire.conditional`); they never
                replace the signature's.
            probe: sign with the next key of a rotation (``ed25519``); a
                verified 2xx to it makes that key the device's key.

        Returns:
            :class:`Reply` for any verified HTTP answer, whatever its status.

        Raises:
            UnauthenticatedAnswer: the answer does not verify as the hall's
                answer to this request.
            TransportError: no answer (refused, reset, timeout, TLS failure,
                plain HTTP refused, an answer over :func:`wire.answer_limit`).
        """
        if self.refused:
            raise TransportError(self.refused)
        deadline = _Deadline(self.timeout, self.monotonic)
        body = wire.encode(obj) if obj is not None else b""
        sign_key, verify_key = self._keys(probe)
        for attempt in (1, 2):
            signed = wire.sign_request(sign_key, self.device_id, method, wire.target_uri(self.base_url, path),
                                       body, self._signing_time())
            sent = {wire.ACCEPT_ENCODING: "identity", **(headers or {}), **signed.headers}
            if obj is not None:
                sent[wire.CONTENT_TYPE] = wire.JSON_TYPE
            status, lines, content = self._exchange(method, path, body if obj is not None else None, sent,
                                                    deadline, wire.answer_limit(path))
            verdict = wire.verify_answer(verify_key, signed, status, lines, content)
            if not verdict.ok:
                raise UnauthenticatedAnswer(f"{self.base_url} answered {status} but not as the hall "
                                            f"(unauthenticated_answer: {verdict.why})")
            if verdict.hall_time is not None:
                self.clocks.learn_hall_time(verdict.hall_time)
            data = wire.decode(content)
            if status == 401 and wire.error_code(data) == wire.STALE_REQUEST and attempt == 1:
                logger.warning("%s says the device's clock is off; signing with the hall's time", self.base_url)
                continue
            if probe and self.signing is not None and 200 <= status < 300 and isinstance(sign_key, Ed25519PrivateKey):
                self.signing.keys.promote(sign_key)
            return Reply(status, Headers(lines), data, content[:500].decode("utf-8", "replace"), verdict.hall_time)
        raise AssertionError("unreachable")  # pragma: no cover

    def _signing_time(self) -> float:
        # The hall judges ``created`` by its own clock: its time, once known, is always right there.
        hall = self.clocks.hall_now()
        return hall if hall is not None else self.clocks.wall().timestamp()

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                  deadline: _Deadline, limit: int) -> tuple[int, list[tuple[str, str]], bytes]:
        """One HTTP exchange on the kept-alive connection: ``(status, header lines, body)``."""
        try:
            conn = self._connection()
            conn.deadline = deadline
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            try:
                lines = response.getheaders()
                content = self._read(response, limit)
            finally:
                response.close()
            if response.will_close:
                self._drop()
            return response.status, lines, content
        except TransportError:
            self._drop()
            raise
        except TimeoutError:
            self._drop()
            raise TransportError(f"{self.base_url} did not answer within {self.timeout:g} s") from None
        except ssl.SSLError as e:
            self._drop()
            raise TransportError(f"TLS failure talking to {self.base_url}: {_short(e)}") from None
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise TransportError(f"cannot reach {self.base_url}: {_short(e) or type(e).__name__}") from None

    def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and isinstance(conn.sock, _DeadlineSocket) and conn.sock.dropped():
            self._drop()  # the server closed it while idle: a new one, before anything is sent
            conn = None
        if conn is None:
            conn = self._conn = _Connection(self.host, self.port, self._tls_context())
        return conn

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        if self._context is None:
            try:
                if isinstance(self.verify, str):
                    context = ssl.create_default_context(cafile=self.verify)
                else:
                    context = ssl.create_default_context()
                    if self.verify is False:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
            except OSError as e:
                # A CA bundle path that does not exist, or is not PEM.
                raise TransportError(f"TLS set-up for {self.base_url} failed (CA bundle {self.verify!r}): "
                                     f"{_short(e)}") from None
            self._context = context
        return self._context

    def _read(self, response: http.client.HTTPResponse, limit: int) -> bytes:
        """The answer's body, or TransportError as soon as it passes ``limit`` bytes."""
        declared = response.getheader(wire.CONTENT_LENGTH, "") or ""
        if declared.strip().isdigit() and int(declared) > limit:
            raise TransportError(f"{self.base_url} sent an answer of {int(declared)} bytes; "
                                 f"the most read is {limit}")
        content = bytearray()
        while True:
            chunk = response.read(min(READ_CHUNK, limit + 1 - len(content)))
            if not chunk:
                return bytes(content)
            content += chunk
            if len(content) > limit:
                raise TransportError(f"{self.base_url} sent an answer of more than {limit} bytes; "
                                     "the rest is not read")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._drop()


class Backoff:
    """Capped exponential delays with jitter for retrying a server: never zero, so never a busy loop.

    The n-th delay in a row is drawn from ``[base/2, base]`` with
    ``base = min(max_s, min_s * 2**n)``, so devices that failed together do
    not all come back in the same second.

    Args:
        min_s, max_s: the bounds of the delay.
        rand: uniform in [0, 1), injectable so tests know the delay.
    """

    def __init__(self, min_s: float, max_s: float, rand: Callable[[], float] = random.random) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.rand = rand
        #: Failures in a row so far.
        self.failures = 0

    def next(self, floor: float = 0.0) -> float:
        """The delay after one more failure, at least ``floor`` and at most ``max_s``."""
        base = min(self.max_s, self.min_s * (2 ** self.failures))
        self.failures = min(self.failures + 1, 30)
        return min(max(floor, base * (0.5 + 0.5 * self.rand())), self.max_s)

    def within(self, seconds: float) -> float:
        """A wait the server asked for, kept within the bounds."""
        return min(max(seconds, self.min_s), self.max_s)

    def reset(self) -> None:
        """A success: the next failure starts from ``min_s`` again."""
        self.failures = 0


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "…"
