"""The benchmark scripts start from any working directory (they import wideNN from the
checkout) and accept the ``--device`` their docstrings and RESULTS.md use.  One Python process
runs every script's ``--help`` (a process per script cost ~2.5 s each in imports)."""
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

DRIVER = r"""
import contextlib, io, os, runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    sys.path.insert(0, os.path.dirname(path))  # as when the script runs itself
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None) or "--device" not in out.getvalue():
        failed.append(f"{path}: exit {code}, --device {'--device' in out.getvalue()}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_benchmark_scripts_start_and_take_device(tmp_path: Path):
    scripts = sorted(str(p) for p in BENCH.glob("bench_*.py"))
    assert len(scripts) >= 10
    out = subprocess.run([sys.executable, "-c", DRIVER, *scripts], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
