"""One error base for the device, one subclass per layer.

Like gpiozero's ``exc.py``, each error is also the builtin it most resembles,
so callers that only know Python's own exceptions still catch it.
"""


class EvaluatorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EvaluatorError, ValueError):
    """The configuration is invalid.

    Attributes:
        problems: one ``(key, message)`` pair per bad key, all of them at once.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        lines = [f"{key}: {message}" for key, message in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class StorageError(EvaluatorError, OSError):
    """The outbox could not keep or read an event."""


class TransportError(EvaluatorError, ConnectionError):
    """The hall server could not be reached or gave no usable answer."""


class DisplayError(EvaluatorError, OSError):
    """The display could not be driven."""


class FontError(EvaluatorError, LookupError):
    """The font is missing or lacks a character that must be shown."""


class QRFitError(EvaluatorError, ValueError):
    """A QR code does not fit the space it must be shown in."""
