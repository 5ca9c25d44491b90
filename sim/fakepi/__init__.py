"""The fake Raspberry Pi: the production program runs on it, unchanged, in a child process.

Only the lowest, kernel-facing modules are replaced, by importable packages
in ``sim/fakepi/libs`` put first on the child's ``PYTHONPATH``: ``lgpio``
(what gpiozero's ``LGPIOFactory`` calls), ``smbus2`` (luma's ``i2c``),
``spidev`` (luma's ``spi``). ``RPi.GPIO`` (luma's DC/RST lines) is the real
rpi-lgpio, as on Bookworm, over the fake lgpio, picking its chip from the
fake sysfs. gpiozero's real pin factory and luma's real bus classes run
above them.

- :mod:`sim.fakepi.kernel`: what the Linux kernel would hold: GPIO lines
  with their pulls, claims and edge alerts (delivered through lgpio's
  notification pipe, made in its working directory as the real one does),
  the I²C and SPI buses with the devices that answer on them, and a record
  of every byte written to a bus.
- :mod:`sim.fakepi.control`: a Unix socket in the child through which a
  test drives lines (presses buttons, with sub-millisecond timing) and
  reads the bus record back.
- :mod:`sim.fakepi.pi`: the test's side: :class:`~sim.fakepi.pi.FakePi`
  lays out the fake root (device-tree model and revision, ``/dev`` nodes,
  wiring), starts the program and talks to its kernel.
- :mod:`sim.fakepi.panels`: panel controllers that decode the bus bytes
  back into panel RAM and the picture on the glass.

Nothing here imports ``device`` but its panel models (``device.panels``, data: which controller a model
has): the fake Pi is hardware, not the program.
"""
