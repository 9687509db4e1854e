"""Every experiment, shrunk to seconds, run with ``device="cuda"`` (``--device cuda``): the
device the full configs are meant for.  Checks that each completes with its figures and that
the device-independent numbers (the GP predictions: the data and the networks' initial
parameters are drawn on the CPU) match a CPU run.  Skipped without a CUDA device."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from wideNN.lab.runner import run_experiment

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
from _data import DATA  # $WIDENN_DATA or ../shared/data
PNG = b"\x89PNG\r\n\x1a\n"

TINY = {
    "quickstart": ["n_train=100", "n_test=100", "widths=[16, 64]", "seeds=2", "steps=50", "ntk_points=20"],
    "kernel_geometry": ["depths=[1, 4]", "num_angles=31", "prior.num_points=50", "activations=[relu, erf, tanh]"],
    "width_scaling": ["widths=[64, 256]", "train_widths=[64]", "seeds_per_width=2", "train_seeds=1",
                      "train_steps=10", "n_points=16", "n_test=8"],
    "posterior_vs_ensemble": ["width=128", "ensemble_size=8", "times=[0, 5, 20]", "dynamics_widths=[32, 128]",
                              "dynamics_steps=20", "eval_every=5", "n_test=20"],
    "random_labels": ["n_train=50", "n_test=100", "width=128", "steps=60", "eval_every=10"],
    "hyperparameters": ["n_train=100", "n_test=100", "weight_variances=[0.5, 1.5]", "bias_variances=[0.0, 1.0]",
                        "fit.steps=2"],
    "uncertainty": ["n_train=200", "n_test=150", "fit.steps=2", "fit.max_points=100", "points_per_bin=50"],
    "uci_regression": [f"data_dir={DATA}", "datasets=[concrete]", "splits=1", "max_train=200", "fit.steps=2",
                       "fit.max_points=100", "mlp.steps=20", "mlp.ensemble_size=2", "mlp.width=32"],
    "lee2018_table": [f"data_dir={DATA}", "n_test=100", "nn.steps=10",
                      "rows=[{dataset: mnist, n_train: 100, model: GP-3-1.45-0.28, activation: relu},"
                      " {dataset: mnist, n_train: 100, model: GP-2-1.96-0.62, activation: tanh},"
                      " {dataset: mnist, n_train: 100, model: NN-1-64-1.00-0.10, activation: relu}]"],
}
NEEDS = {"uci_regression": DATA / "uci" / "concrete", "lee2018_table": DATA / "mnist"}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    monkeypatch.delenv("WIDENN_EXPERIMENTS_DIR", raising=False)


def _run(name: str, out: Path, device: str) -> dict:
    if name in NEEDS and not NEEDS[name].is_dir():
        pytest.skip(f"no data under {NEEDS[name]}")
    run_experiment(CONFIGS / f"{name}.yaml", out_dir=out, overrides=TINY[name], device=device, quiet=True)
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    assert res["metadata"]["device"].startswith(device)
    assert res["figures"]
    for fig in res["figures"]:
        assert (out / fig).read_bytes()[:8] == PNG
    return res


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_runs_on_cuda(name: str, tmp_path: Path):
    res = _run(name, tmp_path, "cuda")  # _run asserts completion, device and figures
    assert res["metadata"]["status"] == "complete"


def _close(a, b, rel: float) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(u, v, rel) for u, v in zip(a, b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


def test_gp_numbers_do_not_depend_on_the_device(tmp_path: Path):
    gpu = _run("quickstart", tmp_path / "gpu", "cuda")["results"]
    cpu = _run("quickstart", tmp_path / "cpu", "cpu")["results"]
    for key in ("nngp_mse", "ntk_gp_mse", "ntk_gp_t_mse", "nngp_accuracy", "ntk_gp_accuracy"):
        assert _close(gpu["gp"][key], cpu["gp"][key], 1e-8), key
    assert _close(gpu["max_learning_rate"], cpu["max_learning_rate"], 1e-9)
    # the ensembles start from the same CPU-drawn parameters and see the same data
    for w in (16, 64):
        assert _close(gpu[f"nn/width={w}"]["test_mse"], cpu[f"nn/width={w}"]["test_mse"], 1e-3)
    gpu = _run("posterior_vs_ensemble", tmp_path / "gpu2", "cuda")["results"]
    cpu = _run("posterior_vs_ensemble", tmp_path / "cpu2", "cpu")["results"]
    assert _close(gpu["gp"]["mean"], cpu["gp"]["mean"], 1e-5) and _close(gpu["gp"]["std"], cpu["gp"]["std"], 1e-5)
    assert len(gpu["ensemble"]["loss_mean"]) == 21
