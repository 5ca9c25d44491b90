"""The rig of the damage matrix (``tools/damage.py``): a hall, a device, a crash image.

* :class:`Hall`: the stand-in hall server on a copy of a database, behind a
  cuttable :class:`~sim.network.NetworkLink`.
* :class:`Device`: the device as it runs (the :class:`~device.supervisor.Supervisor`
  on simulated pins), in this process, with its console on a real pty that
  the rig speaks to as a technician would.
* :func:`crash_image`: the simulator (``python -m sim``) rating, delivering
  some ratings and keeping others pending, then killed with SIGKILL: the
  files a power cut leaves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from device.clock import Clocks  # noqa: E402
from device.hardware import staff_request  # noqa: E402
from device.settings import SettingsStore  # noqa: E402
from device.supervisor import RUNNING, Supervisor  # noqa: E402
from hall import HallServer  # noqa: E402
from sim.hardware import make_sim_hardware  # noqa: E402
from sim.network import NetworkLink  # noqa: E402
from sim.pty_port import PtyPort  # noqa: E402

KEY = "damage-matrix-key-0123456789abcdef"
DEVICE = "WE-0001"
PINS = (5, 6, 13, 19, 26)
#: Every press a rating, fast; small backoffs so a restored link is used at once.
SETTINGS = ['session.source="free"', "session.min_interval_s=0", "session.thanks_s=0.3",
            "session.suspect_count=1000000", "buttons.bounce_ms=0", "buttons.min_press_ms=0",
            "upload.backoff_min_s=0.1", "upload.backoff_max_s=0.5", "upload.batch_size=5"]
#: The loop's log line for an event kept (a rating, or the clock event of a boot).
KEPT = re.compile(r"\b(\w+) (?:\w+ )?kept as seq (\d+)")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Hall:
    """The stand-in hall server on ``db``, reached through a link that can be cut."""

    def __init__(self, db: str) -> None:
        # The link first. The simulator reaches the hall through a link of its own too, so the URL the
        # device signs is neither this link's nor the hall's: a loopback hall with one shared key and no
        # configured public URL accepts any loopback URL (hall's rule for the simulator's relays).
        self.link = NetworkLink("127.0.0.1", 0)
        self.url = f"http://{self.link.address[0]}:{self.link.address[1]}"
        self.server = HallServer(db, default_key=KEY)
        self.server.start()
        host, port = self.server.url.removeprefix("http://").split(":")
        self.link.target = (host, int(port))

    def seqs(self) -> list[int]:
        """The seqs the hall stored for the device, as stored (a seq twice would show twice)."""
        return [e["seq"] for e in self.server.events(DEVICE)]

    def events(self) -> list[dict[str, Any]]:
        return self.server.events(DEVICE)

    def close(self) -> None:
        self.link.close()
        self.server.close()


class Technician:
    """A terminal on the console's pty: one command line out, its JSON answer back."""

    def __init__(self, path: str) -> None:
        import serial

        from provision.session import DeviceSession

        self.port = serial.Serial(path, timeout=0.2)
        self.session = DeviceSession(self.port, timeout=15.0)
        #: Every line the console wrote (to look for secrets in).
        self.heard: list[str] = []

    def __call__(self, line: str, timeout: float = 15.0) -> dict[str, Any]:
        from device.errors import ProvisionError

        self.port.reset_input_buffer()
        try:
            answer = self.session.ask(line, timeout)
        except ProvisionError as e:
            raise TimeoutError(str(e)) from None
        self.heard.append(json.dumps(answer, ensure_ascii=False))
        return answer

    def close(self) -> None:
        self.port.close()


class Device:
    """The device on ``data`` (outbox, key, settings), run by its supervisor in a thread.

    Args:
        data: the data folder (``outbox.db``, ``device.key``, ``settings.toml``).
        server: the hall's URL.
        overrides: ``--set`` texts beyond :data:`SETTINGS` and the paths.
        retry_s: in recovery, how soon a start is tried again.
    """

    def __init__(self, data: str, server: str, overrides: list[str] | None = None, retry_s: float = 0.5) -> None:
        self.data = data
        os.makedirs(data, exist_ok=True)
        self.store = SettingsStore(os.path.join(data, "settings.toml"), overrides=[
            *SETTINGS, f"outbox.path={json.dumps(os.path.join(data, 'outbox.db'))}",
            f"upload.key_file={json.dumps(os.path.join(data, 'device.key'))}",
            f"upload.server={json.dumps(server)}",
            f"console.settings_path={json.dumps(os.path.join(data, 'settings.toml'))}", *(overrides or [])])
        self.events: queue.Queue[Any] = queue.Queue()
        self.factory: Any = None
        self.port = PtyPort()
        self.modes: list[str] = []
        self.supervisor = Supervisor(self.store, self._hardware, events=self.events, console_port=self.port,
                                     clocks=Clocks(synced=lambda: True), rebuild_hardware=False, retry_s=retry_s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.supervisor.run, args=(self.stop,), daemon=True)
        self.thread.start()
        self.tech = Technician(self.port.path)

    def _hardware(self, config: Any) -> Any:
        hardware, self.factory = make_sim_hardware(config, self.events, staff_request)
        return hardware

    def mode(self) -> str:
        mode = self.supervisor.mode
        if not self.modes or self.modes[-1] != mode:
            self.modes.append(mode)
        return mode

    def running(self, timeout: float = 20.0) -> bool:
        """Whether the device gets to rating (through recovery, if that is where it starts)."""
        return bool(wait_for(lambda: self.mode() == RUNNING and self.supervisor.app is not None, timeout, 0.02))

    def press(self, n: int) -> None:
        pin = self.factory.pin(PINS[n - 1])
        pin.drive_low()
        time.sleep(0.01)
        pin.drive_high()

    def head(self) -> int:
        app = self.supervisor.app
        return app.outbox.head()[0] if app is not None else 0

    def rate(self, n: int, timeout: float = 10.0) -> int | None:
        """Press button ``n`` until it is kept; returns its seq (None if nothing was kept)."""
        before = self.head()
        self.press(n)
        if wait_for(lambda: self.head() > before, timeout):
            return self.head()
        return None

    def close(self) -> None:
        self.stop.set()
        self.supervisor.request_rebuild()
        self.thread.join(15)
        self.tech.close()
        self.port.close()


@dataclasses.dataclass
class Image:
    """What a killed device left: its data folder and the hall's database, and what it had kept."""

    data: str
    hall_db: str
    kept: list[int]
    delivered: int


def crash_image(folder: str, delivered: int = 6, pending: int = 6) -> Image:
    """The simulator rating ``delivered`` times with the network up, ``pending`` times with it down, then SIGKILL."""
    data, hall_db = os.path.join(folder, "data"), os.path.join(folder, "hall.db")
    os.makedirs(data, exist_ok=True)
    hall = Hall(hall_db)
    cmd = [sys.executable, "-m", "sim", "--data", data, "--server", hall.url, "--device-key", KEY]
    for setting in SETTINGS:
        cmd += ["--set", setting]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
    assert proc.stdin is not None and proc.stderr is not None
    kept: list[int] = []      # every event kept
    ratings: list[int] = []   # the ratings among them
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = KEPT.search(line)
            if match:
                kept.append(int(match.group(2)))
                if match.group(1) == "rating":
                    ratings.append(int(match.group(2)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for i in range(delivered):
            proc.stdin.write(f"press {1 + i % 5}\n")
            proc.stdin.flush()
            if not wait_for(_at_least(ratings, i + 1), 20):
                raise RuntimeError("the simulator kept no rating:\n" + "".join(lines[-20:]))
        if not wait_for(lambda: set(kept) <= set(hall.seqs()), 20):
            raise RuntimeError(f"the hall got {len(hall.seqs())} of {len(kept)} events")
        proc.stdin.write("network down\n")
        proc.stdin.flush()
        for i in range(pending):
            proc.stdin.write(f"press {1 + i % 5}\n")
            proc.stdin.flush()
            if not wait_for(_at_least(ratings, delivered + i + 1), 20):
                raise RuntimeError("the simulator stopped keeping ratings")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        reader.join(5)
        hall.close()
    return Image(data, hall_db, sorted(set(kept)), len(set(kept)) - pending)


def _at_least(items: list[int], n: int) -> Callable[[], bool]:
    return lambda: len(items) >= n


def copy_image(image: Image, folder: str, checkpoint: bool = False) -> Image:
    """A copy of ``image`` in ``folder``; with ``checkpoint``, its WAL folded into the file (a clean stop)."""
    import sqlite3

    shutil.copytree(image.data, os.path.join(folder, "data"))
    shutil.copyfile(image.hall_db, os.path.join(folder, "hall.db"))
    copy = dataclasses.replace(image, data=os.path.join(folder, "data"), hall_db=os.path.join(folder, "hall.db"))
    if checkpoint:
        conn = sqlite3.connect(os.path.join(copy.data, "outbox.db"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    return copy


@dataclasses.dataclass
class Outcome:
    """What one case came to."""

    case: str
    kept: int = 0          # ratings the device had kept before the damage
    at_hall: int = 0       # of those, at the hall in the end
    counted: int = 0       # of the rest, counted as lost or set aside (Status)
    damage: dict[str, Any] = dataclasses.field(default_factory=dict)
    verify: str = ""       # evaluator-verify's damage line
    new: list[int] = dataclasses.field(default_factory=list)   # seqs of ratings given after the damage
    answered: int = 0      # console answers
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    #: The columns of the copies-and-flipped-bytes cases (``tools/damage_copies.py``): name -> value.
    matrix: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The case's line in the matrix (and, indented, what evaluator-verify said)."""
        d = self.damage
        shown = ", ".join(f"{k.replace('_', ' ')} {d[k]}" for k in
                          ("lost", "lost_delivered", "set_aside", "rewritten", "replaced") if d.get(k))
        parts = [f"{self.case:<20} {'ok  ' if self.ok else 'FAIL'} {self.seconds:4.1f} s"]
        if self.matrix:
            parts.append(", ".join(f"{k} {'yes' if v is True else 'NO' if v is False else v}"
                                   for k, v in self.matrix.items()))
        elif self.kept and self.new:
            parts.append(f"kept {self.kept}, at the hall {self.at_hall}, counted {self.counted}"
                         + (f" ({shown})" if shown else "") + f"; next seq {', '.join(map(str, self.new))}")
        text = "; ".join([*parts, *self.notes, *(f"PROBLEM: {p}" for p in self.problems)])
        return text + (f"\n{'':<26}evaluator-verify: {self.verify}" if self.verify else "")


def check_storage_outcome(out: Outcome, image: Image, hall: Hall, status: dict[str, Any], outbox: str) -> None:
    """Nothing lost silently, no seq used twice, and evaluator-verify says what Status says."""
    damage = status.get("storage_damage", {})
    out.damage = damage
    stored = hall.seqs()
    out.kept = len(image.kept)
    out.at_hall = len(set(image.kept) & set(stored))
    out.counted = damage.get("lost", 0) + damage.get("set_aside", 0)
    if out.kept - out.at_hall != out.counted:
        out.problems.append(f"{out.kept - out.at_hall} kept ratings are not at the hall but "
                            f"{out.counted} are counted")
    twice = sorted(seq for seq, n in Counter(stored).items() if n > 1)
    if twice:
        out.problems.append(f"seq used twice at the hall: {twice}")
    if any(seq is None or seq <= max(image.kept) for seq in out.new):
        out.problems.append(f"new ratings got seq {out.new} (the last kept was {max(image.kept)})")
    if not set(s for s in out.new if s) <= set(stored):
        out.problems.append("ratings given after the damage were not delivered")
    if out.counted:
        # The hall learns of the loss too: the heartbeat carries the same counts.
        beat = wait_for(lambda: hall.server.heartbeats.get(DEVICE, {}).get("storage_damage"), timeout=10.0)
        got = {k: (beat or {}).get(k, 0) for k in ("lost", "set_aside")}
        if got != {k: damage.get(k, 0) for k in ("lost", "set_aside")}:
            out.problems.append(f"the heartbeat does not carry the damage: {beat!r}")
    rc, lines = verify(outbox)
    out.verify = next((line.split(": ", 1)[1] for line in lines if ": damage: " in line), "")
    if out.counted and (rc != 1 or not out.verify):
        out.problems.append(f"evaluator-verify does not report the damage: {lines}")
    for kind in ("lost", "set_aside"):
        if damage.get(kind) and f"{damage[kind]} {kind.replace('_', ' ')}" not in out.verify:
            out.problems.append(f"evaluator-verify does not count {damage[kind]} {kind}: {out.verify!r}")


def verify(path: str, *extra: str) -> tuple[int, list[str]]:
    """``evaluator-verify`` on a file, as a technician would run it."""
    done = subprocess.run([sys.executable, "-m", "device.integrity", path, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).splitlines()
