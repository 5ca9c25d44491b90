"""The open service session, kept beside the outbox so a power cut cannot lose it.

When a session opens the loop writes its fields here (atomically, mode 0600,
no secrets); when it ends the marker goes. A marker found at start means the
power went while a citizen could still rate: that session ends as one
``unrated`` event, unless the outbox already holds an event of it.
"""

from __future__ import annotations

import json
import logging
import os

from device import state as st
from device.settings import write_atomic

logger = logging.getLogger(__name__)

#: The marker's name, in the outbox's folder.
SESSION_MARKER = "open-session.json"
#: The session's fields the marker keeps.
MARKED_FIELDS = ("session_id", "ticket", "project_no", "task_code", "task_name", "qr_url")


class SessionMarker:
    """The marker file of the one session that may be open.

    Args:
        folder: the outbox's folder.
    """

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, SESSION_MARKER)

    def write(self, session: st.Session) -> None:
        data = {name: getattr(session, name) for name in MARKED_FIELDS}
        try:
            write_atomic(self.path, json.dumps(data, ensure_ascii=False).encode("utf-8"))
        except Exception as e:
            # Rating goes on; only a power cut during this session would now go unrecorded.
            logger.warning("open session %s not marked: %s", session.session_id, e)

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("session marker %s not removed: %s", self.path, e)

    def read(self) -> st.Session | None:
        """The session a power cut left open, or None (an unreadable marker is removed)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            session = st.Session(opened_at=0.0, deadline=0.0, **{k: str(data.get(k) or "") for k in MARKED_FIELDS})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as e:
            logger.warning("session marker %s unreadable, removed: %s", self.path, e)
            self.remove()
            return None
        return session if session.session_id else None
