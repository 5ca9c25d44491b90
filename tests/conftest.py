import queue

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory


@pytest.fixture
def mock_factory():
    """A fresh MockFactory; the pin factory in force before the test is put back after it (as gpiozero's own)."""
    saved = Device.pin_factory
    factory = MockFactory()
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = saved


@pytest.fixture
def events():
    return queue.Queue()


@pytest.fixture
def hall(request, tmp_path):
    """The stand-in hall server on a free loopback port; the test module's KEY signs."""
    from hall import HallServer

    server = HallServer(tmp_path / "hall.db", default_key=getattr(request.module, "KEY", "test-key"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def outbox(tmp_path):
    from device.queue.outbox import Outbox

    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


@pytest.fixture
def make_app(tmp_path):
    """Build Apps on simulated hardware with a controlled clock: ``make_app(*overrides)``.

    The apps rate in ``session.source = "free"`` (a tap is a rating) unless an
    override says otherwise; the product's default is ``staff_button``.
    """
    from device import config as config_mod
    from device.app import App
    from device.clock import Clocks
    from device.config import Secret
    from device.hardware import staff_request
    from helpers import Clock
    from sim.hardware import make_sim_hardware

    made = []

    def make(*overrides):
        config = config_mod.load(overrides=[
            f"outbox.path=\"{tmp_path / 'outbox.db'}\"", "buttons.bounce_ms=0", 'session.source="free"',
            *overrides])
        hardware, factory = make_sim_hardware(config, queue.Queue(), staff_request)
        clock = Clock()
        app = App(config, hardware, Secret(""),
                  clocks=Clocks(monotonic=clock.monotonic, wall=lambda: clock.wall, synced=lambda: True))
        made.append((app, hardware))
        app.pump()
        return app, factory, clock

    yield make
    for app, hardware in made:
        app.outbox.close()
        hardware.close()
