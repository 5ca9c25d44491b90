"""What stops a start, and what a start would still lack: one answer for ``--check`` and the doctor.

``evaluator --check`` and ``evaluator doctor`` must never disagree on
whether the device would start. :func:`start_report` runs what the
supervisor runs before it builds the device (the configuration files,
``--set``, the committed settings, then :func:`device.checks.check_screens`
and :func:`device.checks.check_storage`, the checks ``Commit`` runs too) and
lists:

* **blockers**: the device would not start (it would stay in recovery, the
  console up, each key named);
* **warnings**: it would start, but something a technician must fix
  stands: with shared (``hmac-sha256``) keys, no device key means ratings
  are kept but never uploaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from device import config as config_mod
from device.checks import check_screens, check_storage, load_key
from device.errors import ConfigError, FontError
from device.settings import SettingsStore

#: What fixes a missing shared device key.
KEY_FIX = "DeviceKey <key> then Commit on the console (or evaluator-provision --hmac-keys)"


@dataclass
class StartReport:
    """What :func:`start_report` found.

    Attributes:
        config: the configuration a start would run (None when it cannot be built).
        blockers: ``(key or file, message)`` that would stop a start.
        warnings: ``(key, message)`` of a start that would lack something.
    """

    config: config_mod.Config | None = None
    blockers: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def would_start(self) -> bool:
        return not self.blockers

    def lines(self) -> list[str]:
        """The report as a person reads it, one line each."""
        if self.blockers:
            head = ["would NOT start (the console stays up in recovery); fix:"]
        elif self.warnings:
            head = ["would start, but:"]
        else:
            head = ["would start"]
        return head + [f"  {key}: {message}" for key, message in self.blockers + self.warnings]


def start_report(paths: Sequence[str] = (), overrides: Sequence[str] = ()) -> StartReport:
    """Check what a start would check, without starting (and without opening any hardware)."""
    report = StartReport()
    try:
        config = config_mod.load(paths, overrides)
        config = SettingsStore(config.console.settings_path, paths, overrides).load()
    except ConfigError as e:
        report.blockers += e.problems
        return report
    report.config = config
    try:
        check_screens(config, config_mod.frame_size(config))
    except ConfigError as e:
        report.blockers += e.problems
    except FontError as e:
        report.blockers.append(("font", str(e)))
    try:
        check_storage(config)
    except ConfigError as e:
        report.blockers += e.problems
    report.warnings += key_warnings(config)
    return report


def key_warnings(config: config_mod.Config) -> list[tuple[str, str]]:
    """A start without the device key it signs with: it keeps ratings but cannot deliver them."""
    if config.upload.signature != "hmac-sha256":
        # An Ed25519 device makes its own key pair; it needs the hall's public key to believe any answer.
        if config.upload.hall_public_key:
            return []
        return [("upload.hall_public_key", "no hall public key: no answer can be verified, so ratings are kept "
                                           "but not uploaded (a shared key in upload.key_file is used meanwhile, "
                                           "where there is one); set it from the hall: python -m hall keys hall")]
    path = config.upload.key_file
    try:
        key = load_key(path)
    except ConfigError as e:
        return list(e.problems)
    if not key:
        where = path if os.path.exists(path) else f"{path} (missing)"
        return [("upload.key_file", f"no device key in {where}: ratings are kept but not uploaded; {KEY_FIX}")]
    return []
