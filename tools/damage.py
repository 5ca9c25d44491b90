"""The damage matrix: a bad day in a hall, case by case, with what the device then shows.

    python tools/damage.py [--case NAME ...] [--kills 50] [--keep DIR]

Each case runs end to end: the simulator rates, delivers some ratings, keeps
others pending and is killed (SIGKILL); its files are damaged the way the
case says; then the device starts on them (its supervisor, simulated pins,
the console on a real pty, the stand-in hall server on loopback) and a
technician reads ``Status`` while two more ratings are given. A case passes
when nothing was lost silently (every rating kept before the damage is
either at the hall or counted as lost or set aside, in ``Status`` and in
``evaluator-verify``), nothing stalled, the console answered throughout,
and no ``seq`` was used twice. One line per case; exit status 1 if any
case fails. ``tests/test_damage.py`` runs the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from damage_cases import OTHER_CASES, key_kills
from damage_copies import COPY_CASES
from damage_rig import (
    Device,
    Hall,
    Image,
    Outcome,
    check_storage_outcome,
    copy_image,
    crash_image,
    wait_for,
)


def storage_case(name: str, damage: Callable[[str], None], clean_stop: bool = False,
                 expect_recovery: bool = False) -> Callable[[str, Image], Outcome]:
    """A case that damages the outbox's files after a kill (or after a clean stop)."""

    def run(work: str, base: Image) -> Outcome:
        out = Outcome(name)
        image = copy_image(base, os.path.join(work, name), checkpoint=clean_stop)
        outbox = os.path.join(image.data, "outbox.db")
        damage(outbox)
        hall = Hall(image.hall_db)
        dev = Device(image.data, hall.url)
        status: dict[str, Any] = {}
        try:
            if not dev.running():
                out.problems.append(f"the device did not get to rating: {dev.supervisor.mode}, "
                                    f"{[f.message for f in dev.supervisor.faults]}")
                return out
            if expect_recovery and "recovery" not in dev.modes:
                out.notes.append("no recovery seen (it may have passed between two looks)")
            elif "recovery" in dev.modes:
                out.notes.append("recovery first, with the fault shown, then running")
            first = dev.tech("Status")
            out.answered += 1
            if first.get("storage_damage", {}).get("incidents", 0) == 0 and name != "clean":
                out.problems.append("Status shows no damage")
            out.new = [seq for seq in (dev.rate(1), dev.rate(5)) if seq is not None]
            if len(out.new) < 2:
                out.problems.append("a rating given after the damage was not kept (no thanks)")
            wait_for(lambda: {s for s in out.new if s} <= set(hall.seqs()), 20)
            status = dev.tech("Status")
            out.answered += 1
        except TimeoutError as e:
            out.problems.append(str(e))
        finally:
            dev.close()
            hall.close()
        hall = Hall(image.hall_db)
        try:
            check_storage_outcome(out, image, hall, status, outbox)
        finally:
            hall.close()
        return out

    return run


# --- the damage itself ---------------------------------------------------------------------

def delete_wal(outbox: str) -> None:
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(outbox + suffix)


def truncate_wal(outbox: str) -> None:
    os.truncate(outbox + "-wal", os.path.getsize(outbox + "-wal") // 2)


def _page_of(outbox: str, marker: bytes) -> int:
    with open(outbox, "rb") as f:
        data = f.read()
    return data.rindex(marker) // 4096


def _last_pending_marker(outbox: str) -> bytes:
    import sqlite3

    conn = sqlite3.connect(outbox)
    try:
        body = conn.execute("SELECT body FROM events WHERE state = 'pending' ORDER BY seq DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()
    start = body.index('"mono_ms":')
    return body[start:start + 24].encode("utf-8")


def flip_page(outbox: str) -> None:
    """Every byte of the page holding the newest pending rating, inverted."""
    page = _page_of(outbox, _last_pending_marker(outbox))
    with open(outbox, "r+b") as f:
        f.seek(page * 4096)
        data = f.read(4096)
        f.seek(page * 4096)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate_to(fraction: float) -> Callable[[str], None]:
    def damage(outbox: str) -> None:
        os.truncate(outbox, int(os.path.getsize(outbox) * fraction) // 4096 * 4096)
    return damage


def flip_header(outbox: str) -> None:
    with open(outbox, "r+b") as f:
        f.write(bytes(b ^ 0xFF for b in f.read(16)))
        f.seek(16)


def poison_row(outbox: str) -> None:
    """Eight bytes of one pending rating's contents flipped in the file (SQLite still reads the row)."""
    marker = _last_pending_marker(outbox)
    with open(outbox, "rb") as f:
        at = f.read().rindex(marker) + len(marker) + 20
    with open(outbox, "r+b") as f:
        f.seek(at)
        data = f.read(8)
        f.seek(at)
        f.write(bytes(b ^ 0x01 for b in data))


STORAGE_CASES: dict[str, Callable[[str, Image], Outcome]] = {
    "wal_deleted": storage_case("wal_deleted", delete_wal),
    "wal_truncated": storage_case("wal_truncated", truncate_wal),
    "page_flipped": storage_case("page_flipped", flip_page, clean_stop=True),
    "db_truncated_zero": storage_case("db_truncated_zero", truncate_to(0), clean_stop=True),
    "db_truncated_half": storage_case("db_truncated_half", truncate_to(0.5), clean_stop=True),
    "header_flipped": storage_case("header_flipped", flip_header, clean_stop=True, expect_recovery=True),
    "poison_row": storage_case("poison_row", poison_row, clean_stop=True),
}


CASES: dict[str, Callable[[str, Image], Outcome]] = {**STORAGE_CASES, **COPY_CASES, **OTHER_CASES}


def run_case(name: str, work: str, base: Image) -> Outcome:
    t0 = time.monotonic()
    try:
        out = CASES[name](work, base)
    except Exception as e:  # a case that breaks the rig is a failed case, reported, not a crash
        out = Outcome(name, problems=[f"{type(e).__name__}: {e}"])
    out.seconds = time.monotonic() - t0
    return out


@contextlib.contextmanager
def workspace(keep: str | None) -> Iterator[str]:
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield keep
    else:
        folder = tempfile.mkdtemp(prefix="damage-")
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=[*CASES, "key_kills"], help="run only these cases")
    parser.add_argument("--kills", type=int, default=50, help="killed commits of the key case")
    parser.add_argument("--keep", metavar="DIR", help="keep the files of every case here")
    args = parser.parse_args(argv)
    names = args.case or [*CASES, "key_kills"]
    failed = 0
    with workspace(args.keep) as work:
        # What the device logs goes to a file beside the cases, not between the matrix's lines.
        logging.basicConfig(filename=os.path.join(work, "device.log"), level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
        t0 = time.monotonic()
        base = crash_image(os.path.join(work, "image"))
        print(f"crash image: the simulator kept seq {base.kept[0]}..{base.kept[-1]}, the hall has "
              f"{base.delivered}, then SIGKILL ({time.monotonic() - t0:.1f} s)", flush=True)
        for name in names:
            if name == "key_kills":
                t1 = time.monotonic()
                out = key_kills(os.path.join(work, "key_kills"), args.kills)
                out.seconds = time.monotonic() - t1
            else:
                out = run_case(name, work, base)
            failed += not out.ok
            print(out.line(), flush=True)
    print(f"{len(names) - failed} of {len(names)} cases pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

