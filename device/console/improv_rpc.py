"""Improv serial RPCs: current state, device info, Wi-Fi scan and Wi-Fi settings.

Only the serial protocol's states and errors are used (DESIGN.md, Serial
console): the state is ready or provisioned whether or not the console is
locked. While it is locked, Wi-Fi settings are answered with "unknown
error" and a JSON line saying why (the technician's terminal shows it; an
Improv client skips the line). A frame whose checksum fails is answered
with "invalid RPC packet". Wi-Fi is joined through a
:class:`~device.network.WifiBackend`; the password is never logged or kept.
The hardware name is the board's model from the device tree.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from device.console import improv
from device.errors import ImprovError

if TYPE_CHECKING:
    from device.console.auth import Auth
    from device.control import DeviceControl
    from device.network import WifiBackend

logger = logging.getLogger(__name__)

FIRMWARE_NAME = "Window Evaluator"
#: Where the board names itself: the device tree's model (a Pi), then the firmware's DMI name (a PC).
MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model", "/sys/class/dmi/id/product_name")
#: What a locked console answers beside the "unknown error" state.
LOCKED = {"ok": False, "error": "not_authorized", "improv": "wifi_settings",
          "message": "Wi-Fi settings need an authorised console: send Auth <PIN> (or hold buttons 1 and 5 while "
                     "the device starts), then send them again"}


def board_model(files: Sequence[str] = MODEL_FILES) -> str:
    """The board's model, e.g. ``Raspberry Pi Zero 2 W Rev 1.0``; else the machine (``x86_64``)."""
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                model = f.read().strip("\0\n ")
        except OSError:
            continue
        if model:
            return model
    return platform.machine() or "unknown"


class ImprovRpc:
    """Answers Improv frames and tells the client of state changes.

    Args:
        device: for the device's name (its id).
        network: the Wi-Fi backend, or ``None`` (Wi-Fi RPCs then fail cleanly).
        auth: whether the console is authorised now.
        send_frame: writes one frame (``None`` is nothing to write).
        firmware: the version reported in the device info.
        send_line: writes one JSON answer line (why Wi-Fi settings were refused).
        on_refused: counts a refused frame (the console logs a summary line per minute at most).
        model: the hardware name reported in the device info (default :func:`board_model`).
    """

    def __init__(self, device: DeviceControl, network: WifiBackend | None, auth: Auth,
                 send_frame: Callable[[bytes | None], None], firmware: str,
                 send_line: Callable[[dict[str, Any]], None] | None = None, model: str | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.device = device
        self.network = network
        self.auth = auth
        self.send_frame = send_frame
        self.send_line = send_line
        self.on_refused = on_refused
        self.firmware = firmware
        self.model = model or board_model()
        self.state = improv.ImprovState(improv.State.READY)
        self._wifi_connected: bool | None = None

    @property
    def client_seen(self) -> bool:
        """True once a client spoke Improv on this port."""
        return self.state.client_seen

    def _wifi_up(self) -> bool:
        if self._wifi_connected is None:
            try:
                self._wifi_connected = bool(self.network and self.network.is_connected())
            except Exception:
                logger.exception("cannot read the Wi-Fi state")
                self._wifi_connected = False
        return self._wifi_connected

    def _state_now(self) -> improv.State:
        return improv.State.PROVISIONED if self._wifi_up() else improv.State.READY

    def network_changed(self) -> None:
        """The Wi-Fi was changed elsewhere (the ``Wifi`` command): read its state again and tell the client."""
        self._wifi_connected = None
        self.refresh()

    def refresh(self) -> None:
        """Tell an Improv client of a state change it has not heard of yet."""
        if not self.state.client_seen or self.state.state == improv.State.PROVISIONING:
            return
        self.send_frame(self.state.set_state(self._state_now()))

    def _error(self, error: improv.Error) -> None:
        self.send_frame(self.state.set_error(error, force=True))

    def invalid_packet(self) -> None:
        """A frame that failed its checksum (or version, or length): "invalid RPC packet"."""
        self.state.client_seen = True
        self._error(improv.Error.INVALID_RPC)

    def handle(self, frame: improv.Frame) -> None:
        """Answer one frame from the client."""
        self.state.client_seen = True
        if frame.type != improv.PacketType.RPC:
            logger.debug("Improv packet of type %d from the client ignored", frame.type)
            return
        try:
            rpc = improv.parse_rpc(frame.data)
        except ImprovError:
            self._error(improv.Error.INVALID_RPC)
            return
        command = rpc.command
        if command not in tuple(improv.Command):
            self._error(improv.Error.UNKNOWN_RPC)
            return
        # The spec: a new RPC clears the error state first.
        self.send_frame(self.state.set_error(improv.Error.NONE))
        if command == improv.Command.REQUEST_STATE:
            state = self._state_now()
            self.send_frame(self.state.set_state(state, force=True))
            if state == improv.State.PROVISIONED:
                self.send_frame(improv.result_frame(command, []))
        elif command == improv.Command.REQUEST_INFO:
            name = self.device.current_config().device.id
            self.send_frame(improv.result_frame(command, [FIRMWARE_NAME, self.firmware, self.model[:64], name]))
        elif command == improv.Command.REQUEST_SCAN:
            self._scan()
        else:
            self._wifi(rpc.payload)

    def _scan(self) -> None:
        if self.network is None:
            self._error(improv.Error.UNKNOWN)
            return
        try:
            networks = self.network.scan()
        except Exception as e:
            logger.warning("Wi-Fi scan failed: %s", e)
            self._error(improv.Error.UNKNOWN)
            return
        for n in networks:
            ssid = n.ssid.encode("utf-8")[:64].decode("utf-8", "ignore")
            self.send_frame(improv.result_frame(improv.Command.REQUEST_SCAN,
                                                [ssid, str(n.rssi), "YES" if n.secured else "NO"]))
        self.send_frame(improv.result_frame(improv.Command.REQUEST_SCAN, []))

    def _wifi(self, payload: bytes) -> None:
        if not self.auth.authorized():
            if self.on_refused is not None:
                self.on_refused("improv_locked")  # counted into the console's summary line: frames can flood
            else:
                logger.warning("Improv Wi-Fi settings refused: console locked")
            self._error(improv.Error.UNKNOWN)
            if self.send_line is not None:
                self.send_line(dict(LOCKED))
            return
        try:
            ssid, password = improv.parse_wifi_settings(payload)
        except ImprovError:
            self._error(improv.Error.INVALID_RPC)
            return
        if self.network is None:
            self._error(improv.Error.UNABLE_TO_CONNECT)
            return
        self.send_frame(self.state.set_state(improv.State.PROVISIONING))
        try:
            self.network.connect(ssid, password)
        except Exception as e:
            # The backend keeps the password out of its messages; log the type and text only.
            logger.warning("Improv: cannot join Wi-Fi %r: %s", ssid, e)
            self._wifi_connected = None
            self.state.state = improv.State.READY  # so the next refresh reports a change
            self._error(improv.Error.UNABLE_TO_CONNECT)
            self.send_frame(self.state.set_state(self._state_now(), force=True))
            return
        finally:
            del password
        self._wifi_connected = True
        self.send_frame(self.state.set_state(improv.State.PROVISIONED))
        self.send_frame(improv.result_frame(improv.Command.WIFI_SETTINGS, []))
