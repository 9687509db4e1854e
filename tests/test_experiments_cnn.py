"""End-to-end test of the cnn_kernels experiment (config run into tmp_path, tiny overrides)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from wideNN.lab.runner import run_experiment

from _data import DATA, needs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
needs_mnist = needs("mnist")
ROW_KEYS = {"dataset", "n_train", "n_test", "side", "model", "kernel", "channels", "seed", "test_accuracy",
            "test_mse", "published_accuracy", "published_n_train"}


@pytest.fixture(autouse=True)
def _quiet_single_thread(one_thread, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")


def _module():
    spec = importlib.util.spec_from_file_location("cnn_kernels", ROOT / "experiments" / "cnn_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cnn_kernels_descriptions_and_bad_config(tmp_path: Path):
    import torch
    mod = _module()
    cfg = dict(mod.DEFAULTS)
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    for family in ("cnn_gp_flatten", "cntk_gap", "resnet_gap"):
        net = mod.description(cfg, family).build((1, 5, 5), 4, 3, seed=0, dtype=torch.float64)
        assert net(x).shape == (2, 3)
    with pytest.raises(ValueError, match="family"):
        mod.description(cfg, "vit")
    with pytest.raises(ValueError, match="data_dir"):
        run_experiment(CONFIGS / "cnn_kernels.yaml", out_dir=tmp_path / "a", quiet=True)
    with pytest.raises(ValueError, match="nn.family"):
        run_experiment(CONFIGS / "cnn_kernels.yaml", out_dir=tmp_path / "b", quiet=True,
                          overrides=[f"data_dir={tmp_path}", "nn.family=mlp"])


@needs_mnist
def test_cnn_kernels_tiny(tmp_path: Path):
    out = tmp_path / "cnn"
    datasets = ("datasets=[{dataset: mnist, n_train: 20, n_test: 30, side: 5},"
                " {dataset: cifar10, n_train: 5000, n_test: 30, side: 5, subset: available}]")
    run_experiment(CONFIGS / "cnn_kernels.yaml", out_dir=out, quiet=True,
                      overrides=[f"data_dir={DATA}", datasets, "depth=1", "nn.channels=[4, 8]", "nn.steps=10",
                                 "ntk_scaling.channels=[8, 32]", "ntk_scaling.points=3"])
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    rows = list(res["rows"].values())
    assert all(ROW_KEYS <= set(r) for r in rows)
    gp = [r for r in rows if r["kernel"] is not None]
    assert {(r["model"], r["kernel"]) for r in gp} == {
        (f, k) for f in ("cnn_gp_flatten", "cntk_gap", "resnet_gap", "mlp") for k in ("nngp", "ntk")} | {
        ("cntk_gap", "ntk_t")}
    # 10 classes from 20 images: the GPs are well above chance (0.1) on 30 test digits
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in gp) and max(r["test_accuracy"] for r in gp) > 0.3
    nets = [r for r in rows if r["model"] == "nn/cntk_gap"]
    assert sorted({r["channels"] for r in nets}) == [4, 8] and len(nets) == 4
    pub = [r for r in rows if r["model"].startswith("published")]
    assert pub and pub[0]["published_accuracy"] == pytest.approx(0.9916) and pub[0]["published_n_train"] == 50000
    # CIFAR:5k is not servable from the partial file (some classes have < 500 images): skipped
    if (DATA / "cifar10").is_dir():
        assert "cifar10:5000" in res["results"]["skipped"]
    e = [res["results"][f"ntk_error/channels={c}"] for c in (8, 32)]
    assert all(0 < v < 2 for v in e) and "ntk_error_slope" in res["results"]
    for name in ("accuracy_vs_channels.png", "ntk_error_vs_channels.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and name in res["figures"]
    # resumable: a second run recomputes nothing and gives the same rows
    run_experiment(CONFIGS / "cnn_kernels.yaml", out_dir=out, quiet=True,
                      overrides=[f"data_dir={DATA}", datasets, "depth=1", "nn.channels=[4, 8]", "nn.steps=10",
                                 "ntk_scaling.channels=[8, 32]", "ntk_scaling.points=3"])
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == res["rows"]
