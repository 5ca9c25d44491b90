"""The loop's handlers: each input or effect the loop does not step goes to one of these.

The composition root (:mod:`device.app`) makes them and registers each in the
loop's table (:meth:`device.loop.Loop.register`). All run on the loop's
thread; other threads read only what they publish.

- :mod:`~device.handlers.assignment`: the configuration in use, the hall's assignment on it (kept in
  ``assignment.json``, whose one writer this is), and what is shown and credited from it.
- :mod:`~device.handlers.records`: commits to the outbox, the open session's marker, clock events, checkpoints.
- :mod:`~device.handlers.panel`: the screen with its OLED care and indicators, and the published status.
- :mod:`~device.handlers.commands`: the console's requests (test pattern, button test, upload, commit).
"""
