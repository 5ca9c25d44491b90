"""Five simulators provisioned from one CSV, then rating at a hall that knows only what the tool gave it.

Slow (five ``python -m sim`` processes, ~15 s): ``make provision-hall``.
The hall reads its keys file; the tool, in next-device mode with
``--make-hmac-keys``, makes a key per device and adds it to that file (never
to the CSV). Each device is plugged in (its pty typed at the prompt),
provisioned, joins the simulated Wi-Fi, passes the display and uplink
self-tests with its new key, and is left locked; then each rates once and
the hall holds each rating under the new device id.
"""

import csv
import threading
from typing import Any

import pytest
from test_provision_sim import Sim

from hall import HallServer
from provision.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PIN = "97531"
FACTORY_KEY = "factory-key-not-at-the-hall"
HEADER = "window_no,window_name,device_id,staff_no,staff_name,server,session.source\n"


@pytest.fixture
def hall(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[devices]\n"SOMEONE-ELSE" = "another-key-0123456789"\n', encoding="utf-8")
    server = HallServer(tmp_path / "hall.db", keys_file=str(keys))
    server.start()
    yield server, keys
    server.close()


def test_five_simulators_from_one_csv_then_rating_at_the_hall(tmp_path, hall, capsys, monkeypatch):
    hall, keys_path = hall
    monkeypatch.setenv("EVALUATOR_WIFI_PASSWORD", "hall-password")
    sims: list[Any] = [None] * 5

    def start(n):
        (tmp_path / f"d{n}").mkdir()
        sims[n] = Sim(tmp_path / f"d{n}", hall, "--device-key", FACTORY_KEY)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    csv_path = tmp_path / "hall.csv"
    rows = [f"{n},窗口{n},HALL9-{n:02d},00{n},员工{n},{hall.url},free\n" for n in range(1, 6)]
    csv_path.write_text(HEADER + "".join(rows), encoding="utf-8")
    results = tmp_path / "results.csv"
    ports = iter([s.console for s in sims])
    code = main(["--csv", str(csv_path), "--next", "--port", "/dev/unused", "--results", str(results),
                 "--pin", PIN, "--wifi-ssid", "HallNet", "--hmac-keys", str(keys_path), "--make-hmac-keys",
                 "--timeout", "15"], prompt=lambda text: next(ports, None))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert PIN not in out + err and "hall-password" not in out + err
    assert out.count("Wi-Fi: joined HallNet") == 5 and out.count("pattern shown") == 5
    keys = keys_path.read_text(encoding="utf-8")
    assert all(f'"HALL9-{n:02d}"' in keys for n in range(1, 6))
    assert all(k not in out + err for k in keys.split('"')[1::2] if len(k) > 30)  # no key is printed
    with open(results, encoding="utf-8", newline="") as f:
        done = list(csv.DictReader(f))
    assert [(r["device_id"], r["outcome"]) for r in done] == [(f"HALL9-{n:02d}", "ok") for n in range(1, 6)]

    for n, sim in enumerate(sims, start=1):
        sim.finish("press 2\nwait 1\n")
        (rating,) = hall.events(f"HALL9-{n:02d}")
        assert (rating["window_no"], rating["staff_no"], rating["level"]) == (str(n), f"00{n}", "satisfied")
