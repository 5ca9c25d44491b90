"""The console's requests that need the running device, each carried out on the loop's thread.

The console asks (:meth:`device.control.DeviceControl.ask`); the loop's
thread changes. ``Commit`` and ``FactoryReset`` write the settings file and
the device key here, never on the console's thread: the loop runs on the
supervisor's thread, which owns them (in recovery the supervisor itself
carries the same requests out, :meth:`device.supervisor.Supervisor.serve`).

A new request is a :class:`~device.loop.Command` subclass and one
``loop.register(Request, handler)`` in the composition root.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device import state as st
from device.loop import Command

if TYPE_CHECKING:
    from device.config import Config, Secret
    from device.loop import Loop

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class SetButtonTest(Command):
    """``Test buttons``: while ``sink`` is set, presses go to it and are never ratings."""

    sink: queue.Queue[int] | None


@dataclass(eq=False)
class UploadNow(Command):
    """``Upload``: send now, dead letters included."""


@dataclass(eq=False)
class CommitSettings(Command):
    """``Commit``: write the staged settings and key (``write``), then take ``config`` into use.

    ``write`` is made by the console (:mod:`device.console.staging`) and run
    by the files' owner: the loop's thread, or the supervisor's in recovery.
    The answer is the keys that need a restart.
    """

    write: Callable[[], None]
    config: Config
    key: Secret | None = None


@dataclass(eq=False)
class EraseSettings(Command):
    """``FactoryReset``: erase the settings and the device key (``erase``), forget the assignment, restart."""

    erase: Callable[[], None]


class ButtonTest:
    """The technician's button test: the state machine reports presses (:class:`~device.state.ButtonTested`)."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.sink: queue.Queue[int] | None = None

    def register(self, loop: Loop) -> None:
        loop.register(SetButtonTest, self.set)
        loop.register(st.ButtonTested, self.tested)

    def set(self, command: SetButtonTest) -> None:
        self.sink = command.sink
        # The state machine hears it as its next input, after this request.
        self.loop.post(st.ButtonTestSet(command.sink is not None))

    def tested(self, effect: st.ButtonTested) -> None:
        if self.sink is not None:
            self.sink.put(effect.button)


def upload_now(retry_rejected: Callable[[], None], wake: Callable[..., None]) -> Callable[[Any], None]:
    """``Upload``: a technician's Upload is also the command that sends dead letters again."""
    def handle(command: UploadNow) -> None:
        retry_rejected()
        wake(force=True)
    return handle


class NotApplied(Exception):
    """The settings were written but could not be taken into use (a restart applies them)."""


def commit_settings(reconfigure: Callable[[Config, Secret | None], list[str]],
                    committed: Callable[[Config], None] = lambda config: None) -> Callable[[Any], list[str]]:
    """``Commit`` on the loop's thread: the files first (nothing applied if they cannot be written), then use.

    Args:
        reconfigure: takes the configuration into use; returns the keys needing a restart.
        committed: told of the configuration now committed (the supervisor's, which reads answer from).

    Raises:
        SettingsError, OSError: from ``write``: nothing changed.
        NotApplied: written, not applied.
    """
    def handle(command: CommitSettings) -> list[str]:
        command.write()
        committed(command.config)
        try:
            return reconfigure(command.config, command.key)
        except Exception as e:
            logger.exception("committed settings could not be applied")
            raise NotApplied(f"{type(e).__name__}: {e}") from e
    return handle
