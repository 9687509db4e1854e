"""Resumable ensemble training: ``Ensemble.train(checkpoint=...)`` interrupted (again and again)
and restarted in a "new process" (a freshly built ensemble) gives bitwise the result of an
uninterrupted run; a checkpoint of another run is refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import wideNN as wn
from wideNN import _checkpoint, _train_loop

from _kills import killer as _killer, until_done as _until_done

D64 = torch.float64
ARCH = wn.Architecture(1, "relu", 2.0, 0.1)


def _data(n: int = 12, d: int = 4, o: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, o, generator=g, dtype=D64)


def _ensemble(arch=ARCH, seed: int = 0, size: int = 3, width: int = 16) -> wn.Ensemble:
    return wn.Ensemble(arch, width, 4, 2, size=size, seed=seed, dtype=D64)


def _same_params(a: wn.Ensemble, b: wn.Ensemble) -> None:
    for (ka, va), (kb, vb) in zip(a.stacked_parameters().items(), b.stacked_parameters().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)


def _same_history(h: wn.TrainHistory, ref: wn.TrainHistory) -> None:
    torch.testing.assert_close(h.loss, ref.loss, rtol=0, atol=0)
    assert h.steps == ref.steps and not h.diverged
    assert h.metric_steps == ref.metric_steps and h.metrics.keys() == ref.metrics.keys()
    for k in ref.metrics:
        for a, b in zip(h.metrics[k], ref.metrics[k], strict=True):
            torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=0)
    assert h.ntk_steps == ref.ntk_steps
    for a, b in zip(h.ntk, ref.ntk, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [dict(optimizer="adam", learning_rate=0.05),
                                dict(optimizer="momentum", learning_rate=0.05, batch_size=5, seed=3),
                                dict(optimizer="gd", learning_rate=0.5, trainable="readout")])
def test_ensemble_interrupted_repeatedly_equals_uninterrupted(kw, tmp_path: Path, monkeypatch):
    x, y = _data()
    xt, yt = _data(seed=1)
    opts = dict(steps=40, eval_data=(xt, yt), eval_every=3, ntk_at=[0, 17, 40], progress=False,
                metrics=lambda e: {"out": e(xt[:2]).detach().clone()})
    ref_ens = _ensemble()
    ref = ref_ens.train(x, y, **kw, **opts)
    assert ref.loss.shape == (41, 3)

    # a kill every 7 updates, checkpoints every 5: each attempt gets at least one checkpoint further
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 7, [0]))
    resumed_at = []
    load = _checkpoint.load

    def spy(path, key):
        state = load(path, key)
        resumed_at.append(None if state is None else state["step"])
        return state
    monkeypatch.setattr(_checkpoint, "load", spy)
    ck = tmp_path / "ens.ckpt"
    ensembles = []

    def attempt():
        ens = _ensemble()  # a restarted process builds the ensemble again
        ensembles.append(ens)
        return ens.train(x, y, **kw, **opts, checkpoint=ck, checkpoint_every=5)

    hist, attempts = _until_done(attempt)
    assert attempts >= 6
    # the first attempt starts afresh; every later one resumes further than the one before
    assert resumed_at[0] is None and len(resumed_at) == attempts
    assert 0 < resumed_at[1] and all(a < b for a, b in zip(resumed_at[1:], resumed_at[2:]))
    _same_history(hist, ref)
    _same_params(ensembles[-1], ref_ens)

    # the finished checkpoint answers at once, without a single update
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 1, [0]))
    again = attempt()
    _same_history(again, ref)
    _same_params(ensembles[-1], ref_ens)


def test_composed_ensemble_resumes_bitwise(tmp_path: Path, monkeypatch):
    """A convolutional ensemble (in_shape=) under minibatch Adam, killed every 4 updates."""
    desc = wn.Serial(wn.Conv(3), "relu", wn.GlobalAvgPool(), wn.Dense(), weight_variance=2.0, bias_variance=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 2, 5, 5, generator=g, dtype=D64), torch.randn(10, 3, generator=g, dtype=D64)

    def make():
        return wn.Ensemble(desc, 4, in_shape=(2, 5, 5), out_features=3, size=2, seed=7, dtype=D64)
    opts = dict(steps=20, learning_rate=0.02, optimizer="adam", batch_size=4, seed=1, progress=False)
    ref_ens = make()
    ref = ref_ens.train(x, y, **opts)
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 4, [0]))
    ck = tmp_path / "cnn.ckpt"
    last = []

    def attempt():
        last[:] = [make()]
        return last[0].train(x, y, **opts, checkpoint=ck, checkpoint_every=3)
    hist, attempts = _until_done(attempt)
    assert attempts > 3
    _same_history(hist, ref)
    _same_params(last[0], ref_ens)


def test_ensemble_checkpoint_of_another_run_is_refused(tmp_path: Path):
    x, y = _data()
    ck = tmp_path / "c.ckpt"
    base = dict(steps=3, learning_rate=0.1, progress=False)
    _ensemble().train(x, y, **base, checkpoint=ck, checkpoint_every=1)
    same = _ensemble().train(x, y, **base, checkpoint=ck)  # the same run: accepted
    assert same.steps == 3
    tanh = wn.Architecture(1, "tanh", 2.0, 0.1)  # NTK parameterization: the same initial parameters
    _same_params(_ensemble(tanh), _ensemble())
    others = [(_ensemble(seed=1), {}), (_ensemble(size=2), {}), (_ensemble(width=8), {}),
              (_ensemble(tanh), {}),                                     # same parameters, other model
              (_ensemble(), dict(learning_rate=0.2)), (_ensemble(), dict(steps=4)),
              (_ensemble(), dict(optimizer="adam")), (_ensemble(), dict(trainable="readout")),
              (_ensemble(), dict(batch_size=4, optimizer="sgd", seed=0))]
    for ens, change in others:
        with pytest.raises(ValueError, match="belongs to another run"):
            ens.train(x, y, **{**base, **change}, checkpoint=ck)
    with pytest.raises(ValueError, match="belongs to another run"):  # other targets
        _ensemble().train(x, y + 1, **base, checkpoint=ck)
    ck2 = tmp_path / "member.ckpt"  # a wn.train checkpoint of the one member
    wn.train(ARCH.build(4, 16, 2, seed=0, dtype=D64), x, y, **base, checkpoint=ck2)
    with pytest.raises(ValueError, match="belongs to another run"):
        _ensemble(size=1).train(x, y, **base, checkpoint=ck2)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        _ensemble().train(x, y, **base, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint: folder"):
        _ensemble().train(x, y, **base, checkpoint=tmp_path / "no" / "c")
    with pytest.raises(ValueError, match="is a folder"):
        _ensemble().train(x, y, **base, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        _ensemble().train(x, y, **base, checkpoint=3)
    with pytest.raises(ValueError, match="checkpoint_every"):
        _ensemble().train(x, y, **base, checkpoint=tmp_path / "d.ckpt", checkpoint_every=0)


def test_checkpoint_files_are_atomic_and_match_the_state(tmp_path: Path, monkeypatch):
    """No temporary file is left behind by a kill during a save, and a save holds the stacked
    parameters of the step it names (restoring it alone reproduces the run from there)."""
    x, y = _data()
    ck = tmp_path / "a.ckpt"
    save = _checkpoint.save

    def dying_save(path, key, state):
        if state["step"] == 10:
            raise KeyboardInterrupt  # killed while writing
        save(path, key, state)
    monkeypatch.setattr(_checkpoint, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _ensemble().train(x, y, steps=20, learning_rate=0.1, progress=False, checkpoint=ck, checkpoint_every=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 5
    ref = _ensemble()
    ref.train(x, y, steps=5, learning_rate=0.1, progress=False)
    for a, b in zip(state["params"], ref.stacked_parameters().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_eval_data_is_named():
    """eval_data is checked as in wn.train: a list or a pair of the wrong length is named."""
    x, y = _data()
    with pytest.raises(TypeError, match="eval_data must be a pair"):
        _ensemble().train(x, y, steps=1, eval_data=[x, y], progress=False)
    with pytest.raises(ValueError, match=r"eval_data\['a'\] must be a pair"):
        _ensemble().train(x, y, steps=1, eval_data={"a": (x,)}, progress=False)
    h = _ensemble().train(x, y, steps=1, eval_data={"a": (x, y)}, progress=False)
    torch.testing.assert_close(h.metrics["a_loss"][-1], h.loss[-1], rtol=1e-12, atol=0)


def test_a_run_preempted_more_often_than_checkpoint_every_still_finishes(tmp_path: Path, monkeypatch):
    """Checkpoints also follow the wall clock: with ``checkpoint_every`` far beyond the steps
    between preemptions, the time trigger (here after every step: the fake clock jumps 3 s per
    read) still moves each attempt forward, and the result is bitwise the uninterrupted one."""
    x, y = _data()
    ref_ens = _ensemble()
    ref = ref_ens.train(x, y, steps=30, optimizer="adam", learning_rate=0.05, progress=False)
    clock = [0.0]

    def fake_monotonic():
        clock[0] += 3.0
        return clock[0]
    monkeypatch.setattr(_checkpoint.time, "monotonic", fake_monotonic)
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 4, [0]))
    ck = tmp_path / "ens.ckpt"
    ensembles = []

    def attempt():
        ens = _ensemble()
        ensembles.append(ens)
        return ens.train(x, y, steps=30, optimizer="adam", learning_rate=0.05, progress=False,
                         checkpoint=ck, checkpoint_every=1000)

    hist, attempts = _until_done(attempt)
    assert attempts >= 8  # 30 steps, a kill every 4th update
    _same_history(hist, ref)
    _same_params(ensembles[-1], ref_ens)


def test_without_the_time_trigger_the_same_preemption_never_finishes(tmp_path: Path, monkeypatch):
    """The converse, so the test above can fail: a frozen clock leaves only ``checkpoint_every``."""
    x, y = _data()
    monkeypatch.setattr(_checkpoint.time, "monotonic", lambda: 0.0)
    monkeypatch.setattr(_train_loop, "apply_step", _killer(_train_loop.apply_step, 4, [0]))
    ck = tmp_path / "ens.ckpt"
    with pytest.raises(AssertionError, match="never finished"):
        _until_done(lambda: _ensemble().train(x, y, steps=30, optimizer="adam", learning_rate=0.05,
                                              progress=False, checkpoint=ck, checkpoint_every=1000),
                    attempts=12)
