"""HTTP to the hall server: one signed request, one bounded answer, one error type.

What goes on the wire (paths, headers, signing, verification, limits) is
:mod:`device.queue.wire`'s; this module only carries it. Every failure to get
a usable answer (refused, reset, timeout, TLS, an answer over its size
limit, an answer that does not verify) becomes one
:class:`~device.errors.TransportError` naming the server. The device key is
held by :class:`Secret`, which never shows itself in a repr, a log line or
an exception.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from requests.structures import CaseInsensitiveDict

from device.config import Secret
from device.errors import TransportError
from device.queue import wire

logger = logging.getLogger(__name__)

#: Bytes read from the socket at a time while an answer is streamed in.
READ_CHUNK = 64 << 10


@dataclass
class Reply:
    """What the server answered: status, headers and the parsed JSON (or None).

    ``headers`` is case-insensitive whatever mapping it is given, so
    ``reply.headers.get(wire.RETRY_AFTER)`` finds a ``retry-after`` too.
    """

    status: int
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    data: Any = None
    text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CaseInsensitiveDict):
            self.headers = CaseInsensitiveDict(self.headers)


class Transport(Protocol):
    """What the workers need of a transport: :class:`HttpTransport`, or a test's fake."""

    def request(self, method: str, path: str, obj: object = None,
                headers: Mapping[str, str] | None = None) -> Reply: ...

    def close(self) -> None: ...


class HttpTransport:
    """Signed JSON requests to one hall server with a pooled ``requests.Session``.

    A transport belongs to one thread (requests' sessions are not shared
    between threads): the worker it is handed to uses and closes it.

    Args:
        base_url: e.g. ``https://hall.example.org``.
        device_id: who signs the requests.
        key: the device key (:class:`Secret`).
        timeout: seconds for connect and for each read.
        verify: ``True``, ``False`` or a CA bundle path (requests' meaning).
        session: a ``requests.Session`` to use (passed in for tests).
    """

    def __init__(self, base_url: str, device_id: str, key: Secret | str, timeout: float = 10.0,
                 verify: bool | str = True, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self.key = key if isinstance(key, Secret) else Secret(key)
        self.timeout = timeout
        self.verify = verify
        self.session = session or requests.Session()

    def request(self, method: str, path: str, obj: object = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        """Send one signed request and read its answer within the contract's limit.

        Args:
            method: ``GET`` or ``POST``.
            path: from :mod:`~device.queue.wire` (with its query).
            obj: the JSON body, or None for none.
            headers: extra headers (e.g. :func:`wire.conditional`); they never
                replace the signature's.

        Returns:
            :class:`Reply` for any verified HTTP answer, whatever its status.

        Raises:
            TransportError: no usable answer (refused, reset, timeout, TLS
                failure, an answer over :func:`wire.answer_limit`, an answer
                that does not verify).
        """
        body = wire.encode(obj) if obj is not None else b""
        sent: dict[str, str] = dict(headers or {})
        if obj is not None:
            sent[wire.CONTENT_TYPE] = wire.JSON_TYPE
        signed = wire.sign_request(self.key, self.device_id, method, path, body)
        sent.update(signed)
        try:
            # stream=True: the answer is read in chunks below, never more than the limit.
            response = self.session.request(method, self.base_url + path, data=body, headers=sent,
                                             timeout=self.timeout, verify=self.verify, stream=True)
            try:
                content = self._read(response, wire.answer_limit(path))
            finally:
                response.close()
        except TransportError:  # an answer over the limit; an OSError too, so first
            raise
        except requests.exceptions.SSLError as e:
            raise TransportError(f"TLS failure talking to {self.base_url}: {_short(e)}") from None
        except requests.exceptions.Timeout:
            raise TransportError(f"{self.base_url} did not answer within {self.timeout:g} s") from None
        except requests.exceptions.RequestException as e:
            raise TransportError(f"cannot reach {self.base_url}: {_short(e)}") from None
        except OSError as e:
            # requests raises a bare OSError for a CA bundle path that does not exist.
            raise TransportError(f"TLS set-up for {self.base_url} failed (CA bundle {self.verify!r}): "
                                 f"{_short(e)}") from None
        answer_headers = CaseInsensitiveDict(response.headers)
        if not wire.verify_answer(self.key, signed, response.status_code, answer_headers, content):
            raise TransportError(f"{self.base_url} answered {response.status_code} without a valid "
                                 "signature (unauthenticated_answer)")
        return Reply(response.status_code, answer_headers, wire.decode(content),
                     content[:500].decode("utf-8", "replace"))

    def _read(self, response: requests.Response, limit: int) -> bytes:
        """The answer's body, or TransportError as soon as it passes ``limit`` bytes."""
        declared = response.headers.get(wire.CONTENT_LENGTH, "")
        if declared.isdigit() and int(declared) > limit:
            raise TransportError(f"{self.base_url} sent an answer of {int(declared)} bytes; "
                                 f"the most read is {limit}")
        content = bytearray()
        # Decoded bytes are counted: a small gzip bomb is cut off like a large answer.
        for chunk in response.iter_content(READ_CHUNK):
            content += chunk
            if len(content) > limit:
                raise TransportError(f"{self.base_url} sent an answer of more than {limit} bytes; "
                                     "the rest is not read")
        return bytes(content)

    def close(self) -> None:
        self.session.close()


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
