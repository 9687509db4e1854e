"""Experiments killed inside a training unit resume inside it: the rerun continues the training
from its checkpoint (not from step 0) and ends with the results of an uninterrupted run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _data import DATA, missing
from wideNN import _checkpoint, _train_loop
from wideNN.lab.runner import RunInterrupted, run_experiment

ROOT = Path(__file__).resolve().parents[1]

# (experiment, tiny config, kill every k-th update): k > the default checkpoint_every (100), so
# every attempt passes at least one checkpoint and the run must finish
CASES = {
    # an ensemble (wn.Ensemble.train) per width
    "quickstart": (["n_train=40", "n_test=40", "widths=[8, 16]", "seeds=2", "steps=250", "ntk_points=8"], 130),
    # ensemble training in segments (one checkpoint part per segment), then a network and its
    # linearization per width (parts "net" and "lin")
    "posterior_vs_ensemble": (["width=32", "ensemble_size=4", "times=[0, 120, 250]", "dynamics_widths=[16]",
                               "dynamics_steps=150", "eval_every=10", "n_test=12"], 110),
    # wn.train with a metrics callback (train accuracy) for each label set
    "random_labels": (["n_train=20", "n_test=20", "width=32", "steps=150", "eval_every=10"], 110),
    # a grid cell training a network and its linearization (parts "net" and "lin"); slow (~10 s)
    "width_scaling": (["widths=[16]", "seeds_per_width=1", "train_seeds=1", "train_steps=150",
                       "n_points=8", "n_test=4"], 110),
    # an ensemble per (dataset, split) row, dropped with the row (needs the UCI data)
    "uci_regression": ([f"data_dir={DATA}", "datasets=[yacht]", "splits=1", "models=[nngp, mlp]", "max_train=40",
                        "fit.steps=2", "fit.optimizer=adam", "fit.max_points=40", "mlp.steps=250",
                        "mlp.ensemble_size=2", "mlp.width=16"], 130),
}
MARKS = {"width_scaling": pytest.mark.slow,
         "uci_regression": pytest.mark.skipif(not (DATA / "uci" / "yacht").is_dir(), reason=missing("uci/yacht"))}


@pytest.fixture(autouse=True)
def _quiet_single_thread(one_thread, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WIDENN_NO_PROGRESS", "1")


def _results(out: Path) -> dict:
    """results.json without its metadata and timings (which differ between any two runs)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(w) for k, w in v.items() if k not in ("wall_s", "seconds", "wall_time_s")}
        return [strip(w) for w in v] if isinstance(v, list) else v
    res = json.loads((out / "results.json").read_text())
    assert res["metadata"]["status"] == "complete"
    return {k: strip(res[k]) for k in ("results", "rows", "figures")}


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, ())) for n in CASES])
def test_experiment_killed_inside_training_resumes_inside_it(name: str, tmp_path: Path, monkeypatch):
    sets, every = CASES[name]
    cfg = ROOT / "configs" / f"{name}.yaml"
    run_experiment(cfg, out_dir=tmp_path / "ref", overrides=sets, quiet=True)
    ref = _results(tmp_path / "ref")

    calls = [0]
    step = _train_loop.apply_step

    def killed(*args, **kwargs):  # a kill (Ctrl-C, preemption) at every ``every``-th update
        calls[0] += 1
        if calls[0] % every == 0:
            raise KeyboardInterrupt
        return step(*args, **kwargs)
    monkeypatch.setattr(_train_loop, "apply_step", killed)
    resumed_at = []
    load = _checkpoint.load

    def spy(path, key):
        state = load(path, key)
        resumed_at.append(None if state is None else int(state["step"]))
        return state
    monkeypatch.setattr(_checkpoint, "load", spy)

    out = tmp_path / "killed"
    for attempts in range(1, 30):
        try:
            run_experiment(cfg, out_dir=out, overrides=sets, quiet=True)
            break
        except RunInterrupted:
            # the first kill comes after the first periodic checkpoint, which is left to resume from
            assert attempts > 1 or list((out / "checkpoints").glob("*.pt"))
    else:
        raise AssertionError("never finished")
    assert attempts > 2
    # training resumed mid-way: from a periodic checkpoint (every 100 steps), not from a finished
    # loop's final one (no loop here has a multiple of 100 steps)
    assert any(s is not None and s % 100 == 0 and s > 0 for s in resumed_at), resumed_at
    assert _results(out) == ref
    assert not list((out / "checkpoints").glob("*.pt"))  # removed once the results are recorded


def test_checkpoint_parts_go_with_their_unit_only(tmp_path: Path):
    """Each part of a unit has its own file; storing the unit's result (or row) deletes all of
    them and nothing of another unit, even one whose key extends this one's."""
    import torch

    from wideNN.lab.context import Context

    state = {"config": {}, "metadata": {}, "results": {}, "rows": {}, "figures": []}
    ctx = Context(tmp_path, {"seed": 0}, torch.device("cpu"), state, quiet=True)
    keys = ["a/width=8", "a/width=8.5", "a/width=8+x", "row/a"]
    paths = {(k, p): ctx.checkpoint_path(k, part=p) for k in keys for p in (None, "net", "lin", "t=3")}
    assert len(set(paths.values())) == len(paths)  # distinct files for distinct (key, part)
    for p in paths.values():
        p.write_bytes(b"x")
    ctx.record("a/width=8", 1.0)
    assert {k for (k, _), p in paths.items() if not p.exists()} == {"a/width=8"}
    ctx.add_row("row/a", {"v": 1})
    assert {k for (k, _), p in paths.items() if p.exists()} == {"a/width=8.5", "a/width=8+x"}
