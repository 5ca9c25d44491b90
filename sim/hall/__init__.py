"""The stand-in hall server: the device uplink contract v1 on loopback.

A real HTTP(S) server that the simulator, the uploader tests and the
benchmark talk to. It is a *contract checker*, deliberately written without
importing device code: it verifies signatures, validates every event, is
idempotent on event ``id``, detects ``seq`` gaps and hash-chain breaks, serves
assignments and long-poll sessions, injects faults on request and prints the
month's per-window 好差评 report.

Modules:
    contract: paths, limits, event checks and the hash chain.
    auth: the signing scheme; the one place a request's sender is checked.
    store: the SQLite the received events live in.
    faults: the failures injected on request.
    handler: HTTP, one request at a time.
    server: :class:`HallServer`, lifecycle, state and the public API.
    report: the month's per-window report.
    certs: a self-signed certificate for HTTPS in tests.

Run it with ``python -m sim.hall --port 8080 --db hall.db --keys-file keys.toml``.
"""

from sim.hall.auth import sign
from sim.hall.certs import make_self_signed_cert
from sim.hall.contract import (
    GENESIS_HASH,
    BadRequest,
    canonical_json,
    check_chain,
    event_hash,
    parse_batch,
    validate_event,
)
from sim.hall.faults import FAULT_KINDS
from sim.hall.report import add_working_days, build_report, format_report
from sim.hall.server import HallServer

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
    "make_self_signed_cert",
    "parse_batch",
    "sign",
    "validate_event",
]
