"""The benchmark scripts start from any working directory (they import wideNN from the
checkout) and accept the ``--device`` their docstrings and RESULTS.md use."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_benchmark_script_starts_and_takes_device(script: str, tmp_path: Path):
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--device" in out.stdout
