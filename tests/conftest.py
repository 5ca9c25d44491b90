import queue

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory


@pytest.fixture
def mock_factory():
    factory = MockFactory()
    yield factory
    factory.reset()
    Device.pin_factory = None


@pytest.fixture
def events():
    return queue.Queue()


@pytest.fixture
def hall(request, tmp_path):
    """The stand-in hall server on a free loopback port; the test module's KEY signs."""
    from sim.hall_server import HallServer

    server = HallServer(tmp_path / "hall.db", default_key=getattr(request.module, "KEY", "test-key"))
    server.start()
    yield server
    server.close()
