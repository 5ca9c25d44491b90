"""Improv serial: frames byte for byte, and the official client's framing against the console.

The client below (``OfficialClient``) reads and writes frames exactly as the
official JavaScript SDK does (improv-wifi/sdk-serial-js, after the spec at
https://www.improv-wifi.com/serial/) and imports nothing from ``device``: a
standard client initialises, scans and provisions Wi-Fi through the console,
and hears only the serial protocol's states and errors.
"""

import logging
import platform
import subprocess
import threading
from typing import ClassVar

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st
from test_console import FakeDeviceControl, ask

from device.console import Console, improv
from device.console.improv_rpc import board_model
from device.errors import ImprovError, NetworkError
from device.network import NmcliBackend
from device.settings import PinStore, SettingsStore
from sim.pty_port import PtyPort
from sim.wifi import FakeNetworkBackend

pytestmark = pytest.mark.timeout(30)

WIFI = {"HallNet": "hall-password-42", "Guest": ""}


# --- byte for byte ------------------------------------------------------------

def test_spec_example_wifi_settings_rpc_data():
    # The spec: SSID MyWirelessAP, password mysecurepassword -> 01 1E 0C {ssid} 10 {password}
    data = improv.encode_rpc(improv.Command.WIFI_SETTINGS,
                             improv.encode_strings(["MyWirelessAP", "mysecurepassword"]))
    assert data == bytes.fromhex("011e0c") + b"MyWirelessAP" + bytes.fromhex("10") + b"mysecurepassword"
    rpc = improv.parse_rpc(data)
    assert improv.parse_wifi_settings(rpc.payload) == ("MyWirelessAP", "mysecurepassword")


def test_request_state_frame_byte_for_byte():
    # "IMPROV" sums to 477; + version 1 + type 3 + length 2 + 02 00 = 485 -> 0xE5.
    frame = improv.encode_frame(improv.PacketType.RPC, improv.encode_rpc(improv.Command.REQUEST_STATE))
    assert frame == bytes.fromhex("494d50524f56 01 03 02 0200 e5".replace(" ", ""))
    assert improv.decode_frame(frame) == improv.Frame(3, b"\x02\x00")


def test_state_error_and_result_frames_byte_for_byte():
    assert improv.state_frame(improv.State.READY) == b"IMPROV\x01\x01\x01\x02" + bytes([0xE2])
    assert improv.error_frame(improv.Error.INVALID_RPC) == b"IMPROV\x01\x02\x01\x01" + bytes([0xE2])
    assert improv.error_frame(improv.Error.UNKNOWN) == b"IMPROV\x01\x02\x01\xff" + bytes([0xE0])
    # RPC result for device info: command 03, data length, then length-prefixed strings.
    frame = improv.result_frame(improv.Command.REQUEST_INFO, ["a", "bc"])
    body = b"IMPROV\x01\x04\x07\x03\x05\x01a\x02bc"
    assert frame == body + bytes([sum(body) & 0xFF])


def test_only_the_serial_protocols_states_and_errors_exist():
    # improv-wifi.com/serial: states 0x02-0x04 and errors 0x00-0x03, 0xFF. "Authorization required" (0x01)
    # and "not authorized" (0x04) are Improv over Bluetooth's, unknown to serial clients.
    assert {int(s) for s in improv.State} == {0x02, 0x03, 0x04}
    assert {int(e) for e in improv.Error} == {0x00, 0x01, 0x02, 0x03, 0xFF}


def test_the_hardware_name_is_the_boards_model(tmp_path):
    tree = tmp_path / "model"
    tree.write_bytes(b"Raspberry Pi Zero 2 W Rev 1.0\x00")
    dmi = tmp_path / "product_name"
    dmi.write_text("Standard PC (Q35 + ICH9, 2009)\n")
    assert board_model([str(tree), str(dmi)]) == "Raspberry Pi Zero 2 W Rev 1.0"
    assert board_model([str(tmp_path / "none"), str(dmi)]) == "Standard PC (Q35 + ICH9, 2009)"
    assert board_model([str(tmp_path / "none")]) == platform.machine()


@pytest.mark.parametrize("frame, why", [
    (b"IMPROV\x01\x01\x01\x02\x00", "checksum"),
    (b"IMPROV\x02\x01\x01\x02" + bytes([(477 + 2 + 1 + 1 + 2) & 0xFF]), "version"),
    (b"IMPROV\x01\x01\x05\x02" + bytes([(477 + 1 + 1 + 5 + 2) & 0xFF]), "length"),
    (b"IMPRO", "not an Improv frame"),
])
def test_bad_frames_are_refused(frame, why):
    with pytest.raises(ImprovError, match=why):
        improv.decode_frame(frame)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x05\x00", b"\x01\x01\x05"])
def test_bad_rpc_packets_are_refused(data):
    with pytest.raises(ImprovError):
        rpc = improv.parse_rpc(data)
        improv.parse_wifi_settings(rpc.payload)


def test_strings_longer_than_a_byte_cannot_be_encoded():
    with pytest.raises(ValueError):
        improv.encode_strings(["x" * 256])
    with pytest.raises(ValueError):
        improv.encode_frame(improv.PacketType.RPC, b"x" * 256)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(improv.PacketType)), st.binary(max_size=255))
def test_frames_round_trip(packet_type, data):
    assert improv.decode_frame(improv.encode_frame(packet_type, data)) == improv.Frame(packet_type, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_random_bytes_fails_only_with_improv_error(data):
    for fn in (improv.decode_frame, improv.decode_strings, improv.parse_rpc):
        try:
            fn(data)
        except ImprovError:
            pass


# --- the official client's framing ------------------------------------------------------

class ImprovClientError(Exception):
    """An RPC the device answered with an error state (the SDK rejects its promise)."""


class OfficialClient:
    """The Improv serial client's framing, as the official JavaScript SDK (sdk-serial-js) does it.

    Reading (``_processInput``): bytes up to a newline are a line; once nine
    bytes are in, a line that starts with ``IMPROV`` is a packet of
    ``9 + length + 1`` bytes, anything else is discarded up to its newline.
    A packet is accepted only with version 1 and a checksum equal to the sum
    of every byte before it, modulo 256. Writing (``writePacketToStream``):
    header, version, type, length, data, checksum, newline. An RPC is
    answered by its result, or rejected by an error state other than 0; a
    scan's results end with an empty one. Imports nothing from ``device``.
    """

    HEADER = b"IMPROV"
    CURRENT_STATE, ERROR_STATE, RPC, RPC_RESULT = 0x01, 0x02, 0x03, 0x04
    ERRORS: ClassVar[dict[int, str]] = {0x01: "INVALID_RPC_PACKET", 0x02: "UNKNOWN_RPC_COMMAND",
                                        0x03: "UNABLE_TO_CONNECT", 0xFF: "UNKNOWN_ERROR"}

    def __init__(self, path):
        self.port = serial.Serial(path, 115200, timeout=3)
        self.state = None
        self.error = 0
        #: Every accepted packet, in order: (type, data).
        self.packets = []
        #: Lines that were not Improv packets (the console's JSON answers).
        self.other_lines = []
        self._line = bytearray()
        self._is_improv = None
        self._length = 0

    def close(self):
        self.port.close()

    # writePacketToStream
    def write_packet(self, packet_type, data):
        payload = bytearray(self.HEADER + bytes([1, packet_type, len(data)]) + bytes(data))
        payload.append(sum(payload) & 0xFF)
        self.port.write(bytes(payload) + b"\n")

    def send_rpc(self, command, data=b""):
        self.write_packet(self.RPC, bytes([command, len(data)]) + bytes(data))

    # _processInput, one byte at a time
    def next_packet(self):
        while True:
            b = self.port.read(1)
            if not b:
                raise TimeoutError("no Improv packet")
            byte = b[0]
            if self._is_improv is False:
                if byte == 10:
                    self.other_lines.append(bytes(self._line))
                    self._is_improv, self._line = None, bytearray()
                else:
                    self._line.append(byte)
                continue
            if self._is_improv is True:
                self._line.append(byte)
                if len(self._line) == self._length:
                    line, self._is_improv, self._line = bytes(self._line), None, bytearray()
                    packet = self._accept(line)
                    if packet is not None:
                        return packet
                continue
            if byte == 10:
                self._line = bytearray()
                continue
            self._line.append(byte)
            if len(self._line) != 9:
                continue
            self._is_improv = bytes(self._line[:6]) == self.HEADER
            if not self._is_improv:
                continue    # the SDK drops the bytes; kept here to show the JSON lines
            self._length = 9 + self._line[8] + 1

    def _accept(self, line):
        """_handleIncomingPacket: version and checksum, else the packet is dropped."""
        version, packet_type, length = line[6], line[7], line[8]
        if version != 1 or sum(line[:-1]) & 0xFF != line[9 + length]:
            return None
        data = line[9:9 + length]
        if packet_type == self.CURRENT_STATE:
            self.state = data[0]
        elif packet_type == self.ERROR_STATE:
            self.error = data[0]
        self.packets.append((packet_type, data))
        return packet_type, data

    @staticmethod
    def strings(data):
        out, i = [], 2
        while i < 2 + data[1]:
            out.append(data[i + 1:i + 1 + data[i]].decode("utf-8"))
            i += data[i] + 1
        return out

    def _await(self, command, multiple=False):
        """_sendRPCWithResponse: the result for ``command``; an error state > 0 rejects."""
        received: list[bytes] = []
        while True:
            packet_type, data = self.next_packet()
            if packet_type == self.ERROR_STATE and data[0] > 0:
                raise ImprovClientError(self.ERRORS.get(data[0], f"UNKNOWN_ERROR ({data[0]})"))
            if packet_type == self.RPC_RESULT and data[0] == command:
                strings = self.strings(data)
                if not multiple:
                    return strings
                if not strings:
                    return received
                received.append(strings)

    # The SDK's public calls.
    def request_current_state(self):
        self.send_rpc(0x02)
        while True:
            packet_type, data = self.next_packet()
            if packet_type == self.ERROR_STATE and data[0] > 0:
                raise ImprovClientError(self.ERRORS.get(data[0]))
            if packet_type == self.CURRENT_STATE:
                break
        return self._await(0x02) if self.state == 0x04 else None

    def request_info(self):
        self.send_rpc(0x03)
        firmware, version, chip, name, *_os = self._await(0x03)
        return {"firmware": firmware, "version": version, "chipFamily": chip, "name": name}

    def scan(self):
        self.send_rpc(0x04)
        return [(name, int(rssi), secured != "NO") for name, rssi, secured in self._await(0x04, multiple=True)]

    def provision(self, ssid, password):
        s, p = ssid.encode(), password.encode()
        self.send_rpc(0x01, bytes([len(s)]) + s + bytes([len(p)]) + p)
        return self._await(0x01)


@pytest.fixture
def improv_rig(tmp_path):
    overrides = [f'upload.key_file="{tmp_path / "device.key"}"']
    store = SettingsStore(tmp_path / "settings.toml", [], overrides)
    device = FakeDeviceControl(store.load())
    network = FakeNetworkBackend(WIFI, rssi={"HallNet": -48})
    port = PtyPort()
    console = Console(port, device, store, PinStore(tmp_path / "console.pin"), network=network,
                      firmware="9.9.9")
    console.start()
    client = OfficialClient(port.path)
    yield client, console, network
    client.close()
    console.stop()
    port.close()


def test_official_client_initializes_scans_and_provisions(improv_rig, caplog):
    client, _, network = improv_rig
    caplog.set_level(logging.DEBUG)
    # initialize(): the current state, then the device information.
    assert client.request_current_state() is None and client.state == 0x02      # ready
    info = client.request_info()
    assert (info["firmware"], info["version"], info["name"]) == ("Window Evaluator", "9.9.9", "WE-0001")
    assert info["chipFamily"] == board_model()                                   # the board's model
    assert sorted(client.scan()) == [("Guest", -60, False), ("HallNet", -48, True)]
    assert client.provision("HallNet", WIFI["HallNet"]) == []
    assert network.connected_to == "HallNet" and client.state == 0x04
    # Once provisioned, a state request also brings an RPC result (as the SDK expects).
    assert client.request_current_state() == []
    # Only the serial protocol's states and errors ever came.
    assert {d[0] for t, d in client.packets if t == 0x01} <= {0x02, 0x03, 0x04}
    assert {d[0] for t, d in client.packets if t == 0x02} <= {0x00, 0x01, 0x02, 0x03, 0xFF}
    assert WIFI["HallNet"] not in caplog.text


def test_wrong_wifi_password_reports_unable_to_connect(improv_rig, caplog):
    client, _, network = improv_rig
    caplog.set_level(logging.DEBUG)
    client.request_current_state()
    with pytest.raises(ImprovClientError, match="UNABLE_TO_CONNECT"):
        client.provision("HallNet", "not-the-password")
    assert client.next_packet() == (0x01, bytes([0x02]))       # back to ready
    assert network.connected_to is None
    assert "not-the-password" not in caplog.text


def test_a_frame_with_a_bad_checksum_is_an_invalid_rpc_packet(improv_rig):
    client, _, _ = improv_rig
    frame = b"IMPROV\x01\x03\x02\x02\x00"
    client.port.write(frame + bytes([(sum(frame) + 1) & 0xFF]) + b"\n")
    assert client.next_packet() == (0x02, bytes([0x01]))        # invalid RPC packet
    # Then a line for a person at a terminal, which the client skips.
    client.request_current_state()
    assert any(b'"bad_frame"' in line for line in client.other_lines)
    assert client.packets[-2:] == [(0x02, bytes([0x00])), (0x01, bytes([0x02]))]   # the next RPC clears it


def test_locked_console_answers_unknown_error_and_a_line_saying_why(improv_rig, tmp_path):
    client, console, network = improv_rig
    console.pins.set("2468")
    assert client.request_current_state() is None and client.state == 0x02   # ready, locked or not
    with pytest.raises(ImprovClientError, match="UNKNOWN_ERROR"):
        client.provision("HallNet", WIFI["HallNet"])
    assert network.attempts == []
    # The technician's terminal reads why, on the line after the error state.
    why = ask(client.port, None)
    assert why["error"] == "not_authorized" and "Auth <PIN>" in why["message"]
    client.port.write(b"Auth 2468\r\n")
    assert ask(client.port, None)["ok"] is True
    # Authorised on the same port: the same RPC now works, and first clears the error, as the spec asks.
    assert client.provision("HallNet", WIFI["HallNet"]) == []
    assert client.packets[-4:] == [(0x02, bytes([0x00])), (0x01, bytes([0x03])), (0x01, bytes([0x04])),
                                   (0x04, bytes([0x01, 0x00]))]


def test_bad_and_unknown_rpcs_get_error_states(improv_rig):
    client, _, _ = improv_rig
    client.send_rpc(0x01, b"\x05ab")                      # SSID length runs past the end
    assert client.next_packet() == (0x02, bytes([0x01]))
    client.send_rpc(0x09)
    assert client.next_packet() == (0x02, bytes([0x02]))  # unknown RPC
    # The error is cleared by the next good RPC, as the spec asks.
    client.request_current_state()
    assert client.packets[-2:] == [(0x02, bytes([0x00])), (0x01, bytes([0x02]))]


def test_command_lines_and_frames_share_the_port(improv_rig):
    client, _, _ = improv_rig
    client.send_rpc(0x02)
    client.port.write(b"Status\r\n")
    # The Improv packet first, then the JSON line (which an Improv client skips).
    assert client.next_packet() == (0x01, bytes([0x02]))
    assert ask(client.port, None)["device_id"] == "WE-0001"


def test_improv_without_a_network_backend_fails_cleanly(tmp_path):
    store = SettingsStore(tmp_path / "settings.toml", [], [f'upload.key_file="{tmp_path / "k"}"'])
    with PtyPort() as port:
        console = Console(port, FakeDeviceControl(store.load()), store, PinStore(tmp_path / "pin"))
        console.start()
        client = OfficialClient(port.path)
        try:
            with pytest.raises(ImprovClientError, match="UNABLE_TO_CONNECT"):
                client.provision("HallNet", "x")
        finally:
            client.close()
            console.stop()


def test_console_thread_survives_improv_flood(improv_rig):
    client, _, _ = improv_rig
    frames = b"".join(improv.encode_frame(improv.PacketType.RPC, bytes([n, 0])) + b"\n" for n in range(256))
    writer = threading.Thread(target=client.port.write, args=(frames + b"\r\nStatus\r\n",))
    writer.start()
    client.port.timeout = 10
    try:
        while True:
            line = client.port.readline()
            assert line, "console stopped answering"
            if line.startswith(b"{") and b"device_id" in line:
                break
    finally:
        writer.join()


# --- the NetworkManager backend, with nmcli replaced ------------------------------

class FakeRun:
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.calls = []
        self.result = subprocess.CompletedProcess([], returncode, stdout, stderr)

    def __call__(self, args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def test_nmcli_connect_uses_an_argument_list_and_never_logs_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    run = FakeRun()
    NmcliBackend(interface="wlan0", run=run).connect("Hall Net", "pa ss;rm -rf /")
    args, kwargs = run.calls[0]
    assert args == ["nmcli", "--wait", "45", "device", "wifi", "connect", "Hall Net",
                    "password", "pa ss;rm -rf /", "ifname", "wlan0"]
    assert "shell" not in kwargs
    assert "pa ss" not in caplog.text


def test_nmcli_failure_is_a_network_error_without_the_password():
    run = FakeRun(returncode=10, stderr="Error: secret s3cret-pw was rejected")
    with pytest.raises(NetworkError) as e:
        NmcliBackend(run=run).connect("HallNet", "s3cret-pw")
    assert "s3cret-pw" not in str(e.value) and "rejected" in str(e.value)


def test_nmcli_scan_parses_terse_output():
    run = FakeRun(stdout="HallNet:80:WPA2\nCafe\\:Guest:40:\n:90:WPA2\nHallNet:30:WPA2\n")
    networks = NmcliBackend(run=run).scan()
    assert [(n.ssid, n.rssi, n.secured) for n in networks] == [("HallNet", -60, True), ("Cafe:Guest", -80, False)]


def test_nmcli_info_names_the_joined_network_its_signal_and_the_ip():
    class Answers:
        def __init__(self):
            self.calls = []

        def __call__(self, args, **kwargs):
            self.calls.append(args)
            if "IP4.ADDRESS" in args:
                out = "IP4.ADDRESS[1]:192.168.8.23/24\n"
            else:
                out = "no:Cafe\\:Guest:40:wlan0\nyes:HallNet:70:wlan0\n"
            return subprocess.CompletedProcess(args, 0, out, "")

    run = Answers()
    info = NmcliBackend(run=run).info()
    assert (info.connected, info.ssid, info.signal_dbm, info.ip, info.interface) == (
        True, "HallNet", -65, "192.168.8.23", "wlan0")
    assert run.calls[1] == ["nmcli", "-t", "-f", "IP4.ADDRESS", "device", "show", "wlan0"]
    assert NmcliBackend(run=FakeRun(stdout="no:HallNet:70:wlan0\n")).info().connected is False
    assert NmcliBackend(run=FakeRun(returncode=8, stderr="NetworkManager is not running")).info().connected is False
