"""HTTP to the hall server: signing, and turning failures into one error type.

Every request carries ``X-Device-Id`` and
``X-Signature: hex(HMAC-SHA256(device_key, body_bytes))``. The device key is
held by :class:`Secret`, which never shows itself in a repr, a log line or
an exception.
"""

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field

import requests

from device.config import Secret
from device.errors import TransportError

logger = logging.getLogger(__name__)


def sign(key, body):
    """Hex HMAC-SHA256 of ``body`` (bytes) under ``key`` (a str or Secret)."""
    raw = key.reveal() if isinstance(key, Secret) else key
    return hmac.new(raw.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode(obj):
    """The exact bytes sent (and signed) for a JSON body."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class Reply:
    """What the server answered: status, headers and the parsed JSON (or None)."""

    status: int
    headers: dict = field(default_factory=dict)
    data: object = None
    text: str = ""


class HttpTransport:
    """Signed JSON requests to one hall server with a pooled ``requests.Session``.

    Args:
        base_url: e.g. ``https://hall.example.org``.
        device_id: sent as ``X-Device-Id``.
        key: the device key (:class:`Secret`).
        timeout: seconds for connect and for read.
        verify: ``True``, ``False`` or a CA bundle path (requests' meaning).
        session: a ``requests.Session`` to use (passed in for tests).
    """

    def __init__(self, base_url, device_id, key, timeout=10.0, verify=True, session=None):
        self.base_url = base_url.rstrip("/")
        self.device_id = device_id
        self.key = key if isinstance(key, Secret) else Secret(key)
        self.timeout = timeout
        self.verify = verify
        self.session = session or requests.Session()

    def request(self, method, path, obj=None, headers=None):
        """Send one signed request.

        Returns:
            :class:`Reply` for any HTTP answer, whatever its status.

        Raises:
            TransportError: no HTTP answer (refused, reset, timeout, TLS failure).
        """
        body = encode(obj) if obj is not None else b""
        all_headers = {
            "X-Device-Id": self.device_id,
            "X-Signature": sign(self.key, body),
        }
        if obj is not None:
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        all_headers.update(headers or {})
        url = self.base_url + path
        try:
            response = self.session.request(
                method, url, data=body, headers=all_headers, timeout=self.timeout, verify=self.verify)
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
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        return Reply(response.status_code, dict(response.headers), data, response.text[:500])

    def close(self):
        self.session.close()


def _short(error):
    text = str(error)
    return text if len(text) < 200 else text[:200] + "…"
