"""The damage matrix's cases beyond damaged files: a full disk, a moved outbox, a factory reset,
bad values committed, the hall's bad values, and commits with the device key killed at random.

Each returns an :class:`~damage_rig.Outcome`; see ``tools/damage.py``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from damage_rig import (
    DEVICE,
    KEY,
    ROOT,
    Device,
    Hall,
    Image,
    Outcome,
    check_storage_outcome,
    copy_image,
    wait_for,
)

from device.handlers.commands import EraseSettings

RARE = "王\U00020000"  # 𠀀: a rare character (生僻字) the bitmap font lacks
LONG_URL = "https://hall.example.org/rate?w=" + "x" * 300


# --- a true ENOSPC on a tiny filesystem -------------------------------------------------------

@contextlib.contextmanager
def tiny_filesystem(folder: str, size_kib: int = 4096) -> Iterator[tuple[str, str]]:
    """A small filesystem mounted at ``folder``: a loop-mounted ext4, else a size-limited tmpfs.

    Yields ``(mount point, what it is)``. Mounting needs root; without it
    the nearest real thing is used: raises :class:`OSError` saying why.
    """
    os.makedirs(folder, exist_ok=True)
    image = folder + ".img"
    kinds: list[tuple[str, list[list[str]]]] = [
        ("ext4 on a loop device", [["truncate", "-s", f"{size_kib}K", image], ["mkfs.ext4", "-q", "-F", image],
                                   ["mount", "-o", "loop", image, folder]]),
        ("tmpfs", [["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", folder]]),
    ]
    why = []
    for kind, steps in kinds:
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            why.append(f"{kind}: {getattr(e, 'stderr', b'') or e}")
            continue
        try:
            yield folder, kind
        finally:
            subprocess.run(["umount", folder], capture_output=True, timeout=30)
            with contextlib.suppress(OSError):
                os.unlink(image)
        return
    raise NoSmallFilesystem(errno.EPERM, "no small filesystem could be mounted (root is needed): " + "; ".join(why))


def fill(folder: str) -> str:
    """Fill the filesystem of ``folder`` to the last byte; returns the filler's path."""
    path = os.path.join(folder, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return path


class NoSmallFilesystem(OSError):
    """No small filesystem could be mounted here."""


def enospc(work: str, base: Image) -> Outcome:
    """The disk fills up for real: rating pauses (no thanks), delivery goes on, rating resumes with room."""
    out = Outcome("enospc_tiny_fs")
    mount = os.path.join(work, "enospc", "mnt")
    os.makedirs(mount, exist_ok=True)
    hall = Hall(os.path.join(work, "enospc", "hall.db"))
    try:
        with tiny_filesystem(mount) as (folder, kind):
            out.notes.append(f"a true ENOSPC on {kind}")
            data = os.path.join(folder, "data")
            os.makedirs(data, mode=0o700)
            with open(os.path.join(data, "device.key"), "w", encoding="utf-8") as f:
                f.write(KEY)
            dev = Device(data, hall.url, overrides=["outbox.min_free_mb=0"])
            try:
                if not dev.running():
                    out.problems.append("the device did not start on the small filesystem")
                    return out
                hall.link.down()
                kept = [dev.rate(1 + i % 5) for i in range(4)]
                filler = fill(folder)
                before = dev.head()
                dev.press(2)
                time.sleep(1.0)
                model = type(dev.supervisor.app.model).__name__ if dev.supervisor.app else "-"
                status = dev.tech("Status")
                out.answered += 1
                if dev.head() != before:
                    out.problems.append("a rating was kept on a full disk?")
                if model != "PausedScreen":
                    out.problems.append(f"the screen shows {model}, not that rating is paused")
                if not any("storage_full" in f["code"] or "full" in f["message"] for f in status["faults"]):
                    out.problems.append(f"Status does not say the disk is full: {status['faults']}")
                hall.link.up()
                if not wait_for(lambda: set(kept) <= set(hall.seqs()), 20):
                    out.problems.append(f"delivery stopped on a full disk: the hall has {hall.seqs()} of {kept}")
                os.unlink(filler)
                out.new = [wait_for(lambda: dev.rate(3, timeout=2), 10)]
                wait_for(lambda: set(out.new) <= set(hall.seqs()), 20)
                out.kept, out.at_hall = len(kept), len(set(kept) & set(hall.seqs()))
                if not set(out.new) <= set(hall.seqs()):
                    out.problems.append("rating did not resume once there was room")
                out.damage = dev.tech("Status").get("storage_damage", {})
                out.answered += 1
                out.notes.append("paused with the QR on a full disk, every kept rating delivered, resumed with room")
            finally:
                dev.close()
    except NoSmallFilesystem as e:
        out.notes.append(f"skipped: {e}")
    finally:
        hall.close()
    return out


# --- the outbox's place changes, or the settings are reset, with events pending --------------------------

def _pending_device(work: str, name: str, base: Image) -> tuple[Image, Hall, Device]:
    image = copy_image(base, os.path.join(work, name))
    hall = Hall(image.hall_db)
    hall.link.down()
    dev = Device(image.data, hall.url)
    if not dev.running():
        raise RuntimeError(f"the device did not start: {dev.supervisor.mode}")
    return image, hall, dev


def _finish(out: Outcome, image: Image, hall: Hall, dev: Device, outbox: str) -> None:
    hall.link.up()
    out.new = [seq for seq in [dev.rate(4)] if seq is not None]
    wait_for(lambda: set(image.kept) | set(out.new) <= set(hall.seqs()), 20)
    status = dev.tech("Status")
    out.answered += 1
    dev.close()
    check_storage_outcome(out, image, hall, status, outbox)
    if out.counted:
        out.problems.append(f"{out.counted} ratings counted as lost where none should be")


def path_changed(work: str, base: Image) -> Outcome:
    out = Outcome("outbox_path_changed")
    image, hall, dev = _pending_device(work, "path_changed", base)
    try:
        moved = os.path.join(work, "path_changed", "elsewhere", "outbox.db")
        waiting = dev.supervisor.app.outbox.waiting() if dev.supervisor.app else 0
        answers = [dev.tech(f"Set outbox.path {moved}"), dev.tech("Commit")]
        out.answered += 2
        if not all(a["ok"] for a in answers) or "outbox.path" not in answers[1].get("restart_needed", []):
            out.problems.append(f"the commit was not taken: {answers}")
        dev.tech("Restart")
        time.sleep(0.5)
        if not dev.running():
            out.problems.append("the device did not start again")
        app = dev.supervisor.app
        if app is None or app.outbox.path != moved or app.outbox.waiting() != waiting:
            out.problems.append(f"the outbox did not move with its {waiting} pending events")
        out.notes.append(f"{waiting} pending events moved with the outbox; the old file is "
                         + ("gone" if not os.path.exists(os.path.join(image.data, "outbox.db")) else "STILL THERE"))
        _finish(out, image, hall, dev, moved)
    finally:
        dev.close()
        hall.close()
    return out


def factory_reset(work: str, base: Image) -> Outcome:
    out = Outcome("factory_reset")
    image, hall, dev = _pending_device(work, "factory_reset", base)
    try:
        elsewhere = os.path.join(work, "factory_reset", "elsewhere", "outbox.db")
        for line in (f"Set outbox.path {elsewhere}", "Commit", "Restart"):
            dev.tech(line)
            out.answered += 1
        time.sleep(0.5)
        dev.running()
        waiting = dev.supervisor.app.outbox.waiting() if dev.supervisor.app else 0
        answer = dev.tech("FactoryReset yes")
        out.answered += 1
        time.sleep(0.5)
        if not answer.get("factory_reset") or not dev.running():
            out.problems.append(f"the factory reset did not restart the device: {answer}")
        app = dev.supervisor.app
        default = os.path.join(image.data, "outbox.db")
        if app is None or app.outbox.path != default or app.outbox.waiting() != waiting:
            out.problems.append(f"the {waiting} pending events did not come back to {default}")
        status = dev.tech("Status")
        if status.get("key_set"):
            out.problems.append("the device key survived the factory reset")
        for line in (f"DeviceKey {KEY}", "Commit"):       # provisioned again: then everything is delivered
            dev.tech(line)
        out.answered += 3
        out.notes.append(f"{waiting} pending events kept through the reset and delivered once provisioned again")
        _finish(out, image, hall, dev, default)
    finally:
        dev.close()
        hall.close()
    return out


# --- bad values: committed by a technician, or sent by the hall ------------------------------------

def bad_value(name: str, line: str | Callable[[Image], str], key: str) -> Callable[[str, Image], Outcome]:
    """A bad value committed: refused, saying why; then a restart and a cold start still rate."""

    def run(work: str, base: Image) -> Outcome:
        out = Outcome(name)
        image = copy_image(base, os.path.join(work, name), checkpoint=True)
        hall = Hall(image.hall_db)
        text = line(image) if callable(line) else line
        try:
            dev = Device(image.data, hall.url)
            try:
                if not dev.running():
                    out.problems.append("the device did not start")
                    return out
                staged, answer = dev.tech(text), dev.tech("Commit")
                out.answered += 2
                if staged.get("ok") is False and staged.get("key") == key:
                    # Refused as it was staged (a hostile path never reaches Commit): the same refusal, earlier.
                    refusal = {"key": key, "message": f"refused at Set: {staged['message']}"}
                    answer = {"ok": False, "problems": [refusal]}
                problems = {p.get("key"): p.get("message") for p in answer.get("problems", [])}
                if answer.get("ok") or key not in problems:
                    out.problems.append(f"the commit was not refused for {key}: {answer}")
                else:
                    reason = problems[key].split(";")[0].split(": this display")[0]
                    out.notes.append(f"Commit refused: {key}: {reason[:90]}")
                dev.tech("Discard")
                dev.tech("Restart")
                out.answered += 2
                time.sleep(0.5)
                if not dev.running():
                    out.problems.append("no start after the restart")
                if not staged.get("ok", True) and staged.get("error") != "invalid_value":
                    out.problems.append(f"the value was not even staged: {staged}")
            finally:
                dev.close()
            dev = Device(image.data, hall.url)           # a cold start on the same files
            try:
                if not dev.running():
                    out.problems.append("no cold start")
                out.new = [seq for seq in [dev.rate(2)] if seq is not None]
                wait_for(lambda: set(out.new) <= set(hall.seqs()), 20)
                status = dev.tech("Status")
                out.answered += 1
                if status.get("mode") != "running" or any(f.get("key") == key for f in status["faults"]):
                    out.problems.append(f"after a cold start: {status.get('mode')}, {status['faults']}")
            finally:
                dev.close()
            check_storage_outcome(out, image, hall, status, os.path.join(image.data, "outbox.db"))
        finally:
            hall.close()
        return out

    return run


def hall_bad_values(work: str, base: Image) -> Outcome:
    """The hall's assignment names a staff member the font cannot show, with a QR URL too long."""
    out = Outcome("hall_bad_assignment")
    image = copy_image(base, os.path.join(work, "hall_bad_assignment"), checkpoint=True)
    hall = Hall(image.hall_db)
    hall.server.set_assignment(DEVICE, {
        "window": {"no": "12", "name": "社保医保"}, "staff": {"no": "0777", "name": RARE, "dept": ""},
        "qr_url": LONG_URL, "reasons": [], "reasons_version": ""})
    dev = Device(image.data, hall.url)
    try:
        if not dev.running():
            out.problems.append("the device did not start")
            return out
        app = dev.supervisor.app
        assert app is not None
        if not wait_for(lambda: app.loop.status.assignment_fault, 15):
            out.problems.append("the assignment's bad values were not reported")
        wait_for(lambda: type(app.model).__name__ == "IdleScreen", 5)
        model = app.model
        out.new = [seq for seq in [dev.rate(1)] if seq is not None]
        wait_for(lambda: set(out.new) <= set(hall.seqs()), 20)
        out.kept, out.at_hall = len(image.kept), len(set(image.kept) & set(hall.seqs()))
        status = dev.tech("Status")
        out.answered += 1
        shown = getattr(model, "staff_name", None)
        if shown not in ("王□", ""):
            out.problems.append(f"the idle screen shows {shown!r}")
        if not any("fallback" in f["message"] for f in status["faults"]):
            out.problems.append(f"Status does not report the fallbacks: {status['faults']}")
        stored = [e for e in hall.events() if e["seq"] in out.new]
        if not stored or stored[0].get("staff_name") != RARE:
            out.problems.append("the rating does not carry the hall's staff name as sent")
        out.notes.append(f"shown as {shown!r} with the window's QR, reported; the rating keeps {RARE!r}")
    finally:
        dev.close()
        hall.close()
    return out


OTHER_CASES: dict[str, Callable[[str, Image], Outcome]] = {
    "enospc_tiny_fs": enospc,
    "outbox_path_changed": path_changed,
    "factory_reset": factory_reset,
    "bad_staff_name": bad_value("bad_staff_name", f"StaffName {RARE}", "staff.name"),
    "bad_qr_url": bad_value("bad_qr_url", f"Set qr.url {LONG_URL}", "qr.url"),
    "bad_outbox_path": bad_value("bad_outbox_path", "Set outbox.path /proc/nope/outbox.db", "outbox.path"),
    "bad_key_file": bad_value("bad_key_file", lambda image: f"Set upload.key_file {image.data}/outbox.db",
                              "upload.key_file"),
    "hall_bad_assignment": hall_bad_values,
}


# --- 50 commits with the device key, killed at random moments ----------------------------------------

def key_for(seed: int, i: int) -> str:
    return "K" + hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:39]


COMMITTER = """
import sys
sys.path.insert(0, {root!r})
from device.config import Secret
from device.console.staging import Staging
from device.settings import SettingsStore
from damage_cases import key_for, store_for

store = store_for({data!r})

class Device:
    def __init__(self):
        self.config = store.load()
    def current_config(self):
        return self.config
    def apply(self, config, key=None):
        self.config = config
        return []
    def ask(self, request):
        # The owner of the settings and the key (the loop, on a device) carries the commit out.
        request.write()
        return self.apply(request.config, request.key)

staging = Staging(store, Device())
from device.checks import check_all
check_all(store.load())  # fonts loaded and screens drawn once: the kills then fall inside commits
print("ready", flush=True)
i = {start}
while True:
    staging.stage({{"staff.no": str(i)}})
    staging.stage_key(Secret(key_for({seed}, i)))
    staging.commit()
    print(i, flush=True)
    i += 1
"""


def store_for(data: str) -> Any:
    from device.settings import SettingsStore

    return SettingsStore(os.path.join(data, "settings.toml"), overrides=[
        f"upload.key_file={json.dumps(os.path.join(data, 'device.key'))}",
        f"outbox.path={json.dumps(os.path.join(data, 'outbox.db'))}",
        f"console.settings_path={json.dumps(os.path.join(data, 'settings.toml'))}", 'session.source="free"'])


def _files(folder: str) -> dict[str, bytes]:
    found = {}
    for top, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def key_kills(work: str, kills: int = 50, seed: int | None = None) -> Outcome:
    """Commits with a new key killed at random moments; then FactoryReset; the key looked for everywhere."""
    from device.console import Console
    from device.settings import PinStore
    from sim.pty_port import PtyPort

    out = Outcome(f"key_kills_{kills}")
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    heard: list[str] = []
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    start, used = 0, 0
    try:
        for kill in range(kills):
            child = subprocess.Popen(
                [sys.executable, "-c", COMMITTER.format(root=ROOT, data=data, start=start, seed=seed)],
                cwd=os.path.dirname(os.path.abspath(__file__)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__))))
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                out.problems.append(f"the committer did not start: {child.stderr.read() if child.stderr else ''}")
                break
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(child.pid, signal.SIGKILL)
            rest, err = child.communicate(timeout=10)
            heard += [rest, err]
            done = [int(n) for n in rest.split() if n.isdigit()]
            start = (done[-1] + 1) if done else start
            used = max(used, start + 2)
            # The next start: an interrupted commit is finished or forgotten, never half of each.
            store = store_for(data)
            config = store.load()
            key_path = os.path.join(data, "device.key")
            key = ""
            if os.path.exists(key_path):
                with open(key_path, encoding="utf-8") as f:
                    key = f.read()
            if key and key != key_for(seed, int(config.staff.no)):
                out.problems.append(f"kill {kill}: the key and the settings do not belong together "
                                    f"(staff.no {config.staff.no})")
            stray = [name for name in os.listdir(data) if re.search(r"\.(tmp|next|commit)$", name)]
            if stray:
                out.problems.append(f"kill {kill}: stray files after the start: {stray}")
            wanted = [key_for(seed, i).encode() for i in range(used)]
            copies = {name for name, body in _files(data).items() for k in wanted if k in body}
            if copies - {"device.key"} or sum(k in body for body in _files(data).values() for k in wanted) > 1:
                out.problems.append(f"kill {kill}: a key is kept outside the key file: {sorted(copies)}")
        out.kept = start
        if start < kills:
            out.problems.append(f"only {start} commits done in {kills} kills: the committer is not committing")
        out.notes.append(f"{kills} kills, {start} commits done, the key and the settings always together")
        # FactoryReset through the console, as a technician would.
        store = store_for(data)
        port = PtyPort()
        from device.queue.outbox import Outbox

        Outbox(os.path.join(data, "outbox.db")).close()

        class Control:
            config = store.load()
            resets = 0

            def current_config(self) -> Any:
                return self.config

            def factory_reset(self) -> None:
                self.resets += 1

            def ask(self, request: Any) -> Any:
                # The owner of the settings and the key carries the erase out (here, on the asking thread).
                if isinstance(request, EraseSettings):
                    request.erase()
                    return None
                raise TypeError(f"unknown request {type(request).__name__}")

            def status(self) -> dict[str, Any]:
                return {}

        console = Console(port, Control(), store, PinStore(os.path.join(data, "console.pin")))  # type: ignore[arg-type]
        console.start()
        from damage_rig import Technician

        tech = Technician(port.path)
        try:
            answer = tech("FactoryReset yes")
            status = tech("Status")
            out.answered += 2
            heard += tech.heard
        finally:
            tech.close()
            console.stop()
            port.close()
        if not answer.get("factory_reset") or status.get("key_set"):
            out.problems.append(f"the factory reset did not remove the key: {answer}, key_set {status.get('key_set')}")
        keys = [key_for(seed, i) for i in range(used)]
        left = sorted({name for name, body in _files(data).items() for k in keys if k.encode() in body})
        said = [k for k in keys if any(k in text for text in heard + records)]
        if left:
            out.problems.append(f"a key is still in {left} after the factory reset")
        if said:
            out.problems.append(f"{len(said)} keys appeared in the output or the log")
        out.notes.append("after FactoryReset no key in any file of the data folder, nor in any output or log line")
    finally:
        logging.getLogger().removeHandler(handler)
    return out

