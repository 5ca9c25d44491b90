"""The hall's keys (common interface 1 and 2): device public keys, the hall's own key, imports, rotation."""

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from hall_rig import EVALUATIONS, Signer, batch, chain, hall_signed, send

from hall import HallServer, keys
from hall.__main__ import keys_main

pytestmark = pytest.mark.timeout(60)

SHARED = "shared-key-for-tests"


def test_an_ed25519_device_and_a_shared_key_device_side_by_side(tmp_path):
    ed, hm = Signer.ed25519("WE-0001"), Signer("WE-0002", SHARED)
    with HallServer(tmp_path / "hall.db", {"WE-0002": SHARED}, public_keys={"WE-0001": ed.public_key}) as hall:
        hall_key = keys.parse_public_key(hall.hall_public_key)
        reply, nonce = send(hall.url, ed, "POST", EVALUATIONS, batch("WE-0001", chain("WE-0001", 2)))
        assert reply.status == 200 and len(reply.json()["accepted"]) == 2
        assert hall_signed(reply, nonce, hall_key) and not hall_signed(reply, nonce, SHARED)
        assert 'alg="ed25519"' in reply.header("Signature-Input") and 'keyid="hall"' in reply.header("Signature-Input")
        reply, nonce = send(hall.url, hm, "POST", EVALUATIONS, batch("WE-0002", chain("WE-0002", 2)))
        assert reply.status == 200 and hall_signed(reply, nonce, SHARED) and not hall_signed(reply, nonce, hall_key)
        # Each device only with what its registry entry holds.
        assert send(hall.url, Signer("WE-0001", SHARED), "POST", EVALUATIONS, batch("WE-0001", []))[0].status == 401
        other_key = Signer("WE-0001", Signer.ed25519("x").key)
        assert send(hall.url, other_key, "POST", EVALUATIONS, batch("WE-0001", []))[0].status == 401
        assert send(hall.url, Signer.ed25519("WE-0002"), "POST", EVALUATIONS, batch("WE-0002", []))[0].status == 401


def test_a_shared_default_key_never_signs_for_a_device_with_a_public_key(tmp_path):
    ed = Signer.ed25519("WE-0001")
    with HallServer(tmp_path / "hall.db", default_key=SHARED, public_keys={"WE-0001": ed.public_key}) as hall:
        forged, _ = send(hall.url, Signer("WE-0001", SHARED), "POST", EVALUATIONS,
                         batch("WE-0001", chain("WE-0001", 1)))
        assert forged.status == 401 and forged.header("Signature") == ""
        assert send(hall.url, Signer("WE-0009", SHARED), "POST", EVALUATIONS,
                    batch("WE-0009", chain("WE-0009", 1)))[0].status == 200      # the simulator's devices
        assert [e["device_id"] for e in hall.events()] == ["WE-0009"]


def test_two_keys_are_valid_during_a_rotation_and_the_old_one_ends_when_withdrawn(tmp_path):
    old, new = Signer.ed25519("WE-0001"), Signer.ed25519("WE-0001")
    with HallServer(tmp_path / "hall.db", public_keys={"WE-0001": old.public_key}) as hall:
        first = chain("WE-0001", 4)
        assert send(hall.url, old, "POST", EVALUATIONS, batch("WE-0001", first[:2]))[0].status == 200
        hall.add_public_key("WE-0001", new.public_key, "rotation")
        # Pending ratings go out under either key while the change is under way.
        assert send(hall.url, old, "POST", EVALUATIONS, batch("WE-0001", first[2:3]))[0].status == 200
        assert send(hall.url, new, "POST", EVALUATIONS, batch("WE-0001", first[3:]))[0].status == 200
        assert [k.fingerprint for k in hall.public_keys("WE-0001")] == [keys.fingerprint(old.public_key),
                                                                        keys.fingerprint(new.public_key)]
        assert hall.remove_public_key("WE-0001", keys.fingerprint(old.public_key)) == 1
        assert send(hall.url, old, "POST", EVALUATIONS, batch("WE-0001", []))[0].status == 401
        assert send(hall.url, new, "POST", EVALUATIONS, batch("WE-0001", []))[0].status == 200
        assert [e["seq"] for e in hall.events("WE-0001")] == [1, 2, 3, 4]


def results_file(path, rows):
    lines = ["device_id,window_no,public_key,fingerprint,firmware,outcome,time"]
    lines += [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_keys_import_registers_the_ok_rows_of_a_provisioning_results_file(tmp_path, capsys):
    devices = [Signer.ed25519(f"WE-{i:04d}") for i in range(1, 5)]
    when = "2026-12-06T10:00:00+08:00"
    rows = [[d.device_id, f"0{i}", d.public_key, keys.fingerprint(d.public_key), "1.0.0", "ok", when]
            for i, d in enumerate(devices[:2])]
    rows.append([devices[2].device_id, "03", devices[2].public_key, "", "1.0.0", "commit_refused", when])
    rows.append([devices[3].device_id, "04", devices[3].public_key, keys.fingerprint(devices[0].public_key),
                 "1.0.0", "ok", when])
    rows.append(["WE:05", "05", devices[0].public_key, "", "1.0.0", "ok", when])
    path = results_file(tmp_path / "results.csv", rows)
    db = str(tmp_path / "hall.db")
    HallServer(db).close()
    assert keys_main(["import", "--db", db, str(path)]) == 0
    out, err = capsys.readouterr()
    assert "2 keys imported, 3 rows not imported" in out
    assert "line 4: WE-0003: outcome commit_refused" in err
    assert "line 5: WE-0004: the fingerprint does not match the public key" in err
    assert "line 6: WE:05: a device id is 1 to 32" in err
    assert keys_main(["import", "--db", db, str(path)]) == 0           # again: nothing twice
    capsys.readouterr()
    assert keys_main(["list", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["device_id"], k["fingerprint"]) for k in listed] == [
        (d.device_id, keys.fingerprint(d.public_key)) for d in devices[:2]]
    with HallServer(db) as hall:
        assert [k.device_id for k in hall.public_keys()] == ["WE-0001", "WE-0002"]
        for device in devices[:2]:
            reply, _ = send(hall.url, device, "POST", EVALUATIONS, batch(device.device_id, chain(device.device_id, 1)))
            assert reply.status == 200
        for device in devices[2:]:
            assert send(hall.url, device, "POST", EVALUATIONS, batch(device.device_id, []))[0].status == 401
    not_results = results_file(tmp_path / "windows.csv", [])
    not_results.write_text("device_id,window_no\nWE-0001,01\n")
    assert keys_main(["import", "--db", db, str(not_results)]) == 1
    assert "not a provisioning results file (missing public_key" in capsys.readouterr().err


def test_the_hall_key_is_made_once_kept_0600_and_printed_with_its_fingerprint(tmp_path, capsys):
    db = tmp_path / "hall.db"
    with HallServer(db) as hall:
        text = hall.hall_public_key
        path = hall.hall_key_file
    assert path is not None and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with HallServer(db) as again:
        assert again.hall_public_key == text
    assert keys_main(["hall", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    raw = base64.b64decode(text)
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    assert out == f"public_key {text}\nfingerprint {fingerprint}\n"
    assert len(raw) == 32 and fingerprint == keys.fingerprint(text)


def test_nothing_in_the_halls_files_can_sign_as_a_device(tmp_path):
    device = Signer.ed25519("WE-0001")
    with HallServer(tmp_path / "hall.db", public_keys={"WE-0001": device.public_key}) as hall:
        send(hall.url, device, "POST", EVALUATIONS, batch("WE-0001", chain("WE-0001", 1)))
    assert not isinstance(device.key, str)
    secret = device.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, "rb") as f:
            data = f.read()
        assert secret not in data and base64.b64encode(secret) not in data, name


@pytest.mark.parametrize("text, problem", [("abc", "base64"), (base64.b64encode(b"x" * 31).decode(), "32 bytes")])
def test_a_bad_public_key_is_refused_naming_why(tmp_path, text, problem):
    with HallServer(tmp_path / "hall.db") as hall, pytest.raises(keys.KeyProblem, match=problem):
        hall.add_public_key("WE-0001", text)


def test_keys_add_list_and_remove_from_the_command_line(tmp_path, capsys):
    db = str(tmp_path / "hall.db")
    device = Signer.ed25519("WE-0007")
    fingerprint = keys.fingerprint(device.public_key)
    assert keys_main(["add", "--db", db, "WE-0007", device.public_key]) == 0
    assert capsys.readouterr().out == f"added WE-0007 {fingerprint}\n"
    assert keys_main(["add", "--db", db, "WE:07", device.public_key]) == 1
    assert "device id" in capsys.readouterr().err
    assert keys_main(["list", "--db", db]) == 0
    assert capsys.readouterr().out.startswith(f"WE-0007\t{fingerprint}\t{device.public_key}\t")
    assert keys_main(["remove", "--db", db, "WE-0007", fingerprint]) == 0
    assert keys_main(["remove", "--db", db, "WE-0007"]) == 1             # nothing left to remove
    assert "removed 0 key(s) of WE-0007" in capsys.readouterr().out
