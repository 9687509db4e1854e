"""The cross-entropy flow at long times (stiff for soft labels): Dormand–Prince, then RODAS once the
stiffness test fires, against scipy's LSODA (rtol 1e-12, analytic Jacobian) and against the
closed-form fixed point σ(f*) = P of soft labels; the three linear solvers of the implicit steps
against each other and against the residual of the dense system."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import wideNN as wn
from _xent_reference import flow_reference
import wideNN._xent_jacobian as xj
from wideNN.xent import CrossEntropyTrajectory

DT = torch.float64
ARCH = wn.Architecture(2, "erf", 1.5, 0.1)
METHOD = "LSODA"
TIMES = [0.0, 0.05, 1e3, 1e6, 1e12]


def _reference(th_flat: np.ndarray, p: np.ndarray, f0: np.ndarray, eta: float, times: list[float]):
    """(f_X, G) at ``times`` by scipy's LSODA (rtol 1e-12, ``_xent_reference.flow_reference``)."""
    return flow_reference(th_flat, p, f0, eta, times, METHOD, rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(3)
    x, xt = torch.randn(7, 3, dtype=DT, generator=g), torch.randn(4, 3, dtype=DT, generator=g)
    return dict(th=ARCH.ntk(x), thx=ARCH.ntk(xt, x), f0=0.3 * torch.randn(7, 3, dtype=DT, generator=g),
                f0t=0.3 * torch.randn(4, 3, dtype=DT, generator=g),
                soft=torch.softmax(1.5 * torch.randn(7, 3, dtype=DT, generator=g), -1),
                labels=torch.tensor([0, 1, 2, 1, 0, 2, 2]))


def _check(traj, d, p, eta, th_flat, thx_flat, upto):
    """Outputs at all TIMES (one tensor), those up to ``upto`` against the scipy reference."""
    t = torch.tensor(TIMES, dtype=DT)
    f, ft = traj.train_outputs(t), traj.outputs(d["thx"], d["f0t"], t)
    k = TIMES.index(upto) + 1
    ref_f, ref_g = _reference(th_flat, p.numpy(), d["f0"].numpy(), eta, TIMES[:k])
    n, o = d["f0"].shape
    ref_ft = d["f0t"].numpy()[None] - (eta / n) * (ref_g.reshape(k, -1) @ thx_flat.T).reshape(k, -1, o)
    np.testing.assert_allclose(f[:k].numpy(), ref_f, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ft[:k].numpy(), ref_ft, rtol=1e-8, atol=1e-8)
    # a scalar time (a different grid of steps) agrees to the tolerance
    torch.testing.assert_close(traj.train_outputs(TIMES[3]), f[3], rtol=1e-8, atol=1e-8)
    return f, ft


def test_soft_labels_long_times_match_lsoda_and_the_fixed_point(problem):
    d = problem
    n, o = d["f0"].shape
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["soft"], wn.GradientFlow(1.5))
    f, ft = _check(traj, d, d["soft"], 1.5, np.kron(d["th"].numpy(), np.eye(o)), np.kron(d["thx"].numpy(), np.eye(o)),
                   upto=1e6)   # beyond, the reference's σ(f) − P is rounding noise that its G integrates
    assert traj.stiff_from is not None and traj.stiff_from < 1e6   # the implicit method took over
    # σ(f*) = P with the row sums of f conserved; test outputs f0(x) + Θ(x,X)Θ⁻¹(f* − f0)
    logp = d["soft"].log()
    fstar = logp + (d["f0"] - logp).mean(-1, keepdim=True)
    test_star = d["f0t"] + d["thx"] @ torch.linalg.solve(d["th"], fstar - d["f0"])
    for i in (3, 4):
        torch.testing.assert_close(f[i], fstar, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ft[i], test_star, rtol=1e-8, atol=1e-8)


def test_one_hot_labels_long_times_match_lsoda(problem):
    d = problem
    o = d["f0"].shape[1]
    p = torch.nn.functional.one_hot(d["labels"], o).to(DT)
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["labels"], wn.GradientFlow(1.5))
    f, _ = _check(traj, d, p, 1.5, np.kron(d["th"].numpy(), np.eye(o)), np.kron(d["thx"].numpy(), np.eye(o)),
                  upto=1e12)
    assert traj.stiff_from is None                                   # separable: never stiff
    assert float((f[4].argmax(-1) == d["labels"]).double().mean()) == 1.0


@pytest.mark.slow  # ~5 s each
def test_full_ntk_soft_labels_with_zero_probabilities_match_lsoda(problem):
    """Empirical full NTK (N, N, O, O): dense implicit solves; a zero probability sends its
    logit to −∞ (like log t) while the other classes settle."""
    d = problem
    g = torch.Generator().manual_seed(4)
    x, xt = torch.randn(7, 3, dtype=DT, generator=g), torch.randn(4, 3, dtype=DT, generator=g)
    net = ARCH.build(3, 24, 3, seed=2, dtype=DT)
    th, f0, thx, f0t = wn.network_kernels(net, x, xt)
    soft = d["soft"].clone()
    soft[0] = torch.tensor([0.0, 0.25, 0.75], dtype=DT)
    dd = dict(th=th, thx=thx, f0=f0, f0t=f0t)
    traj = CrossEntropyTrajectory(th, f0, soft, wn.GradientFlow(1.0))
    n, o = f0.shape
    f, _ = _check(traj, dd, soft, 1.0, th.permute(0, 2, 1, 3).reshape(n * o, n * o).numpy(),
                  thx.permute(0, 2, 1, 3).reshape(-1, n * o).numpy(), upto=1e6)
    assert traj.stiff_from is not None
    # at 1e12 the zero-probability logit has kept falling (like −log t) and the rest settled
    r = torch.softmax(f, -1) - soft
    assert float(r[4].abs().max()) < 1e-9 and f[4, 0, 0] < f[3, 0, 0] - 5


@pytest.mark.parametrize("c", [1e-3, 1.0, 1e4, 1e9])
def test_implicit_step_solvers_agree(c):
    g = torch.Generator().manual_seed(5)
    n, o = 12, 4
    th = ARCH.ntk(torch.randn(n, 3, dtype=DT, generator=g))
    s = torch.softmax(2 * torch.randn(n, o, dtype=DT, generator=g), -1)
    b = torch.randn(n, o, dtype=DT, generator=g)
    dense, classwise = xj._dense(th, s, c)(b), xj._classwise(th, s, c)(b)
    cg = xj._cg(th, s, c, torch.linalg.eigh(th))(b)
    residual = dense + c * th @ torch.einsum("nab,nb->na", xj._blocks(s), dense) - b
    assert float(residual.abs().max()) < 1e-15 * (1 + c) * float(th.abs().max()) * 10
    scale = float(dense.abs().max())
    tol = 1e-14 * (1 + c) * 100
    assert float((classwise - dense).abs().max()) <= tol * scale
    assert float((cg - dense).abs().max()) <= tol * scale
    # the full-NTK layout of Θ ⊗ I gives the same dense solve
    full = torch.einsum("ij,ab->ijab", th, torch.eye(o, dtype=DT))
    torch.testing.assert_close(xj._dense(full, s, c)(b), dense, rtol=1e-13 * (1 + c), atol=1e-13 * (1 + c))


@pytest.mark.slow  # ~5 s each
def test_matrix_free_path_gives_the_classwise_trajectory(problem, monkeypatch):
    d = problem
    times = torch.tensor([2.0, 2e4], dtype=DT)
    exact = CrossEntropyTrajectory(d["th"], d["f0"], d["soft"], wn.GradientFlow(1.5)).train_outputs(times)
    monkeypatch.setattr(xj, "CLASSWISE_MAX", 0)
    traj = CrossEntropyTrajectory(d["th"], d["f0"], d["soft"], wn.GradientFlow(1.5))
    torch.testing.assert_close(traj.train_outputs(times), exact, rtol=1e-9, atol=1e-9)
    assert traj.stiff_from is not None and traj._eigh is not None  # it did go through the CG path


def test_reference_residual_is_softmax_minus_targets_and_exactly_zero_at_the_fixed_point():
    from wideNN._xent_residual import ReferenceResidual
    g = torch.Generator().manual_seed(6)
    p = torch.softmax(torch.randn(6, 4, dtype=DT, generator=g), -1)
    p[1] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=DT)                 # one-hot row
    p[2] = torch.tensor([0.0, 0.3, 0.7, 0.0], dtype=DT)                 # zero probabilities
    f0 = torch.randn(6, 4, dtype=DT, generator=g)
    res = ReferenceResidual(p, f0)
    for scale in (1e-3, 1.0, 80.0):                                     # 80: the log-sum-exp branch
        d = scale * torch.randn(6, 4, dtype=DT, generator=g)
        # the naive σ(f) − P is itself exact only to ~ε·|f|
        torch.testing.assert_close(res(d), torch.softmax(res.f_ref + d, -1) - p, rtol=0, atol=4e-16 * (2 + scale))
    zero = res(torch.zeros(6, 4, dtype=DT))
    assert bool((zero[[0, 3, 4, 5]] == 0).all())                        # σ(f_ref) = P exactly
    # small residuals keep their relative accuracy (σ(f) − P would be rounding noise here)
    d = torch.zeros(6, 4, dtype=DT)
    d[0, 0] = 1e-12
    r = res(d)[0]
    expect = p[0] * (torch.eye(4, dtype=DT)[0] - p[0, 0]) * 1e-12      # D (δ) to first order
    torch.testing.assert_close(r, expect, rtol=1e-6, atol=0)
