"""The angle-table duals of equal-variance inputs, with and without autograd.

References: direct per-entry quadrature of the same rule (``_common_variance`` switched off),
central differences of the no-grad kernels in the hyperparameters, and direct integration at
every table angle (for the cosine-series filling of the table).
"""
from __future__ import annotations

import math

import pytest
import torch

import wideNN as wn
import wideNN.analytic as analytic
from wideNN import _angle_table
from wideNN import activations as A

F64 = torch.float64


def _unit_rows(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    x = torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True) * (scale * math.sqrt(d))


def _kernels_and_grads(act, x, x2=None, depth=3):
    w = torch.tensor(1.7, dtype=F64, requires_grad=True)
    b = torch.tensor(0.2, dtype=F64, requires_grad=True)
    k, th = wn.Architecture(depth, act, w, b).kernels(x, x2)
    # a loss that weighs every entry differently, through both outputs
    loss = (k * torch.cos(k)).sum() + 0.01 * (th ** 2).sum()
    return k.detach(), th.detach(), torch.stack(torch.autograd.grad(loss, (w, b)))


@pytest.mark.parametrize("act", ["tanh", "softplus"])
@pytest.mark.parametrize("cross", [False, True])
def test_autograd_table_path_equals_per_entry_quadrature(act, cross, monkeypatch):
    """The table path under autograd (fitted variances) gives the kernels and their gradients
    of the per-entry quadrature, to the table's interpolation error (≲ 1e-10)."""
    x = _unit_rows(14, 5, 0)
    x2 = _unit_rows(9, 5, 1) if cross else None
    calls = []
    real = _angle_table.EqualVarianceDual.apply
    monkeypatch.setattr(_angle_table.EqualVarianceDual, "apply", lambda *a: calls.append(1) or real(*a))
    table = _kernels_and_grads(act, x, x2)
    assert len(calls) == 3  # one table per hidden layer: the fast path was taken
    monkeypatch.setattr(analytic, "_common_variance", lambda *args: None)
    direct = _kernels_and_grads(act, x, x2)
    for a, b in zip(table, direct):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_table_gradients_match_central_differences():
    """Independent of the backward: central differences of the no-grad kernels (step 1e-5,
    truncation error ~1e-10 relative)."""
    x = _unit_rows(10, 4, 2, scale=1.3)

    def loss(w: float, b: float) -> float:
        with torch.no_grad():
            k, th = wn.Architecture(3, "tanh", w, b).kernels(x)
        return float((k * torch.cos(k)).sum() + 0.01 * (th ** 2).sum())

    _, _, grads = _kernels_and_grads("tanh", x)
    h = 1e-5
    fd = torch.tensor([(loss(1.7 + h, 0.2) - loss(1.7 - h, 0.2)) / (2 * h),
                       (loss(1.7, 0.2 + h) - loss(1.7, 0.2 - h)) / (2 * h)], dtype=F64)
    torch.testing.assert_close(grads, fd, rtol=1e-7, atol=0)


def test_gradient_in_the_inputs_takes_each_rows_own_variance(monkeypatch):
    """One shared variance cannot carry a gradient per input row, so inputs that require grad
    skip the table; the gradient equals the per-entry quadrature's."""
    x = _unit_rows(8, 4, 3).requires_grad_(True)
    calls = []
    real = _angle_table.EqualVarianceDual.apply
    monkeypatch.setattr(_angle_table.EqualVarianceDual, "apply", lambda *a: calls.append(1) or real(*a))
    k, _ = wn.Architecture(2, "tanh", 1.5, 0.1).kernels(x)
    (gx,) = torch.autograd.grad(k.sum(), x)
    assert not calls and torch.isfinite(gx).all() and gx.abs().max() > 0


@pytest.mark.parametrize("kappa, tol", [(0.05, 1e-12), (1.0, 1e-12), (10.0, 1e-10), (50.0, 1e-9)])
def test_cosine_filled_table_equals_direct_integration_at_every_angle(kappa, tol):
    """The table is evaluated at 128–1024 angles and filled in by the cosine series; against
    evaluation at all 1025 angles by the same method (Mehler's series at small κ, the 2-D
    quadrature at large; tanh, the activation with the sharpest features: it tends to a step,
    whose T has a kink at θ = 0, as κ grows)."""
    act = A.Tanh()
    theta = _angle_table.angles(act.table_size, F64, torch.device("cpu"))
    kk = torch.full_like(theta, kappa)
    direct = act.dual(kk, kappa * torch.cos(theta), kk)
    filled = _angle_table.value_tables(act, kappa, F64, torch.device("cpu"))
    for f, d in zip(filled, direct):
        err = float((f[1:-1] - d).abs().max() / d.abs().max())
        assert err < tol, err


def test_kinked_activations_integrate_every_angle():
    """ELU's φ' has a kink (a jump when α ≠ 1), so its duals are only finitely smooth in θ and
    the cosine series would converge slowly: its table holds the dual at every angle."""
    assert _angle_table._coarse_size(1.0, 1024) == 128
    elu = A.ELU(alpha=0.5)
    theta = _angle_table.angles(elu.table_size, F64, torch.device("cpu"))
    kk = torch.full_like(theta, 1.0)
    direct = elu.dual(kk, torch.cos(theta), kk)
    for f, d in zip(_angle_table.value_tables(elu, 1.0, F64, torch.device("cpu")), direct):
        torch.testing.assert_close(f[1:-1], d, rtol=0, atol=0)
