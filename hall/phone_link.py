"""The link a service's QR code and SMS carry: ``<public URL>/S/<code>``, read case-insensitively.

The code is the session's UUID (16 bytes) in RFC 4648 base32 without padding, 26 characters, as the device makes
it (``device/service_link.py``; the hall imports nothing from ``device/``, so both ends spell it out).
"""

from __future__ import annotations

import base64
import uuid


def session_ids(code: str) -> tuple[str, str] | None:
    """The two spellings (dashed, hex) of the session UUID a code names, or None for no valid code."""
    code = code.strip().upper()
    if len(code) != 26 or not code.isalnum():
        return None
    try:
        raw = base64.b32decode(code + "======")
    except ValueError:
        return None
    if len(raw) != 16 or base64.b32encode(raw).decode().rstrip("=") != code:
        return None  # a code with stray trailing bits is not one the device made
    session = uuid.UUID(bytes=raw)
    return str(session), session.hex


def code_of(session_id: str) -> str | None:
    """The code of a session id (a UUID in any spelling), or None."""
    try:
        raw = uuid.UUID(session_id).bytes
    except (ValueError, AttributeError, TypeError):
        return None
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def link(public_url: str, session_id: str) -> str:
    """The service's link as the device shows it (upper case, QR alphanumeric mode); ``""`` for no UUID."""
    code = code_of(session_id)
    return f"{public_url.rstrip('/')}/S/{code}".upper() if code else ""


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the phone pages (not the device API)."""
    lower = path.lower()
    return lower == "/" or lower.startswith(("/s/", "/w/")) or lower == "/w"
