"""Wi-Fi for Improv provisioning: NetworkManager on the Pi.

A backend (:class:`WifiBackend`) has three methods: ``connect(ssid,
password)`` (raises :class:`~device.errors.NetworkError` on failure),
``scan() -> list[WifiNetwork]`` and ``is_connected() -> bool``. The Wi-Fi
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


class WifiBackend(Protocol):
    """What Improv provisioning needs of the Wi-Fi."""

    def connect(self, ssid: str, password: str) -> None:
        """Join ``ssid``; raises NetworkError (without the password in it) on failure."""

    def scan(self) -> list[WifiNetwork]:
        """The networks in reach, strongest first."""

    def is_connected(self) -> bool:
        """Whether a Wi-Fi network is joined now."""


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
