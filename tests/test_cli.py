"""Tests of the ``wideNN`` command line and of the kernel_geometry experiment run through it."""
from __future__ import annotations

import json
import math
import runpy
import sys
import textwrap
from pathlib import Path

import pytest

import wideNN
from wideNN.lab.config import load_config, resolve_config
from wideNN.lab.discovery import load_experiment
from wideNN.lab.cli import main

REPO = Path(wideNN.__file__).resolve().parents[1]

FAKE = textwrap.dedent(
    '''
    """Adds two numbers."""
    DEFAULTS = {"a": 1, "b": 2.0, "opt": {"k": 1}}
    def run(cfg, ctx):
        ctx.record("sum", cfg["a"] + cfg["b"] + cfg["opt"]["k"])
        ctx.add_row("r", {"sum": ctx.get("sum")})
    '''
)


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    e, c = tmp_path / "exps", tmp_path / "cfgs"
    e.mkdir(), c.mkdir()
    (e / "adder.py").write_text(FAKE)
    (e / "__init__.py").write_text("")
    (c / "add_small.yaml").write_text("experiment: adder\na: 5\n")
    (c / "add_big.yaml").write_text("experiment: adder\na: 500\n")
    (c / "orphan.yaml").write_text("experiment: gone\n")
    monkeypatch.setenv("WIDENN_EXPERIMENTS_DIR", str(e))
    monkeypatch.setenv("WIDENN_CONFIGS_DIR", str(c))
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    return e, c


def test_run_with_set_overrides(dirs, tmp_path: Path, capsys: pytest.CaptureFixture):
    _, c = dirs
    out = tmp_path / "out"
    rc = main(["run", str(c / "add_small.yaml"), "--out", str(out), "--set", "b=0.5", "opt.k=10"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["results"]["sum"] == 15.5 and res["config"]["b"] == 0.5 and res["config"]["opt"]["k"] == 10
    printed = capsys.readouterr().out
    assert "sum" in printed and "15.5" in printed  # the final table
    assert (out / "table.txt").read_text().split() == ["sum", "----", "15.5"]


@pytest.mark.parametrize(
    "setting,message",
    [
        ("a=x", "'a': expected int, got str"),
        ("opt.kk=1", "unknown config key 'opt.kk' (did you mean 'opt.k'?)"),
        ("bb=1", "unknown config key 'bb' (did you mean 'b'?)"),
        ("a", "expected key=value"),
    ],
)
def test_bad_overrides_exit_2_naming_the_key(dirs, tmp_path: Path, capsys, setting: str, message: str):
    _, c = dirs
    rc = main(["run", str(c / "add_small.yaml"), "--out", str(tmp_path / "o"), "--set", setting])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_config_and_cuda(dirs, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    import torch

    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, c = dirs
    assert main(["run", str(c / "add_small.yaml"), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_config_change_refused_then_fresh(dirs, tmp_path: Path, capsys):
    _, c = dirs
    out = str(tmp_path / "out")
    assert main(["run", str(c / "add_small.yaml"), "--out", out, "--quiet"]) == 0
    assert main(["run", str(c / "add_small.yaml"), "--out", out, "--set", "a=6"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "a: 5 -> 6" in err and "--fresh" in err
    assert main(["run", str(c / "add_small.yaml"), "--out", out, "--set", "a=6", "--fresh", "--quiet"]) == 0
    assert json.loads(Path(out, "results.json").read_text())["results"]["sum"] == 9.0


def test_list_shows_experiments_and_their_configs(dirs, capsys):
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("adder") and "Adds two numbers." in lines[0]
    assert sorted(Path(line.strip()).name for line in lines[1:]) == ["add_big.yaml", "add_small.yaml"]
    assert "orphan.yaml" in captured.err and "'gone'" in captured.err


def test_python_m_widenn_lists_the_repository(monkeypatch: pytest.MonkeyPatch, capsys):
    # runpy executes wideNN/__main__.py as `python -m wideNN` would, without paying
    # for a second interpreter that re-imports torch.
    for var in ("WIDENN_EXPERIMENTS_DIR", "WIDENN_CONFIGS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["wideNN", "list"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("wideNN", run_name="__main__")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "kernel_geometry" in out
    assert "configs/kernel_geometry.yaml" in out and "configs/kernel_geometry_full.yaml" in out


# ---------------------------------------------------------------- kernel_geometry end to end


def test_repository_configs_validate(tmp_path: Path):
    """Every shipped config resolves against its experiment's schema (resolve_config raises on
    unknown keys and wrong types).  Data folders are machine-specific: point them at tmp_path."""
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 18  # a small and a full config for each of the 9 experiments
    for path in paths:
        cfg = load_config(path)
        cfg = {k: (str(tmp_path) if k.endswith("_dir") and v is not None else v) for k, v in cfg.items()}
        module = load_experiment(cfg["experiment"], REPO / "experiments")
        resolved = resolve_config(cfg, module.DEFAULTS)
        assert set(module.DEFAULTS) <= set(resolved), path.name


def test_kernel_geometry_small_config_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    if not hasattr(wideNN, "Architecture"):
        pytest.skip("wideNN.Architecture not available yet")
    monkeypatch.delenv("WIDENN_EXPERIMENTS_DIR", raising=False)
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    out = tmp_path / "kg"
    cfg = REPO / "configs" / "kernel_geometry.yaml"
    rc = main(["run", str(cfg), "--out", str(out), "--set", "num_angles=31", "depths=[1, 4, 16]",
               "prior.num_points=40", "prior.num_samples=3"])
    assert rc == 0, capsys.readouterr().err
    for name in ("kernel_vs_angle.png", "prior_samples.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    assert sorted(res["figures"]) == ["kernel_vs_angle.png", "prior_samples.png"]
    r = res["results"]
    angles = r["angles"]
    assert len(angles) == 31 and angles[0] == 0.0 and math.isclose(angles[-1], math.pi)
    half_pi = []
    for depth in (1, 4, 16):
        c = r[f"kernel/relu/depth={depth}"]
        assert len(c["nngp"]) == 31 and len(c["ntk"]) == 31
        assert math.isclose(c["nngp"][0], 1.0, rel_tol=1e-9) and math.isclose(c["ntk"][0], 1.0, rel_tol=1e-9)
        assert c["nngp_diag"] > 0 and c["ntk_diag"] > 0
        assert math.isclose(c["nngp_at_pi"], c["nngp"][-1], rel_tol=1e-9)
        half_pi.append(c["nngp_at_half_pi"])
    assert half_pi == sorted(half_pi)  # deeper ReLU nets give flatter kernels (Lee et al. 2018; Schoenholz et al. 2017)
    prior = r["prior/relu"]
    assert len(prior["t"]) == 40 and len(prior["samples"]) == 3 and len(prior["samples"][0]) == 40
    assert prior["jitter"] > 0
    assert len(res["rows"]) == 3


def test_closed_pipe_ends_quietly(monkeypatch, tmp_path):
    # `wideNN list | head`: the reader leaves, the next write raises BrokenPipeError
    from wideNN.lab import cli

    def gone(args):
        raise BrokenPipeError(32, "Broken pipe")

    with open(tmp_path / "stdout", "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(cli, "_list", gone)
        assert cli.main(["list"]) == 0
