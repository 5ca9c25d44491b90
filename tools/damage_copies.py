"""The damage matrix's cases about copies of the data folder, and one flipped byte inside a row.

Each case starts from the matrix's crash image (the simulator rated six
times online and six offline, then SIGKILL) and makes the data folder a bad
day would leave:

* ``row_flipped_checkpointed`` / ``row_flipped_wal``: one byte XORed inside
  the newest pending rating's JSON, in the database file after a checkpoint,
  or in the WAL of the killed device;
* ``restored_online`` / ``restored_offline``: the device went on (delivered
  everything, rated more, and kept two thanked ratings offline), then its
  folder was restored from the older copy; the device restarts with the
  network up, or down (it rates before it can hear from the hall);
* ``cloned``: the same folder on two cards, both in service one after the other;
* ``witness_wal_lost``: the WAL and the witness deleted together after the kill;
* ``foreign_folder``: the folder carried over to another device (``WE-0002``).

Then the device starts on it (supervisor, simulated pins, console on a pty,
the stand-in hall on loopback), a technician reads ``Status``, two more
ratings are given, and the rig waits until nothing is left to send. Each
line says: thanked ratings lost (read from the files and the hall's
database, by event id), whether the hall received a ``gap`` for them, seqs
held twice at the hall (counted in the hall's own database), console up,
rates again, and seconds until the rest was delivered.

A hall that does not yet refuse a taken seq (``seq_taken``) or take ``gap``
events is reported as such on the line, not failed for it: the counts are
what its database holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any

from damage_rig import DEVICE, Device, Hall, Image, Outcome, copy_image, verify, wait_for

from hall import contract

#: The device a carried-over folder ends up in.
OTHER_DEVICE = "WE-0002"
#: Does the hall this rig runs against refuse a seq it holds under another id, and take gap events?
HALL_REFUSES_TAKEN_SEQS = hasattr(contract, "SEQ_TAKEN")
HALL_TAKES_GAPS = "gap" in contract.EVENT_TYPES


# --- reading what the files and the hall hold ------------------------------------------------

def outbox_rows(data: str) -> list[tuple[int, str, str, str]]:
    """``(seq, id, type, state)`` of every readable row in the folder's outbox, WAL included; changes nothing."""
    src = os.path.join(data, "outbox.db")
    if not os.path.exists(src):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in ("", "-wal"):
            if os.path.exists(src + suffix):
                shutil.copyfile(src + suffix, os.path.join(tmp, "outbox.db" + suffix))
        conn = sqlite3.connect(os.path.join(tmp, "outbox.db"))
        conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
        try:
            return [(int(s), str(i), str(t), str(st)) for s, i, t, st in
                    conn.execute("SELECT seq, id, type, state FROM events ORDER BY seq")]
        except sqlite3.Error:
            return []
        finally:
            conn.close()


def thanked(data: str) -> set[str]:
    """Ids of the ratings kept in the folder (each was thanked on the panel)."""
    return {i for _, i, t, _ in outbox_rows(data) if t == "rating"}


def held_twice(hall_db: str, device_id: str) -> int:
    """Seqs the hall's own database holds under more than one event for the device."""
    conn = sqlite3.connect(f"file:{hall_db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM (SELECT seq FROM events WHERE device_id = ? GROUP BY seq "
                                "HAVING count(*) > 1)", [device_id]).fetchone()[0])
    finally:
        conn.close()


# --- one case -------------------------------------------------------------------------------------

class Scene:
    """What a case prepared: the folder to start on, the hall, the ratings thanked before, how to start."""

    def __init__(self, data: str, hall: Hall, hall_db: str, before: set[str], *, offline: bool = False,
                 device_id: str = DEVICE) -> None:
        self.data, self.hall, self.hall_db, self.before = data, hall, hall_db, before
        self.offline, self.device_id = offline, device_id


def run_scene(out: Outcome, scene: Scene, wait_s: float = 30.0) -> None:
    """Start the device on the scene, ask Status, rate twice, wait until nothing is left; fill the line."""
    hall = scene.hall
    overrides = [f'device.id="{scene.device_id}"'] if scene.device_id != DEVICE else []
    if scene.offline:
        hall.link.down()
    t0 = time.monotonic()
    dev = Device(scene.data, hall.url, overrides=overrides)
    new_ids: list[str] = []
    console = rates = False
    status: dict[str, Any] = {}
    try:
        if not dev.running():
            out.problems.append(f"the device did not get to rating: {dev.supervisor.mode}, "
                                f"{[f.message for f in dev.supervisor.faults]}")
            return
        with contextlib.suppress(TimeoutError):
            status = dev.tech("Status")
            console = True
            out.answered += 1
        for level in (1, 5):
            new_ids += rate(dev, level)
        rates = len(new_ids) == 2
        if scene.offline:
            hall.link.up()
            t0 = time.monotonic()

        def settled() -> bool:
            app = dev.supervisor.app
            return app is not None and app.outbox.waiting() == 0 and \
                set(new_ids) <= {e["id"] for e in hall.server.events(scene.device_id)}
        done = wait_for(settled, wait_s, 0.05)
        delivered_s = time.monotonic() - t0 if done else None
        with contextlib.suppress(TimeoutError):
            status = dev.tech("Status")
            console = console and True
            out.answered += 1
    finally:
        dev.close()
    at_hall = {e["id"] for e in hall.server.events(DEVICE)} | {e["id"] for e in hall.server.events(OTHER_DEVICE)}
    lost = scene.before - at_hall
    gaps = [e for d in {DEVICE, scene.device_id} for e in hall.server.events(d) if e.get("type") == "gap"]
    twice = held_twice(scene.hall_db, scene.device_id)
    out.kept = len(scene.before)
    out.at_hall = len(scene.before & at_hall)
    out.damage = status.get("storage_damage", {})
    out.new = [1] * len(new_ids)
    def span(g: dict[str, Any]) -> str:
        ends = ["?" if g.get(k) is None else str(g[k]) for k in ("from_seq", "to_seq")]
        return f"{g['reason']} seq {ends[0]}..{ends[1]} count {g['count']}"
    gap_text = ", ".join(span(g) for g in gaps) or "none"
    out.matrix = {"thanked lost": len(lost), "gap at hall": ("yes: " if gaps else "no: ") + gap_text,
                  "seqs held twice": twice, "console up": console, "rates again": rates,
                  "rest delivered in": f"{delivered_s:.1f} s" if delivered_s is not None else "not within "
                  f"{wait_s:.0f} s"}
    if not console:
        out.problems.append("the console did not answer")
    if not rates:
        out.problems.append("a rating given after the damage was not kept (no thanks)")
    elif not set(new_ids) <= {e["id"] for e in hall.server.events(scene.device_id)}:
        out.problems.append("ratings given after the damage were not delivered")
    if delivered_s is None:
        out.problems.append(f"something was still waiting after {wait_s:.0f} s")
    if twice:
        if HALL_REFUSES_TAKEN_SEQS:
            out.problems.append(f"the hall holds {twice} seqs twice")
        else:
            out.notes.append(f"this hall stores a taken seq again ({twice} held twice): it does not refuse seq_taken")
    if lost and not gaps:
        if HALL_TAKES_GAPS:
            out.problems.append(f"{len(lost)} thanked ratings lost and no gap event at the hall")
        else:
            out.notes.append("this hall does not take gap events (the device keeps them as dead letters)")
    rc, lines = verify(os.path.join(scene.data, "outbox.db"))
    out.verify = next((line.split(": ", 1)[1] for line in lines if ": damage: " in line), "")
    if any("Traceback" in line for line in lines) or rc == 2:
        out.problems.append(f"evaluator-verify failed: {lines[-3:]}")


def rate(dev: Device, level: int, timeout: float = 10.0) -> list[str]:
    """Press ``level`` once; the id of the rating it kept (by id: a reseal may change its seq at once)."""
    def ratings() -> set[str]:
        app = dev.supervisor.app
        return {e["id"] for e in app.outbox.events() if e.get("type") == "rating"} if app is not None else set()
    before = ratings()
    dev.press(level)
    return sorted(wait_for(lambda: ratings() - before, timeout) or ())


def case(name: str, prepare: Callable[[str, Image], Scene]) -> Callable[[str, Image], Outcome]:
    def run(work: str, base: Image) -> Outcome:
        out = Outcome(name)
        scene = prepare(os.path.join(work, name), base)
        try:
            run_scene(out, scene)
        finally:
            scene.hall.close()
        return out
    return run


# --- the scenes -----------------------------------------------------------------------------------

def _flip_in(path: str, marker: bytes, offset: int) -> None:
    with open(path, "rb") as f:
        at = f.read().rindex(marker) + offset
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x80]))


def _newest_pending_id(data: str) -> str:
    return [i for _, i, t, st in outbox_rows(data) if t == "rating" and st == "pending"][-1]


def row_flipped(checkpointed: bool) -> Callable[[str, Image], Scene]:
    def prepare(folder: str, base: Image) -> Scene:
        image = copy_image(base, folder, checkpoint=checkpointed)
        before = thanked(image.data)
        marker = b'"id":"' + _newest_pending_id(image.data).encode()
        outbox = os.path.join(image.data, "outbox.db")
        _flip_in(outbox if checkpointed else outbox + "-wal", marker, 3)
        return Scene(image.data, Hall(image.hall_db), image.hall_db, before)
    return prepare


def _went_on(image: Image, online: int = 3, offline: int = 2) -> set[str]:
    """The device in service on ``image``: delivers everything, rates ``online`` more, then ``offline`` more
    with the network down, and stops. Returns the ratings it thanked (all in its folder)."""
    hall = Hall(image.hall_db)
    dev = Device(image.data, hall.url)
    try:
        if not dev.running():
            raise RuntimeError(f"the device did not start: {dev.supervisor.mode}")
        for i in range(online):
            dev.rate(1 + i % 5)
        app = dev.supervisor.app
        wait_for(lambda: app is not None and app.outbox.waiting() == 0, 20)
        hall.link.down()
        for i in range(offline):
            dev.rate(2 + i % 4)
    finally:
        dev.close()
        hall.close()
    return thanked(image.data)


def restored(online: bool) -> Callable[[str, Image], Scene]:
    def prepare(folder: str, base: Image) -> Scene:
        older = copy_image(base, os.path.join(folder, "older"))
        newer = copy_image(base, os.path.join(folder, "newer"))
        before = _went_on(newer)
        shutil.rmtree(newer.data)
        shutil.copytree(older.data, newer.data)          # the restore: the older copy over the newer folder
        return Scene(newer.data, Hall(newer.hall_db), newer.hall_db, before, offline=not online)
    return prepare


def cloned(folder: str, base: Image) -> Scene:
    card_a = copy_image(base, os.path.join(folder, "a"))
    card_b = os.path.join(folder, "b-data")
    shutil.copytree(card_a.data, card_b)                # the same folder on a second card
    before = _went_on(card_a, online=2, offline=0)       # card A in service first
    return Scene(card_b, Hall(card_a.hall_db), card_a.hall_db, before | thanked(card_b))


def witness_wal_lost(folder: str, base: Image) -> Scene:
    image = copy_image(base, folder)
    before = thanked(image.data)
    for suffix in ("-wal", "-shm", "-witness"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(image.data, "outbox.db" + suffix))
    return Scene(image.data, Hall(image.hall_db), image.hall_db, before)


def foreign_folder(folder: str, base: Image) -> Scene:
    image = copy_image(base, folder)
    return Scene(image.data, Hall(image.hall_db), image.hall_db, thanked(image.data), device_id=OTHER_DEVICE)


COPY_CASES: dict[str, Callable[[str, Image], Outcome]] = {
    "row_flipped_checkpointed": case("row_flipped_checkpointed", row_flipped(True)),
    "row_flipped_wal": case("row_flipped_wal", row_flipped(False)),
    "restored_online": case("restored_online", restored(True)),
    "restored_offline": case("restored_offline", restored(False)),
    "cloned": case("cloned", cloned),
    "witness_wal_lost": case("witness_wal_lost", witness_wal_lost),
    "foreign_folder": case("foreign_folder", foreign_folder),
}
