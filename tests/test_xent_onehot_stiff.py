"""Stiff one-hot cross-entropy flows: a training input repeated with two labels (its outputs
settle in the difference direction at a rate that does not decay, while the rest drift like
log t), integrated explicitly until the stiffness test fires, then by RODAS; against scipy's
LSODA and Radau (rtol 1e-11, atol 1e-13, analytic Jacobian) at times up to 1e8, with few steps;
and a plain one-hot problem with a large η·‖Θ‖, which stays on the explicit path (there ρ(J)·t
levels off: the explicit steps grow with t)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import wideNN as wn
from _xent_reference import flow_reference
from wideNN._odes import dopri5_run
from wideNN.xent import CrossEntropyTrajectory

DT = torch.float64
ARCH = wn.Architecture(2, "erf", 1.5, 0.1)
TIMES = [0.5, 1e2, 1e4, 1e6, 1e8]


def _reference(th: np.ndarray, labels: np.ndarray, f0: np.ndarray, eta: float, times: list[float],
               method: str = "LSODA"):
    """(f_X, G) at ``times`` by scipy (rtol 1e-11, atol 1e-13, analytic Jacobian); the
    true class's residual from the other probabilities (σ_c − 1 cancels once σ_c ≈ 1)."""
    o = f0.shape[1]
    return flow_reference(th, np.eye(o)[labels], f0, eta, times, method,
                          rtol=1e-11, atol=1e-13)


def _problem(n=6, o=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, 3, dtype=DT, generator=g), torch.randn(4, 3, dtype=DT, generator=g)
    labels = torch.randint(0, o, (n,), generator=g)
    x[1] = x[0]                                      # one input, two labels
    labels[0], labels[1] = 0, 1
    f0 = 0.2 * torch.randn(n, o, dtype=DT, generator=g)
    f0[1] = f0[0]                                    # (one input: one initial output)
    return dict(th=scale * ARCH.ntk(x), thx=scale * ARCH.ntk(xt, x), f0=f0,
                f0t=0.2 * torch.randn(4, o, dtype=DT, generator=g), labels=labels)


def _compare(eta: float, method: str, d=None):
    d = _problem() if d is None else d
    n, o = d["f0"].shape
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["labels"], wn.GradientFlow(eta))
    t = torch.tensor(TIMES, dtype=DT)
    f, ft = traj.train_outputs(t), traj.outputs(d["thx"], d["f0t"], t)
    g = traj._solve(TIMES)[1].numpy()
    ref_f, ref_g = _reference(d["th"].numpy(), d["labels"].numpy(), d["f0"].numpy(), eta, TIMES, method)
    ref_ft = d["f0t"].numpy()[None] - (eta / n) * np.einsum("mn,tno->tmo", d["thx"].numpy(), ref_g)
    np.testing.assert_allclose(f.numpy(), ref_f, rtol=1e-7, atol=1e-7)
    # G of the repeated input grows like ±t/2 per label (its residuals settle at ±½), and the test
    # outputs see only the sum of the two, O(log t): both solvers' errors, relative to |G|, are
    # amplified by ~t/log t there (measured: G to 1e-14 of |G|, test outputs to 1e-7 … 3e-6 at 1e8)
    scale = np.abs(ref_g).max(axis=(1, 2), keepdims=True)
    assert bool((np.abs(g - ref_g) <= 1e-12 * scale + 1e-9).all()), np.abs(g - ref_g).max(axis=(1, 2))
    np.testing.assert_allclose(ft.numpy(), ref_ft, rtol=0, atol=1e-7 + 1e-13 * scale.max())
    np.testing.assert_allclose(ft[:4].numpy(), ref_ft[:4], rtol=1e-7, atol=1e-7)
    return traj, f


def test_duplicated_input_with_two_labels_matches_lsoda():
    traj, f = _compare(2.0, "LSODA")
    assert traj.stiff_from is not None and traj.stiff_from < 1e4       # RODAS took over
    # explicitly the steps grow only linearly in t here (t = 1e6: ~10⁵ steps, 1e8: ~10⁷)
    assert traj.solver_steps["implicit"] < 800 and traj.solver_steps["explicit"] < 1000
    # the repeated input: equal outputs (up to Θ's own rounding, Θ_AA ≠ Θ_AB by an ulp, times
    # G ~ t), which settle at equal probabilities of its two labels
    torch.testing.assert_close(f[:, 0], f[:, 1], rtol=1e-7, atol=0)
    p = torch.softmax(f[-1, 0], -1)
    assert abs(float(p[0] - p[1])) < 1e-6 and float(p[0] + p[1]) > 1 - 1e-6


@pytest.mark.slow  # ~50 s of Radau
def test_large_learning_rate_matches_radau():
    traj, _ = _compare(20.0, "Radau")
    assert traj.stiff_from is not None and traj.solver_steps["implicit"] < 1000


def test_plain_one_hot_with_a_large_kernel_scale_stays_explicit():
    """η·‖Θ‖ ~ 1e4: stiff at the start, but ρ(J) decays like 1/t (no finite fixed point), so
    the explicit steps grow with t and the switch (which costs more here) is not taken."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, dtype=DT, generator=g)
    th = 1e3 * ARCH.ntk(x)
    labels = torch.randint(0, 3, (8,), generator=g)
    f0 = torch.zeros(8, 3, dtype=DT)
    traj = CrossEntropyTrajectory(th, f0, labels, wn.GradientFlow(10.0))
    f = traj.train_outputs(torch.tensor(TIMES, dtype=DT))
    assert traj.stiff_from is None and traj.solver_steps["explicit"] < 1000
    ref_f, _ = _reference(th.numpy(), labels.numpy(), f0.numpy(), 10.0, TIMES)
    np.testing.assert_allclose(f.numpy(), ref_f, rtol=1e-7, atol=1e-7)


def test_stiffness_test_waits_for_rho_t():
    """``stiff_rho_t``: on ẏ = −λy (ρ = λ) the switch waits until also λ·t ≥ the threshold."""
    lam = 50.0
    y0 = torch.ones(3, dtype=DT)
    runs = [dopri5_run(lambda y: -lam * y, y0, [100.0], detect_stiffness=True,
                       spectral_radius=lambda y: lam, stiff_rho_t=thr) for thr in (0.0, 500.0)]
    assert runs[0].stiff and runs[0].t < 3.0
    assert runs[1].stiff and 500.0 / lam <= runs[1].t < 2 * 500.0 / lam
