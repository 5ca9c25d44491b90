"""A man in the middle between the device's uplink and the hall back end, trying to make it give ratings up.

For each trick: ratings given up (must be 0); 差评 missing at the hall once
the proxy lets traffic through (must be 0); whether the device reports the
interference (a fault). The hall back end is the project's own, signing
whatever it signs; the device must hold however the hall behaves.
"""

import inspect
import subprocess
import sys
from typing import Any

import pytest
from mitm import BAD_LEVELS, Proxy

from device.config import Secret
from device.queue.outbox import Outbox
from device.queue.transport import HttpTransport
from device.queue.uploader import Uploader
from hall import HallServer
from helpers import rating

KEY = "mitm-test-key"
LEVELS = [("very_satisfied", 5), ("satisfied", 4), ("dissatisfied", 2), ("basically_satisfied", 3),
          ("very_dissatisfied", 1), ("satisfied", 4)]
#: The device's own fault codes that say something is in the way.
INTERFERENCE = ("hall_refused", "unauthenticated_answer", "auth")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rig(tmp_path):
    """``(hall, proxy)``: the hall back end behind a proxy the device talks to."""
    proxy = Proxy()
    served: dict[str, Any] = {}
    if "public_url" in inspect.signature(HallServer).parameters:
        served["public_url"] = proxy.url           # a hall that checks @target-uri: the device signs the proxy's
    hall = HallServer(tmp_path / "hall.db", default_key=KEY, **served)
    hall.start()
    host, port = hall.url.removeprefix("http://").split(":")
    proxy.start((host, int(port)))
    yield hall, proxy
    proxy.close()
    hall.close()


def fill(outbox, n=12):
    return [outbox.append(rating(i, level=LEVELS[i % len(LEVELS)][0], satisfaction=LEVELS[i % len(LEVELS)][1]))
            for i in range(n)]


def uploader(outbox, url, **kw):
    kw.setdefault("batch_size", 4)
    return Uploader(outbox, HttpTransport(url, "d1", Secret(KEY), timeout=5), "d1", synced=lambda: True,
                    backoff_min_s=0.01, backoff_max_s=0.05, rand=lambda: 1.0, heartbeat_s=0, retain_days=0, **kw)


def reported(up):
    status = up.refresh_status()
    return any(f.split(":")[0] in INTERFERENCE for f in status.faults) or status.unauthenticated > 0


MODES = ["bad_length", "over_cap", "changed_body", "other_path", "replay", "forge", "bad_only"]


@pytest.mark.parametrize("mode", MODES)
def test_a_man_in_the_middle_makes_the_device_give_up_nothing(rig, outbox, mode):
    hall, proxy = rig
    events = fill(outbox)
    bad = {e["id"] for e in events if e["level"] in BAD_LEVELS}
    up = uploader(outbox, proxy.url)
    proxy.mode = mode
    saw_fault = False
    for _ in range(16):
        up.send_batch()
        saw_fault = saw_fault or reported(up)
    given_up = outbox.count("rejected")
    assert proxy.interfered > 0
    assert given_up == 0, f"{mode}: {given_up} ratings given up"
    assert saw_fault, f"{mode}: the device did not report the interference"
    # The proxy lets traffic through: every rating arrives, the 差评 among them.
    proxy.mode = "pass"
    up.release_held(everything=True)
    for _ in range(10):
        if up.drain():
            break
        up.release_held(everything=True)
    stored = {e["id"] for e in hall.events("d1")}
    assert bad - stored == set(), f"{mode}: {len(bad - stored)} 差评 missing at the hall"
    assert {e["id"] for e in events} <= stored and outbox.count("rejected") == 0 and outbox.waiting() == 0
    # The standing fault clears once the hall answers again (the count of bad answers stays).
    assert not any(f.split(":")[0] in INTERFERENCE for f in up.refresh_status().faults)


@pytest.mark.parametrize("status", [400, 413])
def test_a_hall_that_answers_verified_requests_with_a_refusal_for_a_while_costs_nothing(rig, outbox, status):
    hall, proxy = rig                            # the proxy only passes traffic here
    events = fill(outbox, 5)
    hall.inject("status", count=6, status=status)
    up = uploader(outbox, proxy.url, batch_size=5)
    for _ in range(30):
        up.release_held(everything=True)
        if up.drain():
            break
    assert outbox.count("rejected") == 0 and outbox.waiting() == 0
    assert [e["id"] for e in hall.events("d1")] == [e["id"] for e in events]


def test_the_simulator_exits_non_zero_when_a_rating_was_given_up(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    box = Outbox(data / "outbox.db")
    # An event the hall will never take (no such level): it names it rejected in a verified answer.
    box.append(rating(0, device_id="WE-0001", level="excellent"))
    box.close()
    result = subprocess.run([sys.executable, "-m", "sim", "--data", str(data), "--device-key", KEY,
                             "--set", "session.source=\"free\"", "--drain-timeout", "20"],
                            input="", capture_output=True, text=True, timeout=90)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "given up" in result.stderr
