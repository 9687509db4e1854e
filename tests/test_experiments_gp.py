"""End-to-end tests of the GP experiments: hyperparameters, uncertainty, uci_regression.

Each runs its small config (shrunk further with overrides where the full small config takes
longer than a unit test should) through the CLI into tmp_path and checks results.json and
the figures. Tests that need the real UCI data skip when ``../shared/data`` is missing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import wideNN
from wideNN.lab.config import load_config, resolve_config
from wideNN.lab.discovery import experiment_summary, load_experiment
from wideNN.lab.cli import main

REPO = Path(wideNN.__file__).resolve().parents[1]
from _data import DATA as SHARED_DATA, missing
EXPERIMENTS = ("hyperparameters", "uncertainty", "uci_regression")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WIDENN_EXPERIMENTS_DIR", raising=False)
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")


def _run(name: str, out: Path, capsys, *overrides: str, config: str | None = None) -> dict:
    cfg = REPO / "configs" / f"{config or name}.yaml"
    args = ["run", str(cfg), "--out", str(out), "--quiet"]
    if overrides:
        args += ["--set", *overrides]
    rc = main(args)
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    for fig in res["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return res


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_configs_validate(name: str):
    paths = sorted((REPO / "configs").glob(f"{name}*.yaml"))
    assert {p.stem for p in paths} >= {name, f"{name}_full"}
    module = load_experiment(name, REPO / "experiments")
    assert experiment_summary(name, REPO / "experiments")
    for path in paths:
        cfg = load_config(path)
        assert cfg["experiment"] == name
        # the full configs point at ../shared/data, which need not exist here
        cfg = {k: v for k, v in cfg.items() if not k.endswith("_dir")}
        resolve_config(cfg, module.DEFAULTS)


# ---------------------------------------------------------------- hyperparameters


def test_hyperparameters_tiny_grid(tmp_path: Path, capsys):
    out = tmp_path / "hp"
    res = _run("hyperparameters", out, capsys, "n_train=100", "n_test=100",
               "weight_variances=[0.5, 1.5, 3.0]", "bias_variances=[0.0, 1.0]", "fit.steps=2")
    assert sorted(res["figures"]) == ["accuracy_heatmap.png", "lml_heatmap.png"]
    r = res["results"]
    assert r["weight_variances"] == [0.5, 1.5, 3.0] and r["bias_variances"] == [0.0, 1.0]
    acc, lml = np.array(r["accuracy"]), np.array(r["lml"])
    assert acc.shape == lml.shape == (2, 3)
    assert np.all((acc > 0.5) & (acc <= 1.0))  # 10 classes: chance is 0.1
    assert np.all(np.isfinite(lml))
    assert r["accuracy_range"] == [acc.min(), acc.max()]
    best = r["grid_best_lml"]
    assert best["lml"] == lml.max()
    i, j = np.unravel_index(lml.argmax(), lml.shape)
    assert (best["weight_variance"], best["bias_variance"]) == (r["weight_variances"][j], r["bias_variances"][i])
    fit = r["fitted"]
    assert fit["weight_variance"] > 0 and fit["bias_variance"] >= 0 and math.isclose(fit["noise_variance"], 0.01, rel_tol=1e-5)
    assert len(fit["lml_history"]) == 2
    assert fit["lml"] >= fit["lml_history"][0]  # the fit climbed the marginal likelihood
    assert len(res["rows"]) == 6


@pytest.mark.slow
def test_hyperparameters_small_config(tmp_path: Path, capsys):
    res = _run("hyperparameters", tmp_path / "hp", capsys)
    r = res["results"]
    acc = np.array(r["accuracy"])
    assert acc.shape == (len(r["bias_variances"]), len(r["weight_variances"]))
    assert acc.max() > 0.95
    # the marginal-likelihood fit on the grid's noise slice lands near the grid's best LML
    # and at least matches it
    fit, best = r["fitted"], r["grid_best_lml"]
    assert fit["lml"] >= best["lml"] - 1e-6 * abs(best["lml"])
    assert fit["accuracy"] > 0.95


# ---------------------------------------------------------------- uncertainty


def test_uncertainty_small_digits(tmp_path: Path, capsys):
    out = tmp_path / "unc"
    res = _run("uncertainty", out, capsys, "n_train=300", "n_test=400", "fit.steps=2", "fit.max_points=100")
    assert res["figures"] == ["calibration.png"]
    r = res["results"]
    assert r["n_train"] == 300 and r["n_test"] == 400
    hp = r["hyperparameters"]
    assert hp["fit_points"] == 100 and len(hp["lml_history"]) == 2 and hp["noise_variance"] > 0
    for kernel in ("nngp", "ntk"):
        s = r[kernel]
        assert len(s["bin_variance"]) == len(s["bin_mse"]) == len(s["counts"]) == 4
        assert sum(s["counts"]) == 400 and all(c == 100 for c in s["counts"])
        assert s["bin_variance"] == sorted(s["bin_variance"]) and s["bin_variance"][0] > 0
        assert len(r[f"points/{kernel}"]["variance"]) == 400
        # Lee et al. 2018's claim: realized error grows with the predicted variance
        assert s["correlation"] > 0.7 and s["spearman_points"] > 0.3
        assert 0.2 < s["calibration_ratio"] < 5 and s["calibration_ratio_with_noise"] < s["calibration_ratio"]
        assert s["accuracy"] > 0.9
    assert [row["kernel"] for row in res["rows"].values()] == ["NNGP", "NTK"]


def test_uncertainty_fixed_hyperparameters_nngp_only(tmp_path: Path, capsys):
    res = _run("uncertainty", tmp_path / "unc", capsys, "n_train=200", "n_test=150", "fit.steps=0",
               "kernels=[nngp]", "points_per_bin=50", "include_noise=true")
    r = res["results"]
    assert r["hyperparameters"] == {"weight_variance": 2.0, "bias_variance": 0.5, "noise_variance": 0.01}
    assert "ntk" not in r and r["nngp"]["counts"] == [50, 50, 50]
    assert math.isclose(r["nngp"]["calibration_ratio"], r["nngp"]["calibration_ratio_with_noise"])


@pytest.mark.slow
def test_uncertainty_small_config(tmp_path: Path, capsys):
    r = _run("uncertainty", tmp_path / "unc", capsys)["results"]
    for kernel in ("nngp", "ntk"):
        assert r[kernel]["correlation"] > 0.9 and r[kernel]["accuracy"] > 0.97


# ---------------------------------------------------------------- uci_regression

needs_uci = pytest.mark.skipif(not (SHARED_DATA / "uci" / "yacht" / "data.txt").is_file(),
                               reason=missing("uci/yacht/data.txt"))


def test_uci_missing_data_dir_fails_at_start(tmp_path: Path, capsys):
    missing = tmp_path / "no_such_folder"
    rc = main(["run", str(REPO / "configs" / "uci_regression.yaml"), "--out", str(tmp_path / "o"),
               "--set", f"data_dir={missing}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'data_dir'" in err and "does not exist" in err
    assert not (tmp_path / "o" / "results.json").exists()  # refused before running anything
    rc = main(["run", str(REPO / "configs" / "uci_regression.yaml"), "--out", str(tmp_path / "o2"),
               "--set", "data_dir=null"])
    assert rc == 2 and "'data_dir'" in capsys.readouterr().err


@needs_uci
def test_uci_yacht_one_split(tmp_path: Path, capsys):
    res = _run("uci_regression", tmp_path / "uci", capsys, f"data_dir={SHARED_DATA}", "datasets=[yacht]",
               "splits=2", "mlp.steps=200", "mlp.ensemble_size=2", "mlp.width=32")
    assert sorted(res["figures"]) == ["uci_rmse.png", "uci_test_ll.png"]
    rows = list(res["rows"].values())
    assert [(r["split"], r["model"]) for r in rows] == [(s, m) for s in (0, 1) for m in ("nngp", "ntk", "mlp")]
    for r in rows:
        assert r["dataset"] == "yacht" and r["n_test"] == 31 and r["n_train"] == 277
        # yacht's residuary resistance spans 0..62 (std ~15): every model beats predicting the mean
        assert 0 < r["rmse"] < 6 and math.isfinite(r["test_ll"]) and r["noise_variance"] >= 0
    nngp = [r for r in rows if r["model"] == "nngp"]
    ntk = [r for r in rows if r["model"] == "ntk"]
    # the NTK-GP reuses the NNGP's fitted hyperparameters of the same split
    assert [(r["weight_variance"], r["noise_variance"]) for r in nngp] == [(r["weight_variance"], r["noise_variance"]) for r in ntk]
    assert nngp[0]["weight_variance"] != 2.0  # fitted, not the starting point
    summ = res["results"]["summary"]["yacht"]
    assert set(summ) == {"nngp", "ntk", "mlp"} and summ["nngp"]["splits"] == 2
    assert math.isclose(summ["nngp"]["rmse_mean"], np.mean([r["rmse"] for r in nngp]))
    assert res["results"]["datasets"]["yacht"] == {"n": 308, "features": 6, "n_splits": 20, "splits": 2}


@needs_uci
@pytest.mark.slow
def test_uci_small_config(tmp_path: Path, capsys):
    res = _run("uci_regression", tmp_path / "uci", capsys, f"data_dir={SHARED_DATA}")
    summ = res["results"]["summary"]
    assert summ["yacht"]["nngp"]["rmse_mean"] < 1.0 and summ["concrete"]["nngp"]["rmse_mean"] < 6.0
    assert len(res["rows"]) == 2 * 3 * 3
