"""Experiment grids split over the ranks of a ``torchrun`` launch (wideNN.lab.distributed_grid):
a launch that fails mid-grid keeps its finished cells, the rerun computes only the rest, and
the merged results.json equals a single-process run's."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wideNN.distributed.group import free_port
from wideNN.lab.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENT = textwrap.dedent('''
    """Empirical NTK sums of small networks over widths × seeds (a grid test)."""
    import functools
    import os

    import torch

    import wideNN as wn

    DEFAULTS = {"widths": [4, 8, 16], "seeds": 2, "fail_on": "", "seed": 0, "dtype": "float64"}


    def run(cfg, ctx):
        x = torch.randn(5, 3, generator=ctx.generator(device="cpu"), dtype=torch.float64)
        arch = wn.Architecture(depth=1)

        def cell(w, s):
            with open(ctx.out_dir / f"calls.{os.environ.get('RANK', '0')}.txt", "a") as f:
                f.write(f"w={w}/s={s}\\n")
            if cfg["fail_on"] == f"w={w}/s={s}" and not (ctx.out_dir / "allow").exists():
                raise RuntimeError("this cell fails on the first launch")
            net = arch.build(3, w, 2, seed=1000 * s + w, dtype=torch.float64)
            return {"ntk_sum": float(wn.empirical_ntk(net, x).sum())}

        cells = {f"w={w}/s={s}": functools.partial(cell, w, s) for w in cfg["widths"] for s in range(cfg["seeds"])}
        done = ctx.grid(cells, desc="cells")
        for w in cfg["widths"]:
            ctx.add_row(f"w={w}", {"width": w, "ntk_sum": sum(done[f"w={w}/s={s}"]["ntk_sum"]
                                                              for s in range(cfg["seeds"]))})
''')


def _calls(out: Path) -> list[str]:
    lines = [ln for p in out.glob("calls.*.txt") for ln in p.read_text().split()]
    for p in out.glob("calls.*.txt"):
        p.unlink()
    return lines


def _launch(cfg: Path, out: Path, exps: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WIDENN_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "wideNN", "run", str(cfg),
           "--out", str(out), "--experiments-dir", str(exps), "--quiet"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


EVERYTHING = {f"w={w}/s={s}" for w in (4, 8, 16) for s in range(2)}


def _setup(tmp_path, fail_on=""):
    """The experiment folder, a config, and the single-process reference run."""
    exps = tmp_path / "exps"
    exps.mkdir()
    (exps / "gridcheck.py").write_text(EXPERIMENT)
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(f"experiment: gridcheck\nfail_on: '{fail_on}'\n")
    single = tmp_path / "single"
    single.mkdir()
    (single / "allow").touch()
    run_experiment(cfg, out_dir=single, experiments_dir=exps, quiet=True)
    assert sorted(_calls(single)) == sorted(EVERYTHING)
    return exps, cfg, single


def _same_results(single: Path, out: Path) -> None:
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, out))
    assert a["results"] == b["results"] and a["rows"] == b["rows"] and a["config"] == b["config"]
    assert b["metadata"]["status"] == "complete"
    assert (out / "table.txt").read_text() == (single / "table.txt").read_text()


def test_torchrun_grid_equals_single_process(tmp_path):
    """`torchrun --nproc-per-node=2 -m wideNN run CONFIG`: each cell computed once, on one of
    the ranks, and one results.json equal to the single-process run's."""
    exps, cfg, single = _setup(tmp_path)
    out = tmp_path / "launch"
    res = _launch(cfg, out, exps)
    assert res.returncode == 0, res.stderr[-3000:]
    calls = {r: (out / f"calls.{r}.txt").read_text().split() for r in (0, 1)}
    assert calls[0] and calls[1] and sorted(calls[0] + calls[1]) == sorted(EVERYTHING)
    _same_results(single, out)
    assert not list(out.glob("*.tmp")) and not list((out / ".grid").glob("rank*.json"))


@pytest.mark.slow
def test_torchrun_grid_resumes_after_a_failed_launch(tmp_path):
    exps, cfg, single = _setup(tmp_path, fail_on="w=16/s=1")
    everything = EVERYTHING

    out = tmp_path / "launch"
    first = _launch(cfg, out, exps)
    assert first.returncode != 0 and "this cell fails on the first launch" in first.stderr
    first_calls = set(_calls(out))
    shards = {k for p in (out / ".grid").glob("rank*.json") for k in json.loads(p.read_text())}
    assert "w=16/s=1" in first_calls and shards == first_calls - {"w=16/s=1"} and shards
    (out / "allow").touch()
    second = _launch(cfg, out, exps)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(_calls(out)) == sorted(everything - shards)       # only the unfinished cells
    assert not list((out / ".grid").glob("rank*.json"))
    _same_results(single, out)
    assert json.loads((out / "results.json").read_text())["metadata"]["sessions"] == 2
