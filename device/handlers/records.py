"""Record keeping on the loop's thread: the outbox's one writer.

Commits the state machine asks for (a rating, an unrated session, a detail),
with their outcome posted back to the loop (thanks only once a rating is on
disk); the open session's marker beside the outbox; the ``clock`` event once
the boot's clock is trustworthy; and the WAL checkpoint while idle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device import state as st
from device.errors import StorageError
from device.session_marker import SessionMarker

if TYPE_CHECKING:
    from device.clock import Clocks
    from device.handlers.assignment import InUse
    from device.loop import Loop
    from device.queue.outbox import Outbox
    from device.records import RecordFactory

logger = logging.getLogger(__name__)

#: How often the idle loop copies the outbox's WAL into the database.
CHECKPOINT_EVERY_S = 30.0


class Records:
    """The outbox's writer: commits, the session marker, clock events, checkpoints.

    Args:
        loop: the loop (its state, and where outcomes go).
        outbox: the :class:`~device.queue.outbox.Outbox`.
        records: the :class:`~device.records.RecordFactory`.
        clocks: :class:`~device.clock.Clocks`.
        in_use: whom a record credits (:attr:`~device.handlers.assignment.InUse.origin`).
        wake_uplink: called after each event kept.
    """

    def __init__(self, loop: Loop, outbox: Outbox, records: RecordFactory, clocks: Clocks, in_use: InUse,
                 wake_uplink: Callable[[], None]) -> None:
        self.loop = loop
        self.outbox = outbox
        self.records = records
        self.clocks = clocks
        self.in_use = in_use
        self.wake_uplink = wake_uplink
        self.marker = SessionMarker(os.path.dirname(os.path.abspath(outbox.path)))
        #: The session whose marker is on disk (or was tried), if any.
        self._marked: str | None = None
        self._clock_checked = False
        self._checkpointed_at = clocks.monotonic()

    def register(self, loop: Loop) -> None:
        loop.register(st.CommitRating, self.commit_rating)
        loop.register(st.CommitUnrated, lambda e: self.keep(self.records.unrated(self.in_use.origin, e.session)))
        loop.register(st.CommitDetail, lambda e: self.keep(self.records.detail(
            self.in_use.origin, e.rating_id, e.reason_codes, self.in_use.reasons_version, e.session)))
        loop.register(st.PressIgnored, lambda e: logger.info("press of button %d ignored: %s", e.button, e.why))
        loop.register(st.SessionSkipped, lambda e: logger.info(
            "session %s already recorded; not opened again", e.session_id))
        loop.after_input(self.mark_session)
        loop.when_idle(self.housekeeping)
        loop.at_stop(self.drop_marker)

    # --- commits ---------------------------------------------------------------------

    def commit_rating(self, effect: st.CommitRating) -> None:
        fields = self.records.rating(self.in_use.origin, effect.level, effect.session, effect.suspect)
        try:
            event = self._append(fields)
        except StorageError as e:
            self.loop.post(st.CommitFailed(str(e)))
            return
        # Thanks only now that it is on disk.
        self.loop.post(st.RatingCommitted(effect.level, event["id"]))

    def keep(self, fields: dict[str, Any]) -> None:
        """Append one event (an unrated session, a detail); a failure is logged (nothing waits on it)."""
        try:
            self._append(fields)
        except StorageError:
            pass

    def _append(self, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            event = self.outbox.append(fields)
        except StorageError as e:
            logger.error("%s not kept: %s", fields["type"], e)
            raise
        logger.info("%s kept as seq %d%s", fields["type"], event["seq"], " (suspect)" if fields.get("suspect") else "")
        self.wake_uplink()
        return event

    # --- the open session's marker ----------------------------------------------------

    def mark_session(self) -> None:
        """Keep a newly opened session beside the outbox (it replaces a replaced session's marker)."""
        session = self.loop.state.session
        if session is not None and session.session_id != self._marked:
            self._marked = session.session_id
            self.marker.write(session)

    def drop_marker(self) -> None:
        """Remove the marker of a session that has ended (its event is on disk), off the press path."""
        if self._marked is None or self.loop.state.session is not None:
            return
        self._marked = None
        self.marker.remove()

    def recover_open_session(self) -> None:
        """A marker left by a power cut: its session ends as one ``unrated`` event, unless it has an event."""
        session = self.marker.read()
        if session is None:
            return
        if not self.outbox.has_session(session.session_id):
            try:
                event = self.outbox.append(self.records.unrated(self.in_use.origin, session))
            except StorageError as e:
                logger.error("session %s cut by a power loss not recorded (tried at the next start): %s",
                             session.session_id, e)
                return
            logger.info("session %s cut by a power loss: unrated kept as seq %d", session.session_id, event["seq"])
            self.wake_uplink()
        self.marker.remove()

    # --- off the press path -------------------------------------------------------------

    def housekeeping(self) -> None:
        """Work kept off the press path: done when the loop waited for nothing."""
        self.drop_marker()
        self.keep_clock_event()
        now = self.clocks.monotonic()
        if self.loop.state.screen == st.IDLE and now - self._checkpointed_at >= CHECKPOINT_EVERY_S:
            self._checkpointed_at = now
            self.outbox.checkpoint()

    def keep_clock_event(self) -> None:
        """Append the ``clock`` event once this boot's clock has become trustworthy (NTP or the hall).

        The loop is the outbox's one writer, so the event is made here; from
        it anyone holding the events dates every event this boot stamped
        before the clock was set (DESIGN.md Records).
        """
        if not self._clock_checked:
            # A process before this one in the same boot may have stamped events unsynced and
            # stopped before its clock was set: the oldest waiting event tells.
            self._clock_checked = True
            oldest = self.outbox.oldest_waiting()
            if oldest is not None and oldest.get("boot_id") == self.clocks.boot_id \
                    and oldest.get("clock_synced") is False:
                self.clocks.stamped_unsynced()
        source = self.clocks.clock_event_due()
        if not source:
            return
        try:
            event = self.outbox.append(self.records.clock(self.in_use.origin, source))
        except StorageError as e:
            logger.error("clock event not kept (tried again later): %s", e)
            return
        self.clocks.clock_event_kept()
        logger.info("clock set by %s: clock event kept as seq %d", source, event["seq"])
        self.wake_uplink()
