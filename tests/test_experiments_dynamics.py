"""End-to-end runs of the dynamics experiments (width_scaling, posterior_vs_ensemble, random_labels).

Fast tests run each experiment with a tiny ``--set`` override and check results.json and the
figures; ``slow`` tests run the shipped small configs and check the physics they are meant to
show (fitted slopes, GP agreement, the random-label slowdown).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import wideNN
from wideNN.lab.runner import run_experiment

REPO = Path(wideNN.__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")
    monkeypatch.delenv("WIDENN_EXPERIMENTS_DIR", raising=False)


def _run(name: str, out: Path, overrides: list[str] = ()) -> dict:
    run_experiment(REPO / "configs" / f"{name}.yaml", out_dir=out, overrides=list(overrides), quiet=True)
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    for fig in res["figures"]:
        assert (out / fig).read_bytes()[:8] == PNG
    return res


# ---------------------------------------------------------------------------- width_scaling

WS_TINY = ["widths=[64, 256, 1024]", "train_widths=[64, 256]", "seeds_per_width=4", "train_seeds=1",
           "train_steps=20", "n_points=16", "n_test=8"]


def test_width_scaling_tiny(tmp_path: Path):
    res = _run("width_scaling", tmp_path, WS_TINY)
    r = res["results"]
    assert set(res["figures"]) == {"kernel_error_vs_width.png", "drift_vs_width.png"}
    for w in (64, 256, 1024):
        s = r[f"width={w}"]
        assert len(s["ntk_error"]["per_seed"]) == 4 and len(s["nngp_error"]["per_seed"]) == 4
        assert s["ntk_error"]["mean"] == pytest.approx(sum(s["ntk_error"]["per_seed"]) / 4)
    for w in (64, 256):
        assert len(r[f"width={w}"]["drift"]["per_seed"]) == 1
        assert r[f"training/width={w}/seed=0"]["diverged"] is False
    assert "drift" not in r["width=1024"]
    # 16x the width: the errors shrink by about 4x (n^-1/2), certainly by more than 2x
    for key in ("ntk_error", "nngp_error"):
        assert r["width=1024"][key]["mean"] < 0.5 * r["width=64"][key]["mean"]
    # the single-draw output kernel does not converge
    assert r["width=1024"]["nngp_draw_error"]["mean"] > 0.2
    assert r["width=256"]["drift"]["mean"] < r["width=64"]["drift"]["mean"]
    assert set(r["slopes"]) == {"ntk_error", "nngp_error", "drift", "drift_wide", "lin_error_train",
                                "lin_error_test"}
    assert r["learning_rate"] == pytest.approx(0.5 * r["max_learning_rate"])


def test_width_scaling_resume_recomputes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    over = ["widths=[64, 128]", "train_widths=[64]", "seeds_per_width=2", "train_seeds=1",
            "train_steps=5", "n_points=8", "n_test=4"]
    first = _run("width_scaling", tmp_path, over)
    import wideNN as wn

    def boom(*a, **k):
        raise AssertionError("recomputed a finished measurement")

    monkeypatch.setattr(wn, "empirical_ntk", boom)
    monkeypatch.setattr(wn, "train", boom)
    second = _run("width_scaling", tmp_path, over)
    assert second["results"]["slopes"] == first["results"]["slopes"]


@pytest.mark.slow
def test_width_scaling_small_config_slopes(tmp_path: Path):
    r = _run("width_scaling", tmp_path)["results"]
    for key in ("ntk_error", "nngp_error"):
        assert -0.7 <= r["slopes"][key] <= -0.3, (key, r["slopes"][key])
    assert r["slopes"]["lin_error_train"] < -0.3
    # the kernel drift falls like 1/n (module docstring), faster than the n^-1/2 upper bound
    assert -1.2 <= r["slopes"]["drift"] <= -0.6, r["slopes"]["drift"]


# ---------------------------------------------------------------------------- posterior_vs_ensemble

PE_TINY = ["width=128", "ensemble_size=8", "times=[0, 5, 20]", "dynamics_widths=[32, 128]",
           "dynamics_steps=20", "eval_every=5", "n_test=20"]


def test_posterior_vs_ensemble_tiny(tmp_path: Path):
    res = _run("posterior_vs_ensemble", tmp_path, PE_TINY)
    r = res["results"]
    assert set(res["figures"]) == {"posterior_vs_ensemble.png", "dynamics.png"}
    assert r["gp"]["times"] == [0, 5, 20]
    assert len(r["gp"]["mean"]) == 3 and len(r["gp"]["mean"][0]) == 20
    assert len(r["ensemble"]["std"]) == 3 and len(r["ensemble"]["loss_mean"]) == 21
    # training reduces the ensemble's loss
    assert r["ensemble"]["loss_mean"][-1] < 0.5 * r["ensemble"]["loss_mean"][0]
    assert [d["t"] for d in r["discrepancy"]] == [0, 5, 20]
    # at t = 0 the GP is the NNGP prior: mean 0, std √K(x,x); 8 members of width 128 get close
    d0 = r["discrepancy"][0]
    assert 0.5 < d0["std_ratio"] < 1.5 and d0["mc_z_max"] < 5
    assert all(math.isfinite(v) for v in r["summary"].values())
    for w in (32, 128):
        d = r[f"dynamics/width={w}"]
        assert len(d["loss"]) == len(d["loss_lin"]) == 21
        assert d["eval_steps"] == [0, 5, 10, 15, 20]
        assert len(d["outputs"]) == 5 and len(d["outputs"][0]) == 3
        assert d["diverged"] is False and d["final_loss"] < d["loss"][0]


@pytest.mark.slow
def test_posterior_vs_ensemble_small_config_agrees_with_gp(tmp_path: Path):
    r = _run("posterior_vs_ensemble", tmp_path)["results"]
    s = r["summary"]
    # width 512, 32 members: the std matches within 15%, the mean within a few GP stds
    assert 0.85 < s["std_ratio_min"] and s["std_ratio_max"] < 1.15
    assert s["rms_over_gp_std"] < 0.5 and s["max_abs_over_gp_std"] < 4
    # the wider network follows its linearization more closely
    assert r["dynamics/width=512"]["max_output_gap"] < r["dynamics/width=64"]["max_output_gap"]


# ---------------------------------------------------------------------------- random_labels

RL_TINY = ["n_train=50", "n_test=100", "width=256", "steps=300", "eval_every=10", "loss_threshold=0.05"]


def test_random_labels_tiny(tmp_path: Path):
    res = _run("random_labels", tmp_path, RL_TINY)
    r = res["results"]
    assert set(res["figures"]) == {"loss_curves.png", "time_to_fit.png"}
    for kind in ("true", "random"):
        net, ntk = r[f"{kind}/net"], r[f"{kind}/ntk"]
        assert len(net["loss"]) == 301 and net["diverged"] is False
        assert net["eval_steps"][0] == 0 and net["eval_steps"][-1] == 300
        assert ntk["times"] == list(range(0, 301, 10)) and len(ntk["loss"]) == 31
        # centred: the learned part starts at zero, so both start at ‖y‖²/2 = 0.45
        assert net["loss"][0] == pytest.approx(0.45, rel=1e-4)
        assert ntk["loss"][0] == pytest.approx(0.45, rel=1e-6)
        assert 0.0 <= net["test_accuracy"] <= 1.0
    # the infinite-width prediction: random labels take longer to fit
    assert r["random/ntk"]["steps_to_threshold"] > r["true/ntk"]["steps_to_threshold"]
    assert r["summary"]["ntk_steps_to_threshold_ratio"] > 1.0
    assert r["summary"]["net_test_accuracy_true"] > r["summary"]["net_test_accuracy_random"]


def test_random_labels_uncentred_predicts_expected_loss(tmp_path: Path):
    r = _run("random_labels", tmp_path, RL_TINY + ["center_outputs=false", "steps=20"])["results"]
    for kind in ("true", "random"):
        # without centering the initial loss is dominated by f_0: (‖y‖² + 10 K(x,x))/2 ≫ 0.45,
        # and the NTK prediction is the expected loss of a random network, close to this draw
        net0, ntk0 = r[f"{kind}/net"]["loss"][0], r[f"{kind}/ntk"]["loss"][0]
        assert ntk0 > 2.0 and net0 == pytest.approx(ntk0, rel=0.3)


@pytest.mark.slow
def test_random_labels_small_config(tmp_path: Path):
    s = _run("random_labels", tmp_path)["results"]["summary"]
    assert s["net_steps_to_threshold_ratio"] > 1.5 and s["ntk_steps_to_threshold_ratio"] > 1.5
    assert s["net_test_accuracy_true"] > 0.8 and s["ntk_test_accuracy_true"] > 0.8
    assert s["net_test_accuracy_random"] < 0.35 and s["ntk_test_accuracy_random"] < 0.35
