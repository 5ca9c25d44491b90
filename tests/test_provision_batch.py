"""A hall's batch: five devices provisioned from one CSV in next-device mode.

Five consoles on real ptys (fake devices behind them), each answering
``PublicKey`` as the device-keys interface says (an Ed25519 key of its
own). A CSV with one bad row is refused with every problem of that row
before any port is touched; once it is fixed, the tool walks the list
(plug in, provision, test pattern, next) and writes the results file with
each device's public key, which the hall's ``keys import`` reads.
"""

import base64
import csv
import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_console import Rig

import provision
from device.console.commands import Command
from provision.batch import RESULT_COLUMNS
from provision.cli import main

pytestmark = pytest.mark.timeout(120)

PIN = "97531"
WIFI_PASSWORD = "hall-password"
HEADER = "window_no,window_name,device_id,staff_no,staff_name,server,wifi_ssid,session.rating_window_s\n"
GOOD = [f"{n},窗口{n},HALL3-{n:02d},00{n}{n},员工{n},https://hall.example.org,HallNet,{30 + n}\n"
        for n in range(1, 6)]
BAD = '6,窗口6,WE 0014,0066,"李\n四",htp://x,HallNet,inf\n'


def fingerprint(raw):
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


class Device:
    """A console on a pty with a device key pair, answering PublicKey as interface 1 says."""

    def __init__(self, tmp_path, n):
        (tmp_path / f"dev{n}").mkdir()
        self.rig = Rig(tmp_path / f"dev{n}")
        raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()
        self.fingerprint = fingerprint(raw)
        answer = {"ok": True, "algorithm": "ed25519", "public_key": self.public_key, "fingerprint": self.fingerprint}
        # The device's own PublicKey (once the device-keys feature is in the tree) gives way to this one.
        self.rig.console.commands.pop("publickey", None)
        self.rig.console.register("PublicKey", Command(lambda ctx, arg: dict(answer), name="PublicKey",
                                                       summary="the device's public key", usage="PublicKey",
                                                       example="PublicKey"))

    @property
    def port(self):
        return self.rig.port.path


@pytest.fixture
def devices(tmp_path):
    made = [Device(tmp_path, n) for n in range(1, 6)]
    yield made
    for d in made:
        d.rig.close()


def test_five_devices_from_one_csv_in_next_device_mode(tmp_path, devices, capsys, monkeypatch):
    monkeypatch.setenv("EVALUATOR_WIFI_PASSWORD", WIFI_PASSWORD)
    hall = tmp_path / "hall.csv"
    results = tmp_path / "results.csv"
    asked = []

    def plug_in(ports):
        def prompt(text):
            asked.append(text)
            return next(ports, None)
        return prompt

    # One bad row: every problem of it named, and no port touched.
    hall.write_text(HEADER + "".join(GOOD) + BAD, encoding="utf-8")
    code = main(["--csv", str(hall), "--next", "--port", devices[0].port, "--results", str(results),
                 "--pin", PIN], prompt=plug_in(iter([d.port for d in devices])))
    err = capsys.readouterr().err
    assert code == provision.EXIT_USAGE
    assert "nothing was sent to any device" in err
    for column in ("device_id", "staff_name", "server", "session.rating_window_s"):
        assert f"line 7 (window 6): {column}:" in err, (column, err)
    assert asked == [] and not results.exists()
    assert all(d.rig.console.status.answered == 0 for d in devices)

    # The row fixed (dropped): device after device.
    hall.write_text(HEADER + "".join(GOOD), encoding="utf-8")
    code = main(["--csv", str(hall), "--next", "--port", "/dev/unused", "--results", str(results), "--pin", PIN],
                prompt=plug_in(iter([d.port for d in devices])))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert PIN not in out + err and WIFI_PASSWORD not in out + err
    assert len(asked) == 5 and "window 1 (HALL3-01)" in asked[0]

    with open(results, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == RESULT_COLUMNS
        rows = list(reader)
    assert [(r["device_id"], r["window_no"], r["outcome"]) for r in rows] == [
        (f"HALL3-{n:02d}", str(n), "ok") for n in range(1, 6)]
    for row, device in zip(rows, devices, strict=True):
        assert (row["public_key"], row["fingerprint"]) == (device.public_key, device.fingerprint)
        assert row["firmware"] and datetime.datetime.fromisoformat(row["time"]).utcoffset() is not None
        config = device.rig.device.config
        assert (config.device.id, config.device.window_no) == (row["device_id"], row["window_no"])
        assert config.session.rating_window_s == 30 + int(row["window_no"])
        assert device.rig.device.display_tests == 1                     # the test pattern was shown
        assert device.rig.console.network.connected_to == "HallNet"    # Wi-Fi from the tool
        assert device.rig.pins.verify(PIN).ok                           # factory-new: the PIN became its PIN
        assert not device.rig.console.authorized()                      # left locked

    # A device plugged in twice by mistake is refused for another window, and left as it was.
    results2 = tmp_path / "results2.csv"
    code = main(["--csv", str(hall), "--next", "--port", "/dev/unused", "--results", str(results2), "--pin", PIN,
                 "--no-tests"], prompt=plug_in(iter([devices[1].port, "q"])))
    out = capsys.readouterr().out
    assert code == provision.EXIT_BATCH and "this device is already HALL3-02 (window 2)" in out
    assert devices[1].rig.device.config.device.id == "HALL3-02" and not devices[1].rig.console.authorized()
    asked.clear()

    # Run again: every window is done; nothing is asked, nothing is sent.
    code = main(["--csv", str(hall), "--next", "--port", "/dev/unused", "--results", str(results), "--pin", PIN],
                prompt=plug_in(iter([])))
    assert code == 0 and "5 done already, 0 to go" in capsys.readouterr().out
    assert asked == []


def test_a_device_without_public_key_is_recorded_and_the_walk_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EVALUATOR_WIFI_PASSWORD", WIFI_PASSWORD)
    old = Rig(tmp_path)  # firmware without PublicKey
    old.console.commands.pop("publickey", None)
    hall = tmp_path / "hall.csv"
    hall.write_text(HEADER + GOOD[0] + GOOD[1], encoding="utf-8")
    results = tmp_path / "results.csv"
    try:
        ports = iter([old.port.path, "s"])
        code = main(["--csv", str(hall), "--next", "--port", old.port.path, "--results", str(results),
                     "--no-tests"], prompt=lambda text: next(ports, None))
        out = capsys.readouterr().out
        assert code == provision.EXIT_BATCH
        assert "no PublicKey command" in out and "window 2 skipped" in out
        with open(results, encoding="utf-8", newline="") as f:
            (row,) = list(csv.DictReader(f))
        assert (row["device_id"], row["outcome"], row["public_key"]) == ("HALL3-01", "no_public_key", "")
        assert not old.console.authorized() or not old.pins.is_set()
    finally:
        old.close()


def test_check_mode_and_help_document_the_columns(tmp_path, capsys):
    hall = tmp_path / "hall.csv"
    hall.write_text(HEADER + "".join(GOOD), encoding="utf-8")
    assert main(["--csv", str(hall), "--check"]) == 0
    assert "5 windows" in capsys.readouterr().out
    hall.write_text("window_no,device_id,device_key\n1,A,secret-key-123456\n1,B,\n", encoding="utf-8")
    assert main(["--csv", str(hall), "--check"]) == provision.EXIT_USAGE
    err = capsys.readouterr().err
    assert "device_key column" in err and "window_no: 1 is also on line 2" in err and "secret-key" not in err
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for column in ("window_no", "device_id", "wifi_ssid", "staff_name", "server", "section.key"):
        assert column in text
    assert "keys import" in text
