"""Put first on a child's ``PYTHONPATH`` by :class:`sim.fakepi.pi.FakePi`: its modules stand in for the Pi's
kernel-facing libraries (``lgpio``, ``smbus2``, ``spidev``, ``RPi.GPIO``), and ``sitecustomize`` boots the
fake kernel. Imported as a package only by the type checker and the linter."""
