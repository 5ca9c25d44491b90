"""The hall back end: the device uplink contract v3.

A real HTTP(S) server that the simulator, the uploader tests and the
benchmark talk to. It is a *contract checker*, deliberately written without
importing device code: it verifies RFC 9421 signatures (``ed25519`` under
the device public keys it holds, or a shared ``hmac-sha256`` key) against
its own public URL and signs only answers to requests it verified, refuses
stale and replayed requests (nonces kept durably, limits per device),
validates every event, is idempotent on event ``id``, never holds two events
under one ``seq`` (``seq_taken``), flags conflicts, ``gap`` events and
hash-chain breaks as they arrive and answers each batch with the device's
head, dates events
from their boot's ``clock`` event, serves
assignments and long-poll sessions, injects faults on request and prints the
month's per-window 好差评 report.

Modules:
    contract: paths, limits, event checks and the hash chain.
    auth: RFC 9421 both ways: who sent a request, the hall's signature on
        the answers to verified requests, the shared keys.
    keys: the hall's own Ed25519 key and the registry of device public keys.
    limits: per-device limits: durable nonces, requests in flight.
    store: the SQLite the received events live in (and their ``flag``).
    faults: the failures injected on request.
    handler: HTTP, a bounded worker pool, read deadlines; the handler's interface to the hall.
    server: :class:`HallServer`, lifecycle, state and the public API.
    report: the month's per-window report.
    certs: a private CA and a server certificate for HTTPS in tests.
    dating: when each event happened (its boot's ``clock`` event).

Run it with ``python -m hall --port 8080 --db hall.db --keys-file keys.toml``.
"""

from hall.auth import sign_request
from hall.certs import make_private_ca, make_self_signed_cert
from hall.contract import (
    GENESIS_HASH,
    BadRequest,
    canonical_json,
    check_chain,
    event_hash,
    parse_batch,
    validate_event,
)
from hall.faults import FAULT_KINDS
from hall.report import build_report, format_report
from hall.server import HallServer
from hall.workdays import add_working_days

__all__ = [
    "FAULT_KINDS",
    "GENESIS_HASH",
    "BadRequest",
    "HallServer",
    "add_working_days",
    "build_report",
    "canonical_json",
    "check_chain",
    "event_hash",
    "format_report",
    "make_private_ca",
    "make_self_signed_cert",
    "parse_batch",
    "sign_request",
    "validate_event",
]
