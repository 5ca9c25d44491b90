"""Improv Wi-Fi over serial: frame encoding, decoding and the provisioning state.

The protocol (https://www.improv-wifi.com/serial/) frames every packet as::

    b"IMPROV" | version (1) | type | length | data (length bytes) | checksum

where the checksum is the sum of every byte before it, modulo 256. Clients
(the Improv JavaScript SDK among them) send a newline after each frame, and
the device does the same, so that a terminal user sees frames on lines of
their own and Improv clients can skip JSON lines up to the newline.

Only the serial protocol's states (ready, provisioning, provisioned) and
errors exist here: "authorization required" and "not authorized" belong to
Improv over Bluetooth, and serial clients (the JavaScript SDK, ESP Web
Tools) do not know them.

Everything here is pure: the console reads frames off the port and
:mod:`device.console.improv_rpc` decides what to answer; this module only
turns bytes into values and back.
"""

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from device.errors import ImprovError

HEADER = b"IMPROV"
VERSION = 1
#: Header, version, type and length: after these many bytes the frame's size is known.
PREFIX_LEN = len(HEADER) + 3
MAX_DATA = 255


class PacketType(enum.IntEnum):
    CURRENT_STATE = 0x01
    ERROR_STATE = 0x02
    RPC = 0x03
    RPC_RESULT = 0x04


class State(enum.IntEnum):
    """Provisioning state: the serial protocol's three."""

    READY = 0x02          # "Ready (Authorized)": credentials are accepted
    PROVISIONING = 0x03
    PROVISIONED = 0x04


class Error(enum.IntEnum):
    """Error state: the serial protocol's errors."""

    NONE = 0x00
    INVALID_RPC = 0x01      # "invalid RPC packet": a bad checksum, length or payload
    UNKNOWN_RPC = 0x02
    UNABLE_TO_CONNECT = 0x03
    UNKNOWN = 0xFF          # anything else (a locked console: a JSON line says why)


class Command(enum.IntEnum):
    WIFI_SETTINGS = 0x01
    REQUEST_STATE = 0x02
    REQUEST_INFO = 0x03
    REQUEST_SCAN = 0x04


@dataclass(frozen=True)
class Frame:
    type: int
    data: bytes


@dataclass(frozen=True)
class Rpc:
    command: int
    payload: bytes


def checksum(data: bytes) -> int:
    """Sum of ``data``'s bytes modulo 256 (the byte that ends every frame)."""
    return sum(data) & 0xFF


def encode_frame(packet_type: int, data: bytes = b"") -> bytes:
    """One frame, without the trailing newline.

    Raises:
        ValueError: ``data`` is longer than 255 bytes.
    """
    data = bytes(data)
    if len(data) > MAX_DATA:
        raise ValueError(f"Improv frame data is {len(data)} bytes; at most {MAX_DATA} fit")
    body = HEADER + bytes([VERSION, int(packet_type), len(data)]) + data
    return body + bytes([checksum(body)])


def frame_length(prefix: bytes | bytearray) -> int:
    """Total length of the frame whose first :data:`PREFIX_LEN` bytes are ``prefix``."""
    return PREFIX_LEN + prefix[PREFIX_LEN - 1] + 1


def decode_frame(frame: bytes | bytearray) -> Frame:
    """Check a whole frame (header to checksum) and return its type and data.

    Raises:
        ImprovError: wrong header, version, length or checksum.
    """
    frame = bytes(frame)
    if len(frame) < PREFIX_LEN + 1 or not frame.startswith(HEADER):
        raise ImprovError("not an Improv frame")
    if frame[6] != VERSION:
        raise ImprovError(f"unsupported Improv version {frame[6]}")
    if len(frame) != frame_length(frame):
        raise ImprovError("Improv frame length does not match its length byte")
    if checksum(frame[:-1]) != frame[-1]:
        raise ImprovError("Improv frame checksum does not match")
    return Frame(frame[7], frame[PREFIX_LEN:-1])


def encode_strings(strings: Iterable[str]) -> bytes:
    """Strings as Improv sends them: each one UTF-8 with a length byte before it."""
    out = bytearray()
    for s in strings:
        raw = s.encode("utf-8")
        if len(raw) > MAX_DATA:
            raise ValueError(f"Improv string of {len(raw)} bytes is too long")
        out.append(len(raw))
        out += raw
    return bytes(out)


def decode_strings(data: bytes) -> list[str]:
    """The inverse of :func:`encode_strings`.

    Raises:
        ImprovError: a length runs past the end, or a string is not UTF-8.
    """
    strings: list[str] = []
    i = 0
    while i < len(data):
        n = data[i]
        if i + 1 + n > len(data):
            raise ImprovError("Improv string runs past the end of the packet")
        try:
            strings.append(data[i + 1:i + 1 + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise ImprovError("Improv string is not UTF-8") from None
        i += 1 + n
    return strings


def encode_rpc(command: int, payload: bytes = b"") -> bytes:
    """The data of an RPC command frame (what a client sends)."""
    return bytes([int(command), len(payload)]) + bytes(payload)


def parse_rpc(data: bytes) -> Rpc:
    """Split an RPC command frame's data into command and payload.

    Raises:
        ImprovError: the inner length does not match the data.
    """
    if len(data) < 2:
        raise ImprovError("Improv RPC packet is too short")
    if data[1] != len(data) - 2:
        raise ImprovError("Improv RPC length does not match its data")
    return Rpc(data[0], bytes(data[2:]))


def parse_wifi_settings(payload: bytes) -> tuple[str, str]:
    """``(ssid, password)`` from the Send Wi-Fi settings payload.

    Raises:
        ImprovError: lengths do not add up, strings are not UTF-8 or the SSID is empty.
    """
    strings = decode_strings(payload)
    if len(strings) != 2:
        raise ImprovError("Wi-Fi settings need exactly an SSID and a password")
    ssid, password = strings
    if not ssid:
        raise ImprovError("the SSID is empty")
    return ssid, password


def state_frame(state: int) -> bytes:
    """Tell the client the provisioning state."""
    return encode_frame(PacketType.CURRENT_STATE, bytes([int(state)]))


def error_frame(error: int) -> bytes:
    """Tell the client the error state (``Error.NONE`` clears it)."""
    return encode_frame(PacketType.ERROR_STATE, bytes([int(error)]))


def result_frame(command: int, strings: Iterable[str] = ()) -> bytes:
    """An RPC result: the command answered, then the strings."""
    body = encode_strings(strings)
    return encode_frame(PacketType.RPC_RESULT, bytes([int(command), len(body)]) + body)


class ImprovState:
    """The provisioning state and error last told to the client.

    The console asks for frames through :meth:`set_state` and :meth:`set_error`;
    they return a frame only when the value changed (or when ``force`` is
    given), so the client hears of every change and nothing else.
    """

    def __init__(self, state: int = State.READY) -> None:
        self.state = State(state)
        self.error = Error.NONE
        #: True once a client spoke Improv on this port; before that no unasked
        #: frames are sent, so a terminal user does not see binary noise.
        self.client_seen = False

    def set_state(self, state: int, force: bool = False) -> bytes | None:
        new = State(state)
        if new == self.state and not force:
            return None
        self.state = new
        return state_frame(new)

    def set_error(self, error: int, force: bool = False) -> bytes | None:
        new = Error(error)
        if new == self.error and not force:
            return None
        self.error = new
        return error_frame(new)
