"""The link a session's QR code carries: it names the service, so the hall's phone page knows which one.

``qr.service_url`` is a template with ``{code}``; the code is the session's
UUID (16 bytes) in RFC 4648 base32 without padding, 26 characters. The whole
link is written in upper case, so the QR encoder can use QR's alphanumeric
mode (5.5 bits a character instead of 8): URL schemes and host names are
case-insensitive, and the hall reads its ``/S/`` path and the code
case-insensitively. ``HTTPS://HCP.EXAMPLE.ORG/S/`` and a code are 52
characters, a version 3 code at error correction L or a version 4 at M,
which fits a 128x64 panel's later screen.

``qr.service_url = "auto"`` (the default) derives the template from
``qr.url``'s scheme and host (``https://hcp.example.org/S/{code}``); an
empty value keeps the window's own code on the later and follow-up screens.
A session id that is not a UUID (an odd hall's) gets no link of its own.
"""

from __future__ import annotations

import base64
import urllib.parse
import uuid

#: The value of ``qr.service_url`` that derives the template from ``qr.url``.
AUTO = "auto"
#: The placeholder the session's code replaces.
PLACEHOLDER = "{code}"
#: A session id of the longest link, for checking once whether the panel can show it.
SAMPLE_SESSION = "0193a4b2-7c3d-7e5f-9a1b-2c3d4e5f6a7b"


def template_for(service_url: str, window_url: str) -> str:
    """The link template in use: ``service_url`` itself, derived from ``window_url`` (``auto``), or ``""``."""
    if service_url.strip().lower() != AUTO:
        return service_url.strip()
    parts = urllib.parse.urlsplit(window_url)
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}/S/{PLACEHOLDER}"


def service_code(session_id: str) -> str | None:
    """The session's 26-character code (base32 of its UUID's bytes, no padding), or None if not a UUID."""
    try:
        raw = uuid.UUID(session_id).bytes
    except (ValueError, AttributeError, TypeError):
        return None
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def service_link(template: str, session_id: str) -> str:
    """The session's link in upper case (QR alphanumeric mode); ``""`` without a template or a UUID."""
    code = service_code(session_id)
    if not template or code is None:
        return ""
    return template.replace(PLACEHOLDER, code).upper()


def valid_template(value: str) -> bool:
    """``auto``, empty, or an http(s) URL with a host and ``{code}`` once, all in QR's alphanumeric set."""
    value = value.strip()
    if value.lower() == AUTO or not value:
        return True
    if value.count(PLACEHOLDER) != 1:
        return False
    parts = urllib.parse.urlsplit(value.replace(PLACEHOLDER, "X"))
    return parts.scheme in ("http", "https") and bool(parts.hostname)
