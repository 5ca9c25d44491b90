"""Boots the fake Pi when an interpreter starts with ``$FAKEPI_ROOT`` set (see :mod:`sim.fakepi.boot`)."""

import os

if os.environ.get("FAKEPI_ROOT"):
    from sim.fakepi.boot import boot

    boot()
