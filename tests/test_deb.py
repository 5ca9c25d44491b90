"""The ``.deb`` (deploy/deb.py): built from the tree, installed offline into a throwaway root, upgraded from the
previous version with ratings pending and a changed outbox schema (all delivered afterwards), removed, purged.

The throwaway root is a folder with an empty dpkg database: ``dpkg --root``
with ``--force-script-chrootless`` runs the package's maintainer scripts on
this machine with ``$DPKG_ROOT`` set (``--force-depends``: the root has
none of the Pi's packages; this machine's own python3, python3-pil,
python3-cryptography, python3-cbor2 and python3-spidev from Debian stand in
for the Pi's, seen by the venv as on the Pi). The program installed in the
root's venv then runs on the fake Pi and delivers to a stand-in hall.

Building the package (about 5 s, its wheels from PyPI once) and reading it
back run by default; the install, upgrade and removal (about a minute) are
``-m slow``: ``make deb-test``.

The previous version is this tree as version 0.0.9 with the outbox schema
before the partial index ``events_rejected`` (the newer program adds it on
the first open), or, with ``PREVIOUS_REF=<git ref>``, that commit of the
repository.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device import __version__
from sim.fakepi.pi import FakePi

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))
import deb  # noqa: E402

KEY = "deb-test-key"
APP = "window-evaluator"
PINS = (5, 6, 13)

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb"),
]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """The pinned wheels, downloaded once (PyPI), so that every build after it is offline."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "-r", str(REPO / "deploy" / "requirements-pi.txt"), "-d", str(folder)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"the pinned wheels cannot be downloaded here: {done.stderr[-300:]}")
    return folder


@pytest.fixture(scope="module")
def package(wheelhouse, tmp_path_factory):
    return deb.build(tmp_path_factory.mktemp("deb"), wheelhouse=wheelhouse)


def test_the_package_holds_the_installers_layout_and_every_wheel(package):
    assert package.name == f"{APP}_{__version__}_all.deb"
    control = subprocess.run(["dpkg-deb", "--field", str(package)], capture_output=True, text=True,
                             check=True).stdout
    fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line and not line[0].isspace())
    assert fields["Package"] == APP and fields["Version"] == __version__ and fields["Architecture"] == "all"
    depends = fields["Depends"].split(", ")
    # The compiled modules come from the Pi's packages; nothing to build.
    assert {"python3-pil", "python3-cryptography", "python3-cbor2", "python3-lgpio", "python3-spidev",
            "python3-venv", "xfonts-wqy"} <= set(depends)
    files = subprocess.run(["dpkg-deb", "--contents", str(package)], capture_output=True, text=True,
                           check=True).stdout
    names = {line.split()[-1].lstrip(".") for line in files.splitlines()}
    assert {"/lib/systemd/system/window-evaluator.service", "/opt/window-evaluator/deploy/install.sh",
            "/opt/window-evaluator/deploy/uninstall.sh", "/opt/window-evaluator/config.toml",
            "/opt/window-evaluator/README.md", "/opt/window-evaluator/VERSION",
            f"/opt/window-evaluator/wheels/window_evaluator-{__version__}-py3-none-any.whl"} <= names
    wheels = {n.rsplit("/", 1)[-1] for n in names if n.endswith(".whl")}
    assert all(w.endswith("-none-any.whl") for w in wheels)          # pure: armv7l and aarch64 alike
    pinned = [ln for ln in (REPO / "deploy" / "requirements-pi.txt").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert len(wheels) == len(pinned) + 1
    scripts = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(package)], capture_output=True, check=True).stdout
    assert b"install.sh\" --package" in scripts and b"uninstall.sh\" --package" in scripts


# --- install, upgrade, remove, purge in a throwaway root -----------------------------------------


class Root:
    """A throwaway root with an empty dpkg database, the files a fresh Raspberry Pi OS has that matter here."""

    def __init__(self, path: Path):
        self.path = path
        for folder in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc",
                       "boot/firmware", "var/log"):
            (path / folder).mkdir(parents=True)
        for name in ("status", "available"):
            (path / "var/lib/dpkg" / name).touch()
        (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (path / "etc/group").write_text("root:x:0:\ndialout:x:20:\ni2c:x:998:\n")
        (path / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
        (path / "etc/gshadow").write_text("root:*::\ndialout:*::\ni2c:*::\n")
        (path / "etc/os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
        self.config_txt = "[all]\narm_boost=1\n"
        self.cmdline = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootwait\n"
        (path / "boot/firmware/config.txt").write_text(self.config_txt)
        (path / "boot/firmware/cmdline.txt").write_text(self.cmdline)

    def dpkg(self, *args: str) -> str:
        done = subprocess.run(["dpkg", f"--root={self.path}", "--force-script-chrootless", "--force-depends",
                               "--log=/dev/null", *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def __truediv__(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")


def previous_tree(tmp: Path) -> Path:
    """The previous version's source: ``$PREVIOUS_REF`` of the repository, or this tree as 0.0.9 with the older
    outbox schema (no partial index ``events_rejected``)."""
    tree = tmp / "previous"
    ref = os.environ.get("PREVIOUS_REF")
    if ref:
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        return tree
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    init = tree / "device/__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', '__version__ = "0.0.9"'))
    schema = tree / "device/queue/schema.py"
    text = schema.read_text()
    index = ("        db.conn.execute(\"CREATE INDEX IF NOT EXISTS events_rejected ON events (seq) "
             "WHERE state = 'rejected'\")\n")
    assert index in text
    schema.write_text(text.replace(index, ""))
    return tree


def run_device(root: Root, pi: FakePi, hall_url: str, log: Path):
    """The program installed in the root's venv, on the fake Pi, its data in the root."""
    state = root / "var/lib/window-evaluator"
    overrides = [f'outbox.path="{state}/outbox.db"', f'console.settings_path="{state}/settings.toml"',
                 f'console.port="{root.path}/no-console"', f'upload.key_file="{state}/device.key"',
                 f'upload.server="{hall_url}"', "upload.backoff_min_s=0.1", "upload.backoff_max_s=0.5",
                 'device.id="WE-0001"', 'session.source="free"', "session.min_interval_s=0", "session.thanks_s=1",
                 "display.shift_every_s=1e9"]
    args = ["--config", str(root / "etc/window-evaluator/config.toml")]
    for o in overrides:
        args += ["--set", o]
    return pi.start(args, cwd=str(root.path), env=pi.env(project=False), log_path=str(log),
                    python=str(root / "opt/window-evaluator/venv/bin/python"))


def installed_version(root: Root) -> str:
    """``evaluator --version`` of the program in the root's venv (run from the root: no checkout on its path)."""
    return subprocess.run([str(root / "opt/window-evaluator/venv/bin/evaluator"), "--version"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, cwd=root.path).stdout.strip()


def outbox(root: Root) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{root / 'var/lib/window-evaluator/outbox.db'}?mode=ro", uri=True)


@pytest.mark.slow
def test_install_upgrade_with_pending_ratings_remove_and_purge(wheelhouse, package, tmp_path, hall):
    previous = deb.build(tmp_path / "previous-deb", wheelhouse=wheelhouse, tree=previous_tree(tmp_path))
    root = Root(tmp_path / "root")

    # Install the previous version, offline: the wheels are in the package.
    out = root.dpkg("-i", str(previous))
    assert "turned on: I2C1 at 400 kHz" in out
    assert installed_version(root) == "evaluator 0.0.9"
    assert "dtparam=i2c_arm_baudrate=400000" in (root / "boot/firmware/config.txt").read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/window-evaluator.service").is_symlink()
    assert "evaluator:" in (root / "etc/passwd").read_text()
    state = root / "var/lib/window-evaluator"
    state.mkdir(parents=True, exist_ok=True)
    (state / "device.key").write_text(KEY)
    hall.set_key("WE-0001", KEY)
    config = root / "etc/window-evaluator/config.toml"
    config.write_text(config.read_text().replace('window_no = "01"', 'window_no = "07"'))   # the technician's
    settings_before = config.read_bytes()

    # Three ratings while the hall is out of reach: they stay pending.
    pi = FakePi(spi={})
    try:
        child = run_device(root, pi, "http://127.0.0.1:9", tmp_path / "old.log")
        child.wait_for(r"screen: idle", timeout=60)
        for gpio in PINS:
            mark = len(child.log())
            pi.press(gpio, ms=80)
            child.wait_for(r"screen: thanks", after=mark)
            child.wait_for(r"screen: idle", after=mark)
        assert child.stop(timeout=20) is not None
    finally:
        pi.close()
    with outbox(root) as db:
        pending = db.execute("SELECT id FROM events WHERE type = 'rating' AND state = 'pending' "
                             "ORDER BY seq").fetchall()
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert len(pending) == 3 and "events_rejected" not in indexes

    # Upgrade to this version: settings, key and ratings kept; the new program is in the venv.
    root.dpkg("-i", str(package))
    assert installed_version(root) == f"evaluator {__version__}"
    assert config.read_bytes() == settings_before and (state / "device.key").read_text() == KEY

    # The new program opens the old outbox (adding what its schema lacks) and delivers every pending rating.
    pi = FakePi(spi={})
    try:
        child = run_device(root, pi, hall.url, tmp_path / "new.log")
        deadline = time.monotonic() + 60
        while {e["id"] for e in hall.events("WE-0001") if e["type"] == "rating"} != {i for (i,) in pending}:
            assert time.monotonic() < deadline, child.log()[-3000:]
            time.sleep(0.2)
        child.stop(timeout=20)
    finally:
        pi.close()
    with outbox(root) as db:
        left = db.execute("SELECT count(*) FROM events WHERE type = 'rating' AND state != 'delivered'").fetchone()[0]
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert left == 0 and "events_rejected" in indexes
    assert [e["window_no"] for e in hall.events("WE-0001") if e["type"] == "rating"] == ["07"] * 3

    # Remove: the program goes, the firmware's files are as before; data, configuration and user stay.
    root.dpkg("-r", APP)
    assert not (root / "opt/window-evaluator").exists()
    assert not (root / "lib/systemd/system/window-evaluator.service").exists()
    assert (root / "boot/firmware/config.txt").read_text() == root.config_txt
    assert (root / "boot/firmware/cmdline.txt").read_text() == root.cmdline
    assert (state / "outbox.db").exists() and config.read_bytes() == settings_before
    assert "evaluator:" in (root / "etc/passwd").read_text()

    # Purge: only now the data, the configuration and the user.
    root.dpkg("-P", APP)
    assert not state.exists() and not (root / "etc/window-evaluator").exists()
    assert "evaluator:" not in (root / "etc/passwd").read_text()
    assert not (root / "opt").exists() or not any((root / "opt").iterdir())


@pytest.mark.slow
def test_purge_right_after_install_leaves_nothing_but_the_firmware_as_it_was(package, tmp_path):
    root = Root(tmp_path / "root")
    root.dpkg("-i", str(package))
    (root / "var/lib/window-evaluator").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/window-evaluator/outbox.db").write_bytes(b"ratings")
    root.dpkg("-P", APP)
    assert (root / "boot/firmware/config.txt").read_text() == root.config_txt
    assert not (root / "var/lib/window-evaluator").exists() and not (root / "etc/window-evaluator").exists()
    assert not (root / "etc/polkit-1/rules.d/50-window-evaluator.rules").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/window-evaluator.service").exists()
