"""The shipped service: install and uninstall on a fake root, the unit, and systemd's notifications.

``deploy/install.sh`` and ``deploy/uninstall.sh`` run for real against a
fake root (``ROOT=``) with ``apt-get``, ``systemctl``, ``useradd`` and the
other system tools replaced on ``PATH`` by stubs that log each call; the
test checks every file written and every call made. The unit is checked by
``systemd-analyze`` where it exists. The device's ``sd_notify`` messages are
read from a real ``AF_UNIX`` socket, as systemd would.
"""

import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from luma.core.device import dummy

from device import __version__
from device.clock import Clocks
from device.hardware import staff_request
from device.notify import Liveness, Notifier, Watchdog
from device.settings import SettingsStore
from device.supervisor import RUNNING, STOPPED_MESSAGE, Supervisor
from device.ui.models import BootScreen
from device.ui.screens import render
from helpers import PINS
from sim.hardware import make_sim_hardware

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "window-evaluator.service"
GETTYS = "serial-getty@ttyGS0.service serial-getty@ttyS0.service serial-getty@ttyAMA0.service"
CONFIG_TXT = "# Raspberry Pi OS\ndtparam=audio=on\n\n[cm4]\notg_mode=1\n\n[all]\narm_boost=1\n"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes rootwait\n"

pytestmark = pytest.mark.timeout(60)

# --- install and uninstall on a fake root ---------------------------------------------

STUB = '#!/bin/sh\necho "{name} $*" >> "$CALLS"\n'
# useradd/groupadd also write the fake root's files, as the real ones do with --prefix.
ADDS = '''#!/bin/sh
echo "{name} $*" >> "$CALLS"
[ "$1" = --prefix ] || exit 0
eval "last=\\${{$#}}"
echo "$last{line}" >> "$2/etc/{file}"
'''
USERDEL = '''#!/bin/sh
echo "userdel $*" >> "$CALLS"
[ "$1" = --prefix ] && grep -v "^$3:" "$2/etc/passwd" > "$2/etc/passwd.new" && mv "$2/etc/passwd.new" "$2/etc/passwd"
exit 0
'''
# python3 -m venv DIR: a venv whose pip only logs and whose python is this one on the checkout.
PYTHON3 = '''#!/bin/sh
echo "python3 $*" >> "$CALLS"
eval "dir=\\${$#}"
mkdir -p "$dir/bin"
printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n' > "$dir/bin/pip"
printf '#!/bin/sh\\nPYTHONPATH="$REPO" exec "$REAL_PYTHON" "$@"\\n' > "$dir/bin/python"
chmod +x "$dir/bin/pip" "$dir/bin/python"
'''
# apt-cache policy: Raspberry Pi OS's archive is in the sources (python3-lgpio has a candidate).
APT_CACHE = '''#!/bin/sh
echo "  Installed: (none)"
echo "  Candidate: ${CANDIDATE-0.2.2-1~rpt1}"
'''


class FakePi:
    """A fake root that looks like a fresh Raspberry Pi OS, and stubs that log the calls."""

    def __init__(self, tmp_path: Path, codename: str = "bookworm") -> None:
        self.root = tmp_path / "root"
        self.calls_file = tmp_path / "calls.log"
        stubs = tmp_path / "stubs"
        for folder in ("etc", "boot/firmware"):
            (self.root / folder).mkdir(parents=True)
        stubs.mkdir()
        (self.root / "etc/os-release").write_text(f'ID=debian\nVERSION_CODENAME={codename}\n')
        (self.root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n")
        # gpio, spi and netdev are missing: the script makes them.
        (self.root / "etc/group").write_text("root:x:0:\ndialout:x:20:pi\ni2c:x:998:pi\n")
        self.boot = self.root / "boot/firmware"
        (self.boot / "config.txt").write_text(CONFIG_TXT)
        (self.boot / "cmdline.txt").write_text(CMDLINE)
        for name in ("apt-get", "systemctl", "usermod"):
            self._stub(stubs, name, STUB.format(name=name))
        self._stub(stubs, "useradd", ADDS.format(name="useradd", line=":x:999:999::/var/lib/window-evaluator:"
                                                 "/usr/sbin/nologin", file="passwd"))
        self._stub(stubs, "groupadd", ADDS.format(name="groupadd", line=":x:990:", file="group"))
        self._stub(stubs, "userdel", USERDEL)
        self._stub(stubs, "python3", PYTHON3)
        self._stub(stubs, "apt-cache", APT_CACHE)
        self.env = {**os.environ, "ROOT": str(self.root), "CALLS": str(self.calls_file),
                    "PATH": f"{stubs}:{os.environ['PATH']}", "REPO": str(REPO), "REAL_PYTHON": sys.executable}

    @staticmethod
    def _stub(folder: Path, name: str, text: str) -> None:
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.calls_file.write_text("")
        result = subprocess.run(["bash", str(REPO / "deploy" / script), *args], env={**self.env, **env},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def calls(self) -> list[str]:
        return [line.replace(str(self.root), "ROOT") for line in self.calls_file.read_text().splitlines()]

    def read(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()

    def exists(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).exists()

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


@pytest.fixture
def pi(tmp_path):
    return FakePi(tmp_path)


def test_install_sets_up_every_part_on_a_fresh_pi(pi):
    out = pi.run("install.sh").stdout
    calls = pi.calls()
    assert calls[0] == "apt-get update -q"
    install = calls[1].split()
    assert install[:5] == ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    # The compiled modules from the Pi's packages; no compiler, no headers.
    assert {"python3-lgpio", "python3-spidev", "python3-pil", "python3-cryptography", "python3-cbor2",
            "python3-venv", "xfonts-wqy", "i2c-tools", "network-manager", "polkitd"} <= set(install[5:])
    assert not {"build-essential", "gcc", "swig", "python3-dev", "liblgpio-dev"} & set(install[5:])
    assert calls[2:] == [
        "python3 -m venv --system-site-packages ROOT/opt/window-evaluator/venv",
        f"pip install --quiet --only-binary=:all: --no-deps -r {REPO}/deploy/requirements-pi.txt",
        f"pip install --quiet --no-deps --no-build-isolation {REPO}",
        "groupadd --prefix ROOT --system gpio",
        "groupadd --prefix ROOT --system spi",
        "groupadd --prefix ROOT --system netdev",
        "useradd --prefix ROOT --system --user-group --home-dir /var/lib/window-evaluator --no-create-home "
        "--shell /usr/sbin/nologin --comment Window Evaluator evaluator",
        "usermod --prefix ROOT --append --groups gpio,i2c,spi,dialout,netdev evaluator",
        f"systemctl --root=ROOT mask {GETTYS}",
        "systemctl --root=ROOT enable window-evaluator.service",
    ]
    # The files.
    assert pi.read("/etc/systemd/system/window-evaluator.service") == UNIT.read_text()
    assert pi.read("/etc/window-evaluator/config.toml") == (REPO / "config.toml").read_text()
    assert pi.read("/opt/window-evaluator/README.md") == (REPO / "README.md").read_text()
    config_txt = pi.read("/boot/firmware/config.txt")
    assert config_txt.startswith(CONFIG_TXT)
    block = config_txt[len(CONFIG_TXT):].splitlines()
    # The default configuration: an I2C panel (at 400 kHz) and the USB console; SPI and the UART stay off,
    # so the kernel holds no pin but I2C's 2 and 3.
    assert block[1:-1] == ["[all]", "dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000", "dtparam=spi=off",
                           "enable_uart=0", "dtoverlay=dwc2"]
    assert pi.read("/boot/firmware/cmdline.txt") == CMDLINE.replace("console=serial0,115200 ", "")
    assert pi.read("/etc/modules-load.d/window-evaluator.conf").split("\n")[1:] == ["i2c-dev", "dwc2", "g_serial", ""]
    assert "turned on: I2C1 at 400 kHz, the USB serial gadget; GPIO the kernel holds: 2, 3" in out
    rule = pi.read("/etc/polkit-1/rules.d/50-window-evaluator.rules")
    assert 'subject.user == "evaluator"' in rule and "org.freedesktop.NetworkManager." in rule
    assert "evaluator:x:999:999::/var/lib/window-evaluator:/usr/sbin/nologin" in pi.read("/etc/passwd")
    assert "evaluator doctor" in out and "reboot" in out


def test_install_again_changes_nothing_and_keeps_the_technicians_config(pi):
    pi.run("install.sh")
    config = pi.root / "etc/window-evaluator/config.toml"
    config.write_text(config.read_text().replace('window_no = "01"', 'window_no = "12"'))
    before = pi.snapshot()
    out = pi.run("install.sh").stdout
    assert pi.snapshot() == before
    assert "reboot" not in out
    calls = pi.calls()
    assert not [c for c in calls if c.startswith(("useradd", "groupadd", "python3"))]
    assert "usermod --prefix ROOT --append --groups gpio,i2c,spi,dialout,netdev evaluator" in calls
    assert calls[-1] == "systemctl --root=ROOT enable window-evaluator.service"


def test_uninstall_keeps_the_data_and_the_config_unless_purged(pi):
    pi.run("install.sh")
    state = pi.root / "var/lib/window-evaluator"
    state.mkdir(parents=True)
    (state / "outbox.db").write_bytes(b"ratings not delivered yet")
    pi.run("uninstall.sh")
    assert pi.calls() == ["systemctl --root=ROOT disable window-evaluator.service",
                          f"systemctl --root=ROOT unmask {GETTYS}"]
    for gone in ("/etc/systemd/system/window-evaluator.service", "/opt/window-evaluator",
                 "/etc/polkit-1/rules.d/50-window-evaluator.rules", "/etc/modules-load.d/window-evaluator.conf",
                 "/etc/window-evaluator/cmdline-removed"):
        assert not pi.exists(gone), gone
    # The firmware's files are as they were before the install.
    assert pi.read("/boot/firmware/config.txt") == CONFIG_TXT
    assert pi.read("/boot/firmware/cmdline.txt") == CMDLINE
    assert (state / "outbox.db").read_bytes() == b"ratings not delivered yet"
    assert pi.exists("/etc/window-evaluator/config.toml")
    assert "evaluator:" in pi.read("/etc/passwd")

    pi.run("uninstall.sh", "--purge")
    assert not state.exists() and not pi.exists("/etc/window-evaluator")
    assert "userdel --prefix ROOT evaluator" in pi.calls()
    assert "evaluator:" not in pi.read("/etc/passwd")


def test_install_with_the_uart_console_on_debian_13(tmp_path):
    pi = FakePi(tmp_path, codename="trixie")
    out = pi.run("install.sh", "--console", "uart").stdout
    assert "trixie" in out
    assert 'port = "/dev/serial0"' in pi.read("/etc/window-evaluator/config.toml")
    block = pi.read("/boot/firmware/config.txt").split("[all]\n")[-1].splitlines()[:-1]
    assert block == ["dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000", "dtparam=spi=off", "enable_uart=1"]
    assert pi.read("/etc/modules-load.d/window-evaluator.conf").split("\n")[1:] == ["i2c-dev", ""]


def test_an_spi_panel_turns_on_spi_and_not_i2c_and_a_second_run_follows_the_config(pi):
    etc = pi.root / "etc/window-evaluator"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text((REPO / "config.toml").read_text().replace(
        'interface = "i2c"', 'interface = "spi"').replace('model = "ssd1306"', 'model = "ssd1351"'))
    out = pi.run("install.sh").stdout
    block = pi.read("/boot/firmware/config.txt").split("[all]\n")[-1].splitlines()[:-1]
    assert block == ["dtparam=i2c_arm=off", "dtparam=spi=on", "enable_uart=0", "dtoverlay=dwc2"]
    assert "GPIO the kernel holds: 7, 8, 9, 10, 11" in out
    # Back to I2C: the block follows, and only one block is ever there.
    (etc / "config.toml").write_text((REPO / "config.toml").read_text())
    pi.run("install.sh")
    config_txt = pi.read("/boot/firmware/config.txt")
    assert config_txt.count("[all]\ndtparam=i2c_arm=on\ndtparam=i2c_arm_baudrate=400000\n") == 1
    assert config_txt.count("# >>> window-evaluator") == 1


def test_install_from_a_wheelhouse_asks_no_index_and_no_apt_update(pi, tmp_path):
    pi.run("install.sh", "--wheelhouse", str(tmp_path / "wheels"))
    calls = pi.calls()
    assert "apt-get update -q" not in calls
    assert f"pip install --quiet --only-binary=:all: --no-deps --no-index --find-links {tmp_path / 'wheels'} " \
           f"-r {REPO}/deploy/requirements-pi.txt" in calls


def test_install_without_raspberry_pis_archive_says_where_lgpio_comes_from(pi):
    result = subprocess.run(["bash", str(REPO / "deploy/install.sh")], env={**pi.env, "CANDIDATE": "(none)"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "python3-lgpio" in result.stderr and "Raspberry Pi OS" in result.stderr


def test_install_and_uninstall_on_a_running_system_reload_and_restart(pi):
    pi.run("install.sh", SYSTEMD_LIVE="yes")
    assert pi.calls()[-4:] == [f"systemctl mask {GETTYS}", "systemctl daemon-reload",
                               "systemctl enable window-evaluator.service",
                               "systemctl restart window-evaluator.service"]
    pi.run("uninstall.sh", SYSTEMD_LIVE="yes")
    assert pi.calls() == ["systemctl disable --now window-evaluator.service", f"systemctl unmask {GETTYS}",
                          "systemctl daemon-reload"]


def test_install_refuses_an_unknown_console(pi):
    result = subprocess.run(["bash", str(REPO / "deploy/install.sh"), "--console", "bluetooth"], env=pi.env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "usb or uart" in result.stderr


# --- the unit -------------------------------------------------------------------------------

def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_is_what_the_device_needs():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["always"] and s["StartLimitIntervalSec"] == ["0"]
    assert int(s["WatchdogSec"][0]) >= 30
    assert s["User"] == ["evaluator"] and s["SupplementaryGroups"] == ["gpio i2c spi dialout netdev"]
    assert s["StateDirectory"] == ["window-evaluator"]
    # lgpio's notification pipes: a working directory the service can write.
    assert s["RuntimeDirectory"] == ["window-evaluator"]
    assert s["WorkingDirectory"] == ["/run/window-evaluator"] and "LG_WD=/run/window-evaluator" in s["Environment"]
    # Hardening that would break the hardware is absent.
    assert "PrivateDevices" not in s and "ProtectClock" not in s and s.get("PrivateUsers") in (None, ["no"])
    devices = {"char-gpiochip rw", "char-i2c rw", "char-spi rw", "char-ttyGS rw", "char-ttyAMA rw"}
    assert devices <= set(s["DeviceAllow"])
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0]  # nmcli talks D-Bus; sd_notify


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # verify wants ExecStart to exist: the same unit, pointing at a stand-in.
    program = tmp_path / "evaluator"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "window-evaluator.service"
    unit.write_text(UNIT.read_text().replace("/opt/window-evaluator/venv/bin/evaluator", str(program)))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "window-evaluator" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit_35_or_better(tmp_path):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("this systemd-analyze cannot rate a unit file offline (systemd < 250)")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.5


# --- sd_notify ---------------------------------------------------------------------------------

class FakeSystemd:
    """The NOTIFY_SOCKET end: collects what the device says."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def collect(self, until, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(self.messages):
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = FakeSystemd(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def has(text):
    return lambda messages: any(text in m for m in messages)


def test_notifier_speaks_the_sd_notify_protocol_on_a_path_and_an_abstract_socket(systemd):
    n = Notifier(systemd.path, watchdog_s=10)
    assert n.ready("running: window 01\nwith a newline") and n.watchdog() and n.stopping()
    assert systemd.collect(lambda m: len(m) == 3) == [
        "READY=1\nSTATUS=running: window 01 with a newline", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]
    abstract = FakeSystemd(f"@window-evaluator-test-{os.getpid()}")
    try:
        assert Notifier(abstract.path).status("hello")
        assert abstract.collect(lambda m: m) == ["STATUS=hello"]
    finally:
        abstract.close()


def test_notifier_outside_systemd_does_nothing_and_a_vanished_socket_is_no_crash(tmp_path):
    assert not Notifier(None).ready() and not Notifier(None).enabled
    assert not Notifier(str(tmp_path / "gone.sock")).watchdog()


def test_notifier_from_the_environment_takes_and_clears_the_variables():
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_environment(env)
    assert (n.address, n.watchdog_s) == ("/run/systemd/notify", 60.0) and env == {}
    # A watchdog meant for another process is not ours.
    other = Notifier.from_environment({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None


def test_watchdog_pings_only_while_healthy_and_says_why_not(systemd):
    problem = [""]
    dog = Watchdog(Notifier(systemd.path, watchdog_s=8), lambda: problem[0], describe=lambda: "running")
    assert dog.interval_s == 2
    assert dog.check()
    problem[0] = "the device loop has not turned for 31 s"
    assert not dog.check() and not dog.check()
    problem[0] = ""
    assert dog.check()
    assert systemd.collect(lambda m: len(m) == 4) == [
        "WATCHDOG=1", "STATUS=not healthy: the device loop has not turned for 31 s", "STATUS=running", "WATCHDOG=1"]


def test_liveness_says_ready_once_then_each_new_status():
    sent = []

    class Recorder(Notifier):
        def notify(self, *assignments):
            sent.append(assignments)
            return True

    now = [100.0]
    life = Liveness(Recorder("/x", watchdog_s=60), clock=lambda: now[0])
    for status in ("running: window 01", "running: window 01", "recovery (faults: display)"):
        life.tell(status)
    assert sent == [("READY=1", "STATUS=running: window 01"), ("STATUS=recovery (faults: display)",)]
    now[0] += 31
    assert life.age() == 31 and life.limit_s == 30


# --- the supervisor under systemd ----------------------------------------------------------------

class Device:
    """A supervisor on simulated pins and a luma dummy panel, with a notifier, run in a thread."""

    def __init__(self, tmp_path: Path, notifier: Notifier) -> None:
        data = tmp_path / "data"
        data.mkdir()
        self.store = SettingsStore(data / "settings.toml", overrides=[
            f'outbox.path="{data / "outbox.db"}"', f'upload.key_file="{data / "device.key"}"',
            'session.source="free"', "session.min_interval_s=0", "buttons.bounce_ms=0"])
        self.events: queue.Queue = queue.Queue()
        self.hardware, self.factory = make_sim_hardware(self.store.load(), self.events, staff_request)
        self.supervisor = Supervisor(self.store, lambda config: self.hardware, events=self.events,
                                     clocks=Clocks(synced=lambda: True), rebuild_hardware=False, notifier=notifier)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.supervisor.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def press(self, n: int) -> None:
        pin = self.factory.pin(PINS[n - 1])
        pin.drive_low()
        pin.drive_high()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_ready_after_the_first_frame_and_the_watchdog_follows_the_loop(tmp_path, systemd):
    device = Device(tmp_path, Notifier(systemd.path, watchdog_s=60))
    try:
        messages = systemd.collect(has("READY=1"))
        assert messages[0] == "READY=1\nSTATUS=running: device WE-0001, window 01"
        assert device.supervisor.mode == RUNNING and getattr(device.hardware.display, "count", 0) >= 1
        assert device.supervisor.health() == ""
        # A loop that stops turning (stuck on a bus) is unhealthy once half the timeout passed.
        assert "device loop has not turned" in device.supervisor.health(now=time.monotonic() + 31)
        # So is an outbox that no longer answers (a dying SD card).
        assert device.supervisor.app is not None
        outbox = device.supervisor.app.outbox

        def broken(state):
            raise sqlite3.OperationalError("disk I/O error")

        outbox.count = broken  # type: ignore[method-assign]
        assert device.supervisor.health() == "the outbox does not answer: OperationalError: disk I/O error"
        del outbox.count
    finally:
        device.close()


def test_sigterm_finishes_the_rating_in_hand_and_leaves_the_paused_frame(tmp_path, systemd):
    device = Device(tmp_path, Notifier(systemd.path))
    try:
        systemd.collect(has("READY=1"))
        device.press(1)
        device.events.join()   # the press was handled: its rating committed
    finally:
        device.close()
    assert not device.thread.is_alive()
    expected = render(BootScreen(__version__, STOPPED_MESSAGE), device.hardware.size).convert("1")
    # The frame stays on the panel after the hardware is closed (luma would blank it).
    panel = device.hardware.display.device
    assert isinstance(panel, dummy)
    assert list(panel.image.convert("1").getdata()) == list(expected.getdata())
    from device.queue.outbox import Outbox
    outbox = Outbox(str(tmp_path / "data" / "outbox.db"))
    try:
        assert [e["level"] for e in outbox.events()] == ["very_satisfied"]
    finally:
        outbox.close()


def test_the_entry_point_tells_systemd_ready_in_recovery_pings_and_stops_on_sigterm(tmp_path, systemd):
    # No panel and no pin library here: the production entry point starts in recovery.
    data = tmp_path / "data"
    env = {**os.environ, "NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000", "PYTHONPATH": str(REPO)}
    env.pop("WATCHDOG_PID", None)
    args = [sys.executable, "-m", "device", "--set", f'outbox.path="{data / "outbox.db"}"',
            "--set", f'upload.key_file="{data / "device.key"}"', "--set", f'console.settings_path="{data / "s.toml"}"',
            "--set", f'console.port="{tmp_path / "no-such-port"}"']
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        messages = systemd.collect(lambda m: has("READY=1")(m) and m.count("WATCHDOG=1") >= 2)
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=recovery" in ready, messages
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        systemd.collect(has("STOPPING=1"), timeout=2)
        assert any(m.startswith("STOPPING=1") for m in systemd.messages)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stderr is not None:
            process.stderr.close()
    assert sum(m.startswith("READY=1") for m in systemd.messages) == 1   # once only


# --- the wiring table and diagram --------------------------------------------------------------

def load_wiring():
    import importlib.util

    if "wiring" not in sys.modules:
        spec = importlib.util.spec_from_file_location("wiring", REPO / "tools" / "wiring.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["wiring"] = module   # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["wiring"]


def test_the_readme_table_and_the_diagram_are_made_from_the_pin_configuration():
    from PIL import Image

    from device import config as config_mod

    wiring = load_wiring()
    config = config_mod.load()
    table = wiring.markdown(config, wiring.connections(config))
    readme = (REPO / "README.md").read_text()
    assert f"{wiring.BEGIN}\n{table}{wiring.END}" in readme, "run python tools/wiring.py"
    with Image.open(REPO / "docs" / "wiring.png") as image:
        assert image.info["wiring-digest"] == wiring.digest(table), "run python tools/wiring.py"
    for pin in (*config.buttons.pins, config.buttons.staff_pin):
        assert f"| GPIO {pin} |" in table


def test_wiring_for_an_spi_panel_and_the_uart_console(tmp_path):
    from PIL import Image

    from device import config as config_mod

    wiring = load_wiring()
    config = config_mod.load(overrides=['display.interface="spi"', 'display.model="ssd1351"',
                                        'console.port="/dev/serial0"', 'buttons.pins=[5, 6, 13, 19, 26]'])
    wires = wiring.connections(config)
    by_what = {w.what: (w.gpio, w.header) for w in wires}
    assert by_what["DC"] == (24, 18) and by_what["RES (RST)"] == (25, 22) and by_what["CLK (SCLK)"] == (11, 23)
    assert by_what["USB-serial adapter RXD"] == (14, 8)
    headers = [w.header for w in wires]
    assert len(headers) == len(set(headers))               # no header pin used twice
    out = tmp_path / "wiring.png"
    digest = wiring.write_png(config, str(out))
    with Image.open(out) as image:
        assert image.info["wiring-digest"] == digest and image.size[0] == 900
