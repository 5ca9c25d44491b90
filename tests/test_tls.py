"""HTTPS by default: the stand-in hall served over TLS with a private CA, and plain HTTP kept to this machine.

A hall on a government network is typically served with a certificate of a
private CA, which the device trusts through ``upload.ca_bundle``; anything
else (the system's CAs, another private CA, no check at all) is refused or
reported. Plain HTTP is allowed only to a loopback address or with
``upload.insecure_http = true``, which is a standing fault. No test here
sends anything to an address that is not this machine: the transport refuses
plain HTTP before it connects.
"""

import pytest

from device import config as config_mod
from device.app import http_transport
from device.config import Secret
from device.errors import ConfigError, TransportError
from device.queue import wire
from device.queue.transport import HttpTransport, is_loopback
from device.queue.uploader import Uploader
from hall import HallServer, make_private_ca
from helpers import rating

KEY = "tls-key"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two private CAs, each with a server certificate for localhost and 127.0.0.1."""
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    return make_private_ca(str(ours), "Hall CA"), make_private_ca(str(theirs), "Another CA")


@pytest.fixture
def tls_hall(tmp_path, pki):
    (_, cert, key), _ = pki
    with HallServer(tmp_path / "hall.db", default_key=KEY, tls=(cert, key)) as hall:
        yield hall


def uploader(outbox, url, verify):
    return Uploader(outbox, HttpTransport(url, "d1", Secret(KEY), timeout=5, verify=verify), "d1",
                    heartbeat_s=0, retain_days=0, synced=lambda: True, backoff_min_s=0.1, backoff_max_s=1)


def test_the_hall_over_tls_with_a_private_ca_delivers_with_the_ca_bundle(tls_hall, pki, outbox):
    (ca, _, _), _ = pki
    events = [outbox.append(rating(i)) for i in range(3)]
    assert tls_hall.url.startswith("https://127.0.0.1:")
    up = uploader(outbox, tls_hall.url, ca)
    assert up.drain()
    assert [e["id"] for e in tls_hall.events("d1")] == [e["id"] for e in events]
    assert up.refresh_status().faults == ()
    # By name as well as by address: the certificate names both.
    named = HttpTransport(tls_hall.url.replace("127.0.0.1", "localhost"), "d1", Secret(KEY), verify=ca)
    assert named.request("POST", wire.heartbeat_path("d1"), {}).status == 200


@pytest.mark.parametrize("trust", ["system", "another CA"])
def test_a_certificate_the_device_does_not_trust_is_refused(tls_hall, pki, outbox, trust):
    _, (other_ca, _, _) = pki
    outbox.append(rating(0))
    up = uploader(outbox, tls_hall.url, True if trust == "system" else other_ca)
    assert up.send_batch() > 0
    assert "TLS failure" in up.status.last_error and up.status.online is False
    assert tls_hall.events("d1") == [] and outbox.waiting() == 1 and outbox.count("rejected") == 0


def test_no_certificate_check_works_but_is_a_standing_fault(tls_hall, outbox):
    outbox.append(rating(0))
    up = uploader(outbox, tls_hall.url, False)
    assert up.drain()
    assert "tls_unverified" in up.refresh_status().faults


def test_the_app_uses_the_ca_bundle_of_the_configuration(tls_hall, pki):
    (ca, _, _), _ = pki
    config = config_mod.load(overrides=[f'upload.server="{tls_hall.url}"', f'upload.ca_bundle="{ca}"',
                                        'device.id="d1"'])
    transport = http_transport(config, Secret(KEY), 5)
    assert transport.request("POST", wire.heartbeat_path("d1"), {}).status == 200


def test_plain_http_only_to_this_machine():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("localhost") and not is_loopback("hall.example.org") and not is_loopback("10.1.2.3")
    refused = HttpTransport("http://hall.example.org", "d1", Secret(KEY))
    assert refused.faults == ("plain_http_refused",)
    with pytest.raises(TransportError, match=r"plain HTTP to hall\.example\.org is refused"):
        refused.request("POST", wire.heartbeat_path("d1"), {})      # before any connection is tried
    allowed = HttpTransport("http://hall.example.org", "d1", Secret(KEY), insecure_http=True)
    assert allowed.faults == ("insecure_http",) and not allowed.refused
    assert HttpTransport("http://127.0.0.1:8080", "d1", Secret(KEY)).faults == ()
    assert HttpTransport("https://hall.example.org", "d1", Secret(KEY)).faults == ()


def test_the_configuration_says_so_naming_the_key():
    with pytest.raises(ConfigError, match=r"upload\.server.*plain http:// only to this machine"):
        config_mod.load(overrides=['upload.server="http://hall.example.org"'])
    config = config_mod.load(overrides=['upload.server="http://hall.example.org"', "upload.insecure_http=true"])
    assert config.upload.insecure_http
    for url in ("https://hall.example.org", "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:80"):
        assert config_mod.load(overrides=[f'upload.server="{url}"']).upload.server == url


def test_insecure_http_is_a_standing_fault_in_status_and_heartbeat(hall, outbox):
    # The hall is on loopback; the transport is told it is elsewhere only to show the fault.
    transport = HttpTransport(hall.url, "d1", Secret(KEY), insecure_http=True)
    transport.faults = ("insecure_http",)
    up = Uploader(outbox, transport, "d1", heartbeat_s=0, retain_days=0, synced=lambda: True)
    assert up.upkeep.heartbeat()
    assert "insecure_http" in up.status.faults and "insecure_http" in hall.heartbeats["d1"]["faults"]
