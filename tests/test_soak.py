"""The power-cut soak, short: 20 SIGKILLs of the simulator during a press storm.

``tools/soak_crash.py`` does the work (200 kills by default, as a script);
here it runs 20. After each kill the outbox passes SQLite's integrity_check
and its chain is whole; at the end every rating that reached a thank-you
frame is stored by the hall server exactly once, with no seq gap.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)

pytestmark = pytest.mark.timeout(180)


def test_twenty_power_cuts_lose_nothing_and_store_nothing_twice(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "soak_crash.py"), "--cycles", "20",
         "--keep", str(tmp_path / "soak")],
        capture_output=True, text=True, timeout=170, cwd=ROOT)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-2000:]
    summary = json.loads(lines[-1])
    assert summary["ok"] and result.returncode == 0, (summary["problems"], result.stdout[-2000:])
    assert summary["thanked"] > 20 and summary["stored"] >= summary["kept"]
