"""Improv serial: frames byte for byte, and a client written from the spec.

The client below (``SpecClient``) is written from https://www.improv-wifi.com/serial/
and imports nothing from ``device``: it proves that a standard client can
read the state and device info and provision Wi-Fi through the console.
"""

import logging
import subprocess
import threading

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st
from test_console import FakeDeviceControl, ask

from device.console import Console, improv
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
    assert improv.state_frame(improv.State.AUTHORIZED) == b"IMPROV\x01\x01\x01\x02" + bytes([0xE2])
    assert improv.error_frame(improv.Error.NOT_AUTHORIZED) == b"IMPROV\x01\x02\x01\x04" + bytes([0xE5])
    # RPC result for device info: command 03, data length, then length-prefixed strings.
    frame = improv.result_frame(improv.Command.REQUEST_INFO, ["a", "bc"])
    body = b"IMPROV\x01\x04\x07\x03\x05\x01a\x02bc"
    assert frame == body + bytes([sum(body) & 0xFF])


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


# --- a client written from the spec ---------------------------------------------

class SpecClient:
    """An Improv serial client as the spec describes it (and as the JS SDK reads)."""

    HEADER = b"IMPROV"

    def __init__(self, path):
        self.port = serial.Serial(path, 115200, timeout=3)

    def close(self):
        self.port.close()

    def send_rpc(self, command, data=b""):
        payload = bytes([command, len(data)]) + data
        packet = self.HEADER + bytes([1, 0x03, len(payload)]) + payload
        self.port.write(packet + bytes([sum(packet) & 0xFF]) + b"\n")

    def packet(self):
        """The next Improv packet ``(type, data)``; other lines are skipped."""
        line = b""
        while True:
            b = self.port.read(1)
            if not b:
                raise TimeoutError("no Improv packet")
            if b == b"\n" and len(line) < 9:
                line = b""
                continue
            line += b
            if len(line) == 9:
                if line[:6] != self.HEADER:
                    # Not Improv: discard the rest of this line.
                    while self.port.read(1) not in (b"\n", b""):
                        pass
                    line = b""
                    continue
                rest = self.port.read(line[8] + 1)
                whole = line + rest
                assert whole[6] == 1, "version"
                assert sum(whole[:-1]) & 0xFF == whole[-1], "checksum"
                return whole[7], whole[9:-1]

    @staticmethod
    def strings(data):
        out, i = [], 2
        while i < 2 + data[1]:
            n = data[i]
            out.append(data[i + 1:i + 1 + n].decode("utf-8"))
            i += 1 + n
        return out

    def state(self):
        self.send_rpc(0x02)
        return self.packet()

    def info(self):
        self.send_rpc(0x03)
        kind, data = self.packet()
        assert kind == 0x04 and data[0] == 0x03
        return self.strings(data)

    def provision(self, ssid, password):
        s, p = ssid.encode(), password.encode()
        self.send_rpc(0x01, bytes([len(s)]) + s + bytes([len(p)]) + p)


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
    client = SpecClient(port.path)
    yield client, console, network
    client.close()
    console.stop()
    port.close()


def test_spec_client_reads_state_and_device_info(improv_rig):
    client, _, _ = improv_rig
    assert client.state() == (0x01, bytes([0x02]))  # factory-new: authorised, not provisioned
    firmware, version, chip, name = client.info()[:4]
    assert (firmware, version, name) == ("Window Evaluator", "9.9.9", "WE-0001")
    assert chip


def test_spec_client_provisions_wifi_through_the_fake_backend(improv_rig, caplog):
    client, _, network = improv_rig
    caplog.set_level(logging.DEBUG)
    client.state()
    client.provision("HallNet", WIFI["HallNet"])
    packets = [client.packet() for _ in range(3)]
    assert packets == [(0x01, bytes([0x03])), (0x01, bytes([0x04])), (0x04, bytes([0x01, 0x00]))]
    assert network.connected_to == "HallNet"
    # Once provisioned, a state request also brings an RPC result (as the SDK expects).
    assert client.state() == (0x01, bytes([0x04]))
    assert client.packet() == (0x04, bytes([0x02, 0x00]))
    assert WIFI["HallNet"] not in caplog.text


def test_wrong_wifi_password_reports_unable_to_connect(improv_rig, caplog):
    client, _, network = improv_rig
    caplog.set_level(logging.DEBUG)
    client.state()
    client.provision("HallNet", "not-the-password")
    assert client.packet() == (0x01, bytes([0x03]))       # provisioning
    assert client.packet() == (0x02, bytes([0x03]))       # error: unable to connect
    assert client.packet() == (0x01, bytes([0x02]))       # back to ready
    assert network.connected_to is None
    assert "not-the-password" not in caplog.text


def test_scan_lists_networks_then_an_empty_result(improv_rig):
    client, _, _ = improv_rig
    client.send_rpc(0x04)
    results = []
    while True:
        kind, data = client.packet()
        assert kind == 0x04 and data[0] == 0x04
        strings = client.strings(data)
        if not strings:
            break
        results.append(strings)
    assert sorted(results) == [["Guest", "-60", "NO"], ["HallNet", "-48", "YES"]]


def test_locked_console_requires_authorization_then_reports_the_change(improv_rig, tmp_path):
    client, console, network = improv_rig
    console.pins.set("2468")
    assert client.state() == (0x01, bytes([0x01]))        # authorization required
    client.provision("HallNet", WIFI["HallNet"])
    assert client.packet() == (0x02, bytes([0x04]))       # error: not authorized
    assert network.attempts == []
    # The technician authorises on the same port; the client hears the new state.
    client.port.write(b"Auth 2468\r\n")
    kinds = [client.packet()]
    assert kinds == [(0x01, bytes([0x02]))]
    client.provision("HallNet", WIFI["HallNet"])
    # The new RPC first clears the error, as the spec asks.
    assert [client.packet() for _ in range(3)] == [(0x02, bytes([0x00])), (0x01, bytes([0x03])),
                                                   (0x01, bytes([0x04]))]


def test_bad_and_unknown_rpcs_get_error_states(improv_rig):
    client, _, _ = improv_rig
    client.send_rpc(0x01, b"\x05ab")                      # SSID length runs past the end
    assert client.packet() == (0x02, bytes([0x01]))
    client.send_rpc(0x09)
    assert client.packet() == (0x02, bytes([0x02]))       # unknown RPC
    # The error is cleared by the next good RPC, as the spec asks.
    client.send_rpc(0x02)
    assert client.packet() == (0x02, bytes([0x00]))
    assert client.packet() == (0x01, bytes([0x02]))


def test_command_lines_and_frames_share_the_port(improv_rig):
    client, _, _ = improv_rig
    client.send_rpc(0x02)
    client.port.write(b"Status\r\n")
    # The Improv packet first, then the JSON line (which an Improv client would skip).
    assert client.packet() == (0x01, bytes([0x02]))
    assert ask(client.port, None)["device_id"] == "WE-0001"


def test_improv_without_a_network_backend_fails_cleanly(tmp_path):
    store = SettingsStore(tmp_path / "settings.toml", [], [f'upload.key_file="{tmp_path / "k"}"'])
    with PtyPort() as port:
        console = Console(port, FakeDeviceControl(store.load()), store, PinStore(tmp_path / "pin"))
        console.start()
        client = SpecClient(port.path)
        try:
            client.provision("HallNet", "x")
            assert client.packet() == (0x02, bytes([0x03]))
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
