"""What the device keeps in memory: no library it does not need, the outbox schema as before."""

import os
import sqlite3
import subprocess
import sys

import pytest
import sqlite_utils

from device.queue import schema

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def made_by_sqlite_utils(conn: sqlite3.Connection) -> None:
    """The outbox's tables as sqlite-utils made them before the device wrote the SQL itself."""
    db = sqlite_utils.Database(conn)
    db.table("events").create(
        {"seq": int, "id": str, "type": str, "body": str, "hash": str, "state": str,
         "attempts": int, "error": str, "delivered_at": float},
        pk="seq", not_null={"id", "type", "body", "hash", "state"},
        defaults={"state": schema.PENDING, "attempts": 0}, if_not_exists=True)
    db.conn.execute("CREATE INDEX IF NOT EXISTS events_rejected ON events (seq) WHERE state = 'rejected'")
    db.table("pruned").create({"first": int, "last": int, "last_hash": str}, pk="first",
                              not_null={"last", "last_hash"}, if_not_exists=True)
    db.table("pruned").create_index(["last"], unique=True, if_not_exists=True)
    db.table("meta").create({"k": str, "v": str}, pk="k", if_not_exists=True)
    db.table("lost").create({"first": int, "last": int, "last_hash": str, "delivered": int,
                             "reason": str, "found_at": str}, pk="first",
                            not_null={"last", "last_hash", "reason"}, defaults={"delivered": 0},
                            if_not_exists=True)


def master(conn: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
    return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_the_outbox_schema_is_the_text_sqlite_utils_wrote(tmp_path):
    ours = sqlite3.connect(tmp_path / "ours.db", isolation_level=None)
    schema.create(ours, "ours.db")
    before = sqlite3.connect(tmp_path / "before.db", isolation_level=None)
    made_by_sqlite_utils(before)
    assert master(ours) == master(before)
    assert len(master(ours)) == 7          # four tables, two indexes, meta's key


def test_a_file_made_before_is_left_as_it_was(tmp_path):
    conn = sqlite3.connect(tmp_path / "before.db", isolation_level=None)
    made_by_sqlite_utils(conn)
    conn.execute("INSERT INTO meta (k, v) VALUES ('x', 'y')")
    was = master(conn)
    schema.create(conn, "before.db")
    schema.create(conn, "before.db")
    assert master(conn) == was
    assert conn.execute("SELECT v FROM meta").fetchall() == [("y",)]


def test_the_device_does_not_import_what_it_does_not_need():
    """Starting the device (App, the simulated panel) loads no CLI or plugin library."""
    code = ("import sys, device.app, sim.hardware; "
            "print(' '.join(sorted(m for m in ('sqlite_utils', 'click', 'pluggy', 'dateutil') "
            "if m in sys.modules)))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True, timeout=60).stdout
    assert out.strip() == ""


def test_a_thousand_presses_stay_under_the_budget_and_flat():
    """DESIGN.md: resident memory under 60 MB, flat (the bench's memory run, small)."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_device.py"),
                          "--memory-child", "1000", "250"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True, timeout=120).stdout
    samples = [float(line.split()[1]) for line in out.splitlines()]
    assert len(samples) == 4
    assert max(samples) < 60
    assert samples[-1] - samples[0] < 0.25, samples
