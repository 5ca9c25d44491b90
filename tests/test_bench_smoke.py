"""The budget benchmarks still run (tiny sizes; their figures are not checked here)."""

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench")

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("script, args", [
    ("bench_outbox.py", ["--events", "50", "--batch", "20", "--ratings", "50"]),
    ("bench_uplink.py", ["--events", "300", "--baseline-events", "20"]),
])
def test_benchmark_runs_and_prints_its_ratio(script, args):
    result = subprocess.run([sys.executable, os.path.join(BENCH, script), *args],
                            capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio" in result.stdout
