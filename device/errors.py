"""One error base for the device, one subclass per layer.

Like gpiozero's ``exc.py``, each error is also the builtin it most resembles,
so callers that only know Python's own exceptions still catch it. Every error
the project raises on purpose is defined here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EvaluatorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EvaluatorError, ValueError):
    """The configuration is invalid.

    Attributes:
        problems: one ``(key, message)`` pair per bad key, all of them at once.
    """

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"{key}: {message}" for key, message in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class SettingsError(EvaluatorError, OSError):
    """A settings, key or PIN file could not be written or read."""


class StorageError(EvaluatorError, OSError):
    """The outbox could not keep or read an event."""


class OutboxFull(StorageError):
    """The outbox holds ``outbox.max_events`` undelivered events, or the disk is nearly full."""


class TransportError(EvaluatorError, ConnectionError):
    """The hall server could not be reached or gave no usable answer."""


class NetworkError(EvaluatorError, ConnectionError):
    """The Wi-Fi network could not be joined or queried."""


class SerialPortError(EvaluatorError, OSError):
    """The console port could not be opened or used."""


class DisplayError(EvaluatorError, OSError):
    """The display could not be driven."""


class FontError(EvaluatorError, LookupError):
    """The font is missing or lacks a character that must be shown."""


class QRFitError(EvaluatorError, ValueError):
    """A QR code does not fit the space it must be shown in."""


class LayoutError(EvaluatorError, ValueError):
    """The content cannot fit the panel even at the smallest font."""


class ImprovError(EvaluatorError, ValueError):
    """An Improv frame or RPC that cannot be used.

    Attributes:
        code: the Improv error number to report to the client
            (:class:`device.console.improv.Error`; 0x01 is "invalid RPC packet").
    """

    def __init__(self, message: str, code: int = 0x01) -> None:
        super().__init__(message)
        self.code = code


class CommandRefused(EvaluatorError):
    """A console command cannot be done: it becomes one ``{"ok": false}`` answer.

    Attributes:
        code: the answer's ``error`` (``not_authorized``, ``invalid_value`` ...).
        extra: further fields of the answer (never a secret).
    """

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class ProvisionError(EvaluatorError):
    """Ends a run of the host-side provisioning command.

    Attributes:
        code: the exit code (see :mod:`provision`).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class DeviceUnavailable(EvaluatorError, RuntimeError):
    """The device is in recovery: what was asked needs the parts that did not start."""


class UnauthenticatedAnswer(TransportError):
    """An answer that does not verify as the hall's answer to this request: no answer at all.

    Unsigned, signed with another key, or echoing another request's nonce: a
    captive portal, a proxy's error page or a rogue server look exactly like
    this, and so does a device key the hall does not hold.
    """


class PinLibraryError(EvaluatorError, ImportError):
    """No GPIO pin library could be loaded; the message names each one tried and why."""


class StorageDamaged(StorageError):
    """The outbox's database could not be opened as it was: it was kept aside and a new one started.

    Raised once, so the device shows the fault (in recovery) before it goes on
    with the new database; what could be read was copied into it and what
    was lost is counted (``Outbox.damage()``).
    """
