"""The technician's serial console: command lines and Improv frames on one port.

Commands are Tasmota style and case-insensitive: ``StaffName`` reads,
``StaffName 李四`` stages a change; ``Commit`` validates everything staged as
a whole, writes it atomically and applies it. Changes need authorisation:
the PIN (``Auth``), physical presence (buttons held at boot), or a
factory-new device without a PIN. Every answer is one JSON line
(``{"ok": true, ...}`` or ``{"ok": false, "error": code, "message": text}``);
nothing secret is echoed or logged.

The modules:

* :mod:`~device.console.port`: :class:`Console`, the worker that reads the
  port, dispatches and answers;
* :mod:`~device.console.framing`: :class:`Splitter` (bytes to lines, frames
  and problems);
* :mod:`~device.console.commands`: what a command table is made of (a
  command is one entry: handler, authorisation, help);
* the feature tables: :mod:`~device.console.settings` (reads, ``Get``,
  ``Set``, ``DeviceKey``), :mod:`~device.console.auth` (``Auth``, ``Pin``,
  ``Lock``, presence), :mod:`~device.console.staging` (``Commit``,
  ``Discard``, ``FactoryReset``), :mod:`~device.console.selftest`
  (``Test``), :mod:`~device.console.actions` (``Help``, ``Status`` and its
  sections, ``Queue``, ``Upload``, ``Restart``), :mod:`~device.console.wifi`
  (``Wifi``), and ``device.console.keys`` (``PublicKey``, ``RotateKey``) when
  it is there;
* :mod:`~device.console.improv` (the Improv serial protocol's bytes) and
  :mod:`~device.console.improv_rpc` (answering its RPCs).

The console touches the device only through a :class:`~device.control.DeviceControl`.
"""

from device.console.framing import Line, Problem, Splitter
from device.console.port import Console, ConsoleStatus

__all__ = ["Console", "ConsoleStatus", "Line", "Problem", "Splitter"]
