"""Wi-Fi for Improv provisioning: NetworkManager on the Pi.

A backend (:class:`WifiBackend`) has four methods: ``connect(ssid,
password)`` (raises :class:`~device.errors.NetworkError` on failure),
``scan() -> list[WifiNetwork]``, ``is_connected() -> bool`` and
``info() -> NetworkInfo`` (what ``Status network`` shows: SSID, signal, IP). The Wi-Fi
password is never logged, never put into an error message and never kept
after the attempt. The simulator's stand-in is ``sim.wifi.FakeNetworkBackend``.
"""

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from device.errors import NetworkError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WifiNetwork:
    ssid: str
    rssi: int          # dBm, as Improv reports it
    secured: bool


@dataclass(frozen=True)
class NetworkInfo:
    """The network as ``Status network`` shows it (``None``: not known, or not joined).

    Attributes:
        connected: whether a Wi-Fi network is joined.
        ssid: the network's name.
        signal_dbm: its signal in dBm (-50 strong, -90 barely).
        ip: the device's IPv4 address on it.
        interface: the Wi-Fi interface.
    """

    connected: bool
    ssid: str | None = None
    signal_dbm: int | None = None
    ip: str | None = None
    interface: str | None = None


def signal_words(dbm: int | None) -> str:
    """A signal in words, as a technician judges it (the usual Wi-Fi bands)."""
    if dbm is None:
        return "unknown"
    return "excellent" if dbm >= -55 else "good" if dbm >= -67 else "fair" if dbm >= -75 else "weak"


class WifiBackend(Protocol):
    """What Improv provisioning needs of the Wi-Fi."""

    def connect(self, ssid: str, password: str) -> None:
        """Join ``ssid``; raises NetworkError (without the password in it) on failure."""

    def scan(self) -> list[WifiNetwork]:
        """The networks in reach, strongest first."""

    def is_connected(self) -> bool:
        """Whether a Wi-Fi network is joined now."""

    def info(self) -> NetworkInfo:
        """The joined network's name, signal and the device's address on it."""


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "****") if secret else text


def _split_terse(line: str) -> list[str]:
    """Split a line of ``nmcli -t`` output, where ``\\:`` is a literal colon."""
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


class NmcliBackend:
    """Wi-Fi through NetworkManager's ``nmcli``, run with an argument list (no shell).

    The password goes to nmcli as an argument, as ``nmcli device wifi
    connect`` expects; it is visible to local processes for the seconds the
    command runs, which on a single-purpose device is acceptable, and it is
    never logged.

    Args:
        interface: the Wi-Fi interface (e.g. ``wlan0``); empty lets nmcli choose.
        timeout_s: how long nmcli may try to connect.
        run: ``subprocess.run`` (injected by tests).
    """

    def __init__(self, interface: str = "", timeout_s: float = 45.0,
                 run: Callable[..., Any] = subprocess.run) -> None:
        self.interface = interface
        self.timeout_s = timeout_s
        self._run = run

    def _nmcli(self, args: list[str], secret: str = "", timeout: float | None = None) -> str:
        try:
            result = self._run(["nmcli", *args], capture_output=True, text=True,
                               timeout=timeout or self.timeout_s + 15, check=False)
        except FileNotFoundError:
            raise NetworkError("nmcli is not installed (NetworkManager is needed for Wi-Fi)") from None
        except subprocess.TimeoutExpired:
            raise NetworkError("nmcli did not finish in time") from None
        except OSError as e:
            raise NetworkError(f"cannot run nmcli: {e.strerror}") from None
        if result.returncode != 0:
            message = _scrub((result.stderr or result.stdout or "").strip(), secret)
            raise NetworkError(f"nmcli failed ({result.returncode}): {message[:200]}")
        return str(result.stdout)

    def connect(self, ssid: str, password: str) -> None:
        args = ["--wait", str(int(self.timeout_s)), "device", "wifi", "connect", ssid]
        if password:
            args += ["password", password]
        if self.interface:
            args += ["ifname", self.interface]
        logger.info("joining Wi-Fi %r", ssid)
        self._nmcli(args, secret=password)
        logger.info("joined Wi-Fi %r", ssid)

    def scan(self) -> list[WifiNetwork]:
        out = self._nmcli(["-t", "-f", "SSID,SIGNAL,SECURITY", "device", "wifi", "list", "--rescan", "auto"],
                          timeout=30)
        best: dict[str, WifiNetwork] = {}
        for line in out.splitlines():
            fields = _split_terse(line)
            if len(fields) < 3 or not fields[0]:
                continue
            try:
                signal = int(fields[1])
            except ValueError:
                continue
            # nmcli reports signal quality in percent; Improv shows dBm. The
            # usual mapping: 100 % is -50 dBm, 0 % is -100 dBm.
            network = WifiNetwork(fields[0], signal // 2 - 100, fields[2] not in ("", "--"))
            if network.ssid not in best or best[network.ssid].rssi < network.rssi:
                best[network.ssid] = network
        return sorted(best.values(), key=lambda n: -n.rssi)

    def is_connected(self) -> bool:
        try:
            out = self._nmcli(["-t", "-f", "TYPE,STATE", "device"], timeout=10)
        except NetworkError as e:
            logger.warning("cannot read the Wi-Fi state: %s", e)
            return False
        return any(_split_terse(line)[:2] == ["wifi", "connected"] for line in out.splitlines())

    def info(self) -> NetworkInfo:
        try:
            out = self._nmcli(["-t", "-f", "ACTIVE,SSID,SIGNAL,DEVICE", "device", "wifi", "list", "--rescan", "no"],
                              timeout=10)
        except NetworkError as e:
            logger.warning("cannot read the Wi-Fi state: %s", e)
            return NetworkInfo(connected=False)
        for line in out.splitlines():
            fields = _split_terse(line)
            if len(fields) >= 3 and fields[0] == "yes":
                try:
                    dbm: int | None = int(fields[2]) // 2 - 100
                except ValueError:
                    dbm = None
                interface = fields[3] if len(fields) > 3 and fields[3] else (self.interface or None)
                return NetworkInfo(True, fields[1], dbm, self._ip(interface), interface)
        return NetworkInfo(connected=False)

    def _ip(self, interface: str | None) -> str | None:
        if not interface:
            return None
        try:
            out = self._nmcli(["-t", "-f", "IP4.ADDRESS", "device", "show", interface], timeout=10)
        except NetworkError:
            return None
        for line in out.splitlines():
            _, _, value = line.partition(":")
            if value:
                return value.split("/")[0]
        return None
