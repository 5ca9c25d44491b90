"""End to end: the simulator process, its GPIO, outbox and uploader, a real hall server.

Each test runs ``python -m sim`` as a person or CI would and checks what the
hall server stored.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from device.levels import Level
from device.records import first_break

KEY = "sim-test-key"
FAST = ["--set", "session.source=free", "--set", "session.min_interval_s=0.5", "--set", "session.thanks_s=0.3",
        "--set", "upload.backoff_min_s=0.2", "--set", "upload.backoff_max_s=1"]

pytestmark = pytest.mark.timeout(120)



def sim(args, tmp_path, script=None, timeout=60, data="data"):
    cmd = [sys.executable, "-m", "sim", "--data", str(tmp_path / data), *args]
    if script is not None:
        path = tmp_path / "script.txt"
        path.write_text(script, encoding="utf-8")
        cmd += ["--script", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ratings(events):
    return [e for e in events if e["type"] == "rating"]


def test_all_five_levels_reach_the_embedded_server_signed_and_chained(tmp_path):
    script = "".join(f"press {n}\nwait 0.7\n" for n in range(1, 6))
    report = tmp_path / "report.json"
    result = sim([*FAST, "--report", str(report), "--frames", str(tmp_path / "frames")], tmp_path, script)
    assert result.returncode == 0, result.stderr
    stored = json.loads(report.read_text(encoding="utf-8"))
    assert [e["seq"] for e in stored] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in stored] == ["rating"] * 5
    assert [e["level"] for e in stored] == [lv.value for lv in Level]
    assert [e["satisfaction"] for e in stored] == [5, 4, 3, 2, 1]
    assert first_break(stored) is None
    assert all(e["channel"] == "5" and e["assess_number"] == 1 for e in stored)
    # Five ratings within a few seconds is a burst: the 4th and 5th are kept but flagged.
    assert [e["suspect"] for e in stored] == [False, False, False, True, True]
    assert "screen: thanks" in result.stderr
    assert len(os.listdir(tmp_path / "frames")) >= 6


def test_signatures_are_checked_by_the_server(tmp_path, hall):
    # The device signs with a key the server does not know: nothing is stored.
    result = sim([*FAST, "--server", hall.url, "--device-key", "not-the-key", "--drain-timeout", "2"],
                 tmp_path, "press 1\n")
    assert result.returncode == 1
    assert hall.events() == []
    assert any(status == 401 for _, _, status in hall.requests_log)


def test_free_mode_three_quick_presses_make_one_rating(tmp_path, hall):
    result = sim(["--set", "session.source=free", "--set", "session.min_interval_s=5", "--server", hall.url,
                  "--device-key", KEY],
                 tmp_path, "press 2\nwait 0.5\npress 1\nwait 0.5\npress 5\n")
    assert result.returncode == 0, result.stderr
    assert [e["level"] for e in hall.events()] == ["satisfied"]
    assert result.stderr.count("ignored: inside the lockout") == 2


def test_staff_button_mode_end_to_end(tmp_path, hall):
    script = ("press 1\nwait 0.3\n"          # no request: not a rating
              "staff\nwait 0.5\npress 2\nwait 0.3\npress 3\nwait 0.3\n"   # one counts
              "staff\nwait 2.5\n")            # nobody presses: unrated
    result = sim([*FAST, "--set", "session.source=staff_button", "--set", "session.rating_window_s=1.5",
                  "--set", "session.later_s=0.5", "--server", hall.url, "--device-key", KEY],
                 tmp_path, script)
    assert result.returncode == 0, result.stderr
    stored = hall.events()
    assert [(e["type"], e.get("level")) for e in stored] == [("rating", "satisfied"), ("unrated", None)]
    assert stored[0]["session_id"] and stored[1]["session_id"] != stored[0]["session_id"]
    assert first_break(stored) is None


def test_network_down_ratings_wait_across_a_restart(tmp_path, hall):
    args = [*FAST, "--server", hall.url, "--device-key", KEY]
    first = sim([*args, "--drain-timeout", "1"], tmp_path, "network down\npress 1\nwait 0.7\npress 4\n")
    assert first.returncode == 1          # not delivered: said so, nothing lost
    assert hall.events() == []
    second = sim(args, tmp_path, "wait 0.1\n")
    assert second.returncode == 0, second.stderr
    assert [e["level"] for e in hall.events()] == ["very_satisfied", "dissatisfied"]


def test_server_errors_then_recovery_store_each_event_once(tmp_path, hall):
    hall.inject("status", count=3, status=500)
    result = sim([*FAST, "--server", hall.url, "--device-key", KEY], tmp_path,
                 "press 1\nwait 0.7\npress 2\n")
    assert result.returncode == 0, result.stderr
    stored = hall.events()
    assert [e["seq"] for e in stored] == [1, 2] and first_break(stored) is None
    assert sum(1 for _, path, status in hall.requests_log if status == 500) == 3


@pytest.mark.parametrize("network", ["down", "up"])
def test_killed_right_after_thanks_the_rating_is_delivered_exactly_once(tmp_path, hall, network):
    cmd = [sys.executable, "-m", "sim", "--data", str(tmp_path / "data"), *FAST,
           "--server", hall.url, "--device-key", KEY]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stderr is not None
    stderr = proc.stderr
    seen = threading.Event()

    def watch():
        for line in stderr:
            if "screen: thanks" in line:
                # The moment the thank-you frame is on the panel, the power goes.
                proc.send_signal(signal.SIGKILL)
                seen.set()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    proc.stdin.write(f"network {network}\npress 3\n")
    proc.stdin.flush()
    assert seen.wait(30), "no thank-you frame"
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    again = sim(["--server", hall.url, "--device-key", KEY, *FAST], tmp_path, "wait 0.1\n")
    assert again.returncode == 0, again.stderr
    stored = hall.events()
    assert [(e["seq"], e["level"]) for e in stored] == [(1, "basically_satisfied")]


def test_the_built_in_demo_prints_what_the_server_stored(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sim", "--demo", "--data", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "5 events" in result.stdout
    for level in Level:
        assert level.value in result.stdout


def test_a_bad_script_line_is_named(tmp_path):
    result = sim([], tmp_path, "press 1\npress 9\njump\n")
    assert result.returncode == 2
    assert "line 2" in result.stderr and "line 3" in result.stderr


def test_stdin_lines_drive_the_simulator(tmp_path, hall):
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "--data", str(tmp_path / "data"), *FAST, "--server", hall.url,
         "--device-key", KEY], input="press 5\nbogus\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "unknown command 'bogus'" in proc.stderr
    assert [e["level"] for e in hall.events()] == ["very_dissatisfied"]


def test_the_device_key_is_never_printed(tmp_path, hall):
    secret = "do-not-print-" + str(time.time_ns())
    hall.set_key("WE-0001", secret)
    result = sim([*FAST, "--server", hall.url, "--device-key", secret], tmp_path, "press 1\n")
    assert result.returncode == 0, result.stderr
    assert len(hall.events()) == 1
    assert secret not in result.stdout and secret not in result.stderr


def test_hall_mode_sessions_carry_their_ticket_and_expire_unrated(tmp_path):
    script = ("wait 0.5\nsession A023\nwait 0.6\npress 2\nwait 0.4\n"
              "session A024\nwait 2.5\n")
    report = tmp_path / "report.json"
    result = sim([*FAST, "--set", "session.source=hall", "--set", "session.rating_window_s=1.5",
                  "--set", "session.later_s=0.3", "--report", str(report)], tmp_path, script)
    assert result.returncode == 0, result.stderr
    stored = json.loads(report.read_text(encoding="utf-8"))
    assert [(e["type"], e["ticket"]) for e in stored] == [("rating", "A023"), ("unrated", "A024")]
    assert stored[0]["level"] == "satisfied" and stored[0]["task_name"] == "综合受理"


def test_hall_assignment_sets_window_staff_and_survives_a_restart_offline(tmp_path, hall):
    hall.set_assignment(None, {
        "window": {"no": "08", "name": "不动产登记"}, "staff": {"no": "8802", "name": "李四", "dept": ""},
        "qr_url": "https://hcp.example.org/w/08", "reasons_version": "v1",
        "reasons": [{"level": "dissatisfied", "code": "401", "text": "办事效率低"}]})
    args = [*FAST, "--server", hall.url, "--device-key", KEY]
    first = sim(args, tmp_path, "wait 1\npress 1\n")
    assert first.returncode == 0, first.stderr
    # The hall server no longer serves an assignment: after a restart the kept one is used.
    hall.set_assignment(None, None)
    second = sim(args, tmp_path, "press 2\nwait 0.3\n")
    assert second.returncode == 0, second.stderr
    assert "assignment: window 08, staff 8802" in second.stderr
    assert [(e["window_no"], e["staff_name"]) for e in hall.events()] == [("08", "李四"), ("08", "李四")]
