"""Put first on a child's ``PYTHONPATH`` by :class:`sim.fakepi.pi.FakePi`: its modules stand in for the Pi's
kernel-facing libraries (``lgpio``, ``smbus2``, ``spidev``), and ``sitecustomize`` boots the fake kernel.
``RPi.GPIO`` is the real rpi-lgpio (as on Bookworm), over the fake ``lgpio``. Imported as a package only by
the type checker and the linter."""
