"""Wi-Fi for the simulator and tests: networks with known passwords.

The stand-in for :class:`device.network.NmcliBackend` behind the console's
Improv provisioning; it keeps the same rules (a failure is a
:class:`~device.errors.NetworkError` that never contains the password).
"""

import logging
from collections.abc import Mapping

from device.errors import NetworkError
from device.network import NetworkInfo, WifiNetwork

logger = logging.getLogger(__name__)


class FakeNetworkBackend:
    """Joins the networks it was given, with their passwords.

    Args:
        networks: ``{ssid: password}`` that can be joined (an empty password: an open network).
        rssi: ``{ssid: dBm}`` for the scan (default -60).
    """

    def __init__(self, networks: Mapping[str, str] | None = None, rssi: Mapping[str, int] | None = None) -> None:
        self.networks = dict(networks or {"HallNet": "hall-password"})
        self.rssi = dict(rssi or {})
        self.connected_to: str | None = None
        #: SSIDs tried, in order (never the passwords).
        self.attempts: list[str] = []

    def connect(self, ssid: str, password: str) -> None:
        self.attempts.append(ssid)
        if self.networks.get(ssid) != password:
            self.connected_to = None
            raise NetworkError(f"cannot join Wi-Fi {ssid!r}: no such network or wrong password")
        self.connected_to = ssid
        logger.info("joined Wi-Fi %r (simulated)", ssid)

    def scan(self) -> list[WifiNetwork]:
        return [WifiNetwork(ssid, self.rssi.get(ssid, -60), bool(pw)) for ssid, pw in self.networks.items()]

    def is_connected(self) -> bool:
        return self.connected_to is not None

    def info(self) -> NetworkInfo:
        if self.connected_to is None:
            return NetworkInfo(connected=False, interface="wlan0")
        # The simulator's network is this machine's loopback: the hall is reached there.
        return NetworkInfo(True, self.connected_to, self.rssi.get(self.connected_to, -60), "127.0.0.1", "wlan0")
