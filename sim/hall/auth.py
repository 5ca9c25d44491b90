"""Who sent a request: the v1 signing scheme, and the only place the hall checks it.

v1: the device names itself in ``X-Device-Id`` and sends the hex
HMAC-SHA256 of the request body under its key in ``X-Signature``. A later
scheme replaces :func:`authenticate` (and :func:`sign`, which tests and
tools use to speak v1); nothing else in the hall reads these headers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from email.message import Message

from sim.hall.contract import BadRequest

logger = logging.getLogger(__name__)

DEVICE_HEADER = "X-Device-Id"
SIGNATURE_HEADER = "X-Signature"


def sign(key: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body`` under ``key``, as ``X-Signature`` carries."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def claimed_device(headers: Message) -> str:
    """The device a request says it comes from, unchecked; ``""`` if none.

    For logs and for matching the body before the request is authenticated.
    """
    return headers.get(DEVICE_HEADER, "")


def authenticate(headers: Message, body: bytes, key_for: Callable[[str], str | None]) -> str:
    """Check that the request was signed by the device it names.

    Header lookups are case-insensitive (``headers`` is the request's
    :class:`email.message.Message`).

    Args:
        headers: the request headers.
        body: the raw request body, as signed.
        key_for: device id -> its key, or ``None`` for an unknown device.

    Returns:
        The authenticated device id.

    Raises:
        BadRequest: 401 for an unknown device or a bad signature.
    """
    device_id = claimed_device(headers)
    key = key_for(device_id) if device_id else None
    if key is None:
        raise BadRequest("unknown device", 401)
    signature = headers.get(SIGNATURE_HEADER, "").strip().lower()
    # Constant-time, so the answer's timing tells nothing about the right signature.
    if not hmac.compare_digest(signature.encode("ascii", "replace"), sign(key, body).encode()):
        logger.warning("bad signature from device %s", device_id)
        raise BadRequest("bad signature", 401)
    return device_id
