"""The errors of the hall's own records: what a supervisor's command may be refused with."""

from __future__ import annotations


class LedgerError(ValueError):
    """A supervisor's command that the records refuse, with the reason in words.

    Examples: no rating has that id, a fix for a rating that is not a 差评,
    an extension to a date before the current deadline, a second decision on
    an appeal. The command line prints the message and exits 1.
    """
