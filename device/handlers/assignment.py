"""The configuration in use, and the hall's assignment on it: what the panel shows and whom a rating credits.

The loop's thread is the one owner of what is in use and of ``assignment.json``
beside the outbox: the hall link hands a new assignment in
(:class:`~device.queue.hall.AssignmentChanged`), the console a committed
configuration (:class:`Reconfigure`) or a factory reset (:meth:`InUse.forget`),
and only this module changes them.

Values from the hall never stop the device and never credit the wrong person
(DESIGN.md Behaviour): control characters become spaces (shown and recorded),
a glyph the font lacks □ and an over-long QR URL the window's own QR (shown
only), each replacement reported as the ``assignment`` fault. An assignment
that cannot be applied at all stops crediting the staff member it replaced:
ratings carry the window only, and the fault says so in Status and the heartbeat.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device import service_link
from device import state as st
from device.checks import check_screens, fit_to_screen, qr_fits
from device.config import restart_keys
from device.loop import Command
from device.queue.hall import Assignment, AssignmentChanged, load_assignment, save_assignment
from device.records import Origin
from device.ui import care
from device.view import Identity

if TYPE_CHECKING:
    from device.config import Config, Secret
    from device.loop import Loop

logger = logging.getLogger(__name__)

#: The file the hall's last assignment is kept in, in the outbox's folder.
ASSIGNMENT_FILE = "assignment.json"


@dataclass(eq=False)
class Reconfigure(Command):
    """Take a committed configuration (and a new key, if one was committed) into use."""

    config: Config
    key: Secret | None = None


def assignment_path(config: Config) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(config.outbox.path)), ASSIGNMENT_FILE)


def clean_text(text: str) -> str:
    """``text`` with every control character (a newline, a tab, an escape) as a space."""
    return "".join(" " if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029") else c for c in text)


def clean_assignment(assignment: Assignment) -> tuple[Assignment, list[tuple[str, str]]]:
    """The assignment with control characters in its texts as spaces, and what was replaced."""
    problems: list[tuple[str, str]] = []

    def clean(key: str, text: str) -> str:
        cleaned = clean_text(text)
        if cleaned != text:
            problems.append((key, f"{text!r} has control characters; shown and recorded as {cleaned!r}"))
        return cleaned

    reasons = tuple((level, clean(f"reasons.{level}.{code}.code", code), clean(f"reasons.{level}.{code}", text))
                    for level, code, text in assignment.reasons)
    return dataclasses.replace(
        assignment, window_no=clean("window.no", assignment.window_no),
        window_name=clean("window.name", assignment.window_name), staff_no=clean("staff.no", assignment.staff_no),
        staff_name=clean("staff.name", assignment.staff_name), staff_dept=clean("staff.dept", assignment.staff_dept),
        reasons=reasons), problems


class InUse:
    """The configuration in use on the loop's thread: committed, with the hall's assignment, and as shown.

    Args:
        loop: the loop whose rules follow the configuration.
        config: the committed configuration.
        size: the panel's frame size.
        path: where the hall's assignment is kept (empty: not kept).
        reconfigure_uplink: ``(config, key)``: hand a changed upload configuration or key to the uplink.
    """

    def __init__(self, loop: Loop, config: Config, size: tuple[int, int], *, path: str = "",
                 reconfigure_uplink: Callable[[Config, Secret | None], None] | None = None) -> None:
        self.loop = loop
        self.size = size
        self.path = path
        self.reconfigure_uplink = reconfigure_uplink
        self.committed = config
        #: What was replaced or could not be applied, for Status and the heartbeat (empty: nothing).
        self.fault = ""
        self._use(config)
        self.origin = Origin.from_config(config)

    def _use(self, config: Config) -> None:
        """Show ``config`` (the records' :attr:`origin` is set by the caller)."""
        self.config = config
        self.identity = Identity.from_config(config)
        self.reasons = config.reasons.by_level()
        self.reasons_version = config.reasons.version
        self.loop.rules = st.Rules.from_config(config, self.reasons, self.service_template(config))
        d, h = config.display, config.hours
        self.care_config = care.CareConfig(
            shift_every_s=d.shift_every_s, contrast=d.contrast, dim_contrast=d.dim_contrast,
            dim_after_s=d.dim_after_s, open_days=h.open_days, open_from=h.open_from,
            open_until=h.open_until, closed_dates=h.closed_dates)

    # --- handlers -----------------------------------------------------------------

    def register(self, loop: Loop) -> None:
        loop.register(AssignmentChanged, lambda e: self.apply(e.assignment))
        loop.register(Reconfigure, lambda c: self.reconfigure(c.config, c.key))
        loop.register(st.QrReplaced, self.qr_replaced)

    def service_template(self, config: Config) -> str:
        """``qr.service_url`` resolved, or ``""`` where the panel cannot show its longest link (window QR then)."""
        template = service_link.template_for(config.qr.service_url, config.qr.url)
        if template and not qr_fits(service_link.service_link(template, service_link.SAMPLE_SESSION), self.size):
            logger.warning("qr.service_url: a session's link is too long for the display; the window's QR is shown")
            return ""
        return template

    def qr_fits(self, url: str) -> bool:
        """Whether the panel can show a session's QR for ``url``."""
        return not url or qr_fits(url, self.size)

    def qr_replaced(self, effect: st.QrReplaced) -> None:
        self.fault = (f"session {effect.session_id}: its qr_url is too long for the display "
                      f"({effect.length} characters); the window's QR is shown")
        logger.warning("%s", self.fault)

    def reconfigure(self, config: Config, key: Secret | None = None) -> list[str]:
        """Take a committed configuration into use; returns the keys needing a restart.

        Raises:
            ConfigError: the screen cannot show what the configuration asks.
        """
        check_screens(config, self.size)
        restart = restart_keys(self.committed, config)
        old, self.committed = self.committed, config
        self._use(config)
        self.origin = Origin.from_config(config)
        self.fault = ""
        kept = load_assignment(self.path) if self.path else None
        if kept is not None:
            self.apply(kept, save=False)
        if self.reconfigure_uplink is not None and (
                key is not None or old.upload != config.upload or old.device.id != config.device.id):
            self.reconfigure_uplink(config, key)
        logger.info("configuration applied%s", f"; restart needed for {', '.join(restart)}" if restart else "")
        return restart

    def apply(self, assignment: Assignment, save: bool = True) -> None:
        """Show the hall's window, staff, QR and reasons as the screen can, and credit ratings to them.

        Never raises for the hall's values: what cannot be applied at all
        leaves the window's identity with nobody credited, as a fault.
        """
        try:
            self._apply(assignment)
        except Exception as e:
            # The staff member this assignment replaced is no longer on duty here: never credit them.
            logger.exception("assignment could not be applied")
            self._use(self._without_staff(self.committed))
            self.origin = Origin.from_config(self._without_staff(self.committed))
            self.fault = (
                f"the hall's assignment (staff {clean_text(assignment.staff_no)!r}) could not be applied "
                f"({type(e).__name__}: {e}); ratings carry the window only")
        if save and self.path:
            try:
                save_assignment(self.path, assignment)
            except OSError as e:
                logger.warning("assignment applied but not kept across reboots: %s", e)

    def _apply(self, assignment: Assignment) -> None:
        assignment, cleaned = clean_assignment(assignment)
        config = assignment.apply_to(self.committed)
        # What the screen cannot show gets a fallback (device.checks.fit_to_screen) and is reported;
        # the records keep the hall's values (control characters as spaces).
        shown, problems = fit_to_screen(config, self.size, fallback=self.committed)
        problems = cleaned + problems
        self.fault = ("assignment shown with fallbacks: " + "; ".join(
            f"{key}: {message}" for key, message in problems)) if problems else ""
        if problems:
            logger.warning("%s", self.fault)
        self._use(shown)
        self.origin = Origin.from_config(config)
        logger.info("assignment: window %s, staff %s (%s)", assignment.window_no, assignment.staff_no,
                    assignment.staff_name)

    @staticmethod
    def _without_staff(config: Config) -> Config:
        return dataclasses.replace(config, staff=dataclasses.replace(config.staff, no="", name="", dept=""))

    def forget(self) -> None:
        """Remove the kept assignment (a factory reset); the committed identity shows again."""
        if self.path:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self._use(self.committed)
        self.origin = Origin.from_config(self.committed)
        self.fault = ""
