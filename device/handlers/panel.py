"""The panel as the loop's output: the view of the state with its OLED care and indicators, and the status.

After each turn of the loop :meth:`Panel.refresh` works out what the panel
should show (:func:`device.view.view`), applies OLED care (sleep outside
opening hours, dim, shift), tells the state machine when the panel sleeps or
wakes (a press on a sleeping panel only wakes it: the decision is
:func:`device.state.step`'s), and publishes :class:`~device.loop.LoopStatus`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device import __version__
from device import state as st
from device.loop import Command, LoopStatus
from device.screen import Screen, test_pattern
from device.ui import care
from device.ui.models import BootScreen, Indicators
from device.view import View, view

if TYPE_CHECKING:
    from device.clock import Clocks
    from device.handlers.assignment import InUse
    from device.loop import Loop
    from device.queue.outbox import Outbox

logger = logging.getLogger(__name__)

#: How long ``Test display`` keeps its pattern up.
TEST_PATTERN_S = 3.0


@dataclass(eq=False)
class ShowTestPattern(Command):
    """``Test display``: a checkerboard for a few seconds."""


class Panel:
    """Draws the state on the screen after each turn, and publishes the loop's status.

    Args:
        loop: the loop whose state is shown.
        screen: the panel's :class:`~device.screen.Screen`.
        in_use: what is shown (identity, reasons, care settings).
        outbox: for the backlog mark and a full outbox.
        clocks: :class:`~device.clock.Clocks`.
        offline: whether the uplink is not reaching the hall (the offline mark).
        service_info: extra lines for the technician's service screen (address, firmware, backlog).
    """

    def __init__(self, loop: Loop, screen: Screen, in_use: InUse, outbox: Outbox, clocks: Clocks, *,
                 offline: Callable[[], bool], service_info: Callable[[], tuple[str, ...]] = tuple) -> None:
        self.loop = loop
        self.screen = screen
        self.in_use = in_use
        self.outbox = outbox
        self.clocks = clocks
        self.offline = offline
        self.service_info = service_info
        self.last_activity = clocks.monotonic()

    def register(self, loop: Loop) -> None:
        loop.register(ShowTestPattern, lambda c: self.test_pattern())
        loop.at_start(self.boot)
        loop.after_turn(self.refresh)

    def boot(self) -> None:
        self.screen.show(BootScreen(__version__))
        c = self.in_use.config
        logger.info("device %s ready: window %s, session source %s", c.device.id, c.device.window_no,
                    self.loop.rules.source)

    def test_pattern(self) -> dict[str, Any]:
        now = self.clocks.monotonic()
        self.screen.hold(test_pattern(self.screen.size), now + TEST_PATTERN_S)
        return {"pattern": "checkerboard", "seconds": TEST_PATTERN_S}

    def refresh(self) -> None:
        """Redraw when what the screen should show has changed; publish the status."""
        loop = self.loop
        storage, reason = self.outbox.storage_state()
        full = storage == "full"
        if full != bool(loop.state.storage_full):
            loop.handle(st.StorageChanged(full, reason if full else ""))
        state = loop.state
        # Indicators show on the idle screen only: not worked out on the way to thanks.
        idle = state.screen == st.IDLE and state.session is None
        synced = self.clocks.is_synced()
        indicators = Indicators(
            offline=self.offline(), backlog=self.outbox.waiting(), clock_unset=not synced,
            storage_low=storage != "ok") if idle else Indicators()
        info = View(self.in_use.identity, indicators, reasons=self.in_use.reasons,
                    service_lines=self.service_info() if state.screen == st.SERVICE else (),
                    large_text=self.in_use.config.display.large_text)
        now = self.clocks.monotonic()
        if state.screen != st.IDLE:
            self.last_activity = now
        self.last_activity = max(self.last_activity, state.last_activity)
        self.screen.care_config = self.in_use.care_config
        cared = care.care(self.clocks.wall(), self.last_activity, now, self.in_use.care_config)
        if not synced:
            # Opening hours mean nothing on a clock that is not set yet: stay awake.
            cared = care.CareState(cared.shift, cared.contrast, False)
        self.screen.apply_care(cared)
        if self.screen.asleep != state.asleep:
            # The state machine decides what a press on a sleeping panel does.
            loop.handle(st.PanelSlept(self.screen.asleep))
        self.screen.show(view(loop.state, info, now), now)
        self.publish(synced)

    def publish(self, synced: bool) -> None:
        c, loop = self.in_use.config, self.loop
        status = LoopStatus(
            screen=loop.state.screen, source=loop.rules.source, device_id=c.device.id,
            window_no=c.device.window_no, staff_no=self.in_use.origin.staff_no, ignored_presses=loop.state.ignored,
            clock_synced=synced, display_fault=self.screen.fault, assignment_fault=self.in_use.fault)
        if status != loop.status:
            loop.status = status
