"""Dual kernels of inputs with one common variance, interpolated from a table in the angle.

When every pre-activation has the same variance κ (inputs of equal norm — the usual
per-example normalisation — at every layer of an MLP), the dual kernels depend on one variable,
the angle θ = arccos(k12/κ) ∈ [0, π].  T(θ) = E[φ(u)φ(v)] and Ṫ(θ) = E[φ'(u)φ'(v)] are smooth
even functions of θ (power series in cos θ with a positive radius of convergence ≥ 1 for smooth
φ), so a table on ``size + 1`` uniform angles interpolated by 4-point cubic Lagrange
polynomials is accurate to ~(π/size)⁴ · |f⁗| — ≲ 1e-10 relative at size 1024 — for one
arccos and a dozen products per kernel entry instead of nodes² evaluations of φ.  The table
itself is integrated at 128–1024 angles only and filled in by the cosine series through them
(``_on_table``), since fitted variances need a new table at every optimizer step.

Under autograd (σ_w², σ_b² being fitted, so κ and k12 carry gradients) the table is
differentiated at its nodes rather than per entry.  With F(κ, k12) = T(κ, k12, κ):

    ∂F/∂k12 = Ṫ,                    ∂Ṫ/∂k12 = E[φ''(u) φ''(v)]          (Price's theorem),
    ∂F/∂κ|k12 = ∂T/∂k11 + ∂T/∂k22,  and the same for Ṫ,

each tabulated on the same angles by the quadrature backward (``wideNN._quadrature``) and
interpolated like T.  Differentiating the interpolant itself would not do: dθ/dk12 is infinite
at coincident points (θ = 0), where the tables are flat.  Only k12 is saved, so a
differentiable kernel keeps a few arrays per entry and layer, and costs about twice the
no-grad path.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._gaussian import safe_arccos, snap_correlation
from . import _mehler
from ._quadrature import QuadratureDual


def _weights(kappa: float, k12: Tensor, size: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Padded-table index of the node left of each entry's angle, and the Lagrange weights
    of nodes i−1, i, i+1, i+2 at the entry's offset f ∈ [0, 1]."""
    # snapped like ``correlation``: a diagonal entry's c = 1 − 2 ulps would become θ ≈ 2e-8,
    # which matters where Ṫ is linear in θ (φ' with a jump)
    u = safe_arccos(snap_correlation((k12 / kappa).clamp(-1.0, 1.0))) * (size / math.pi)
    i = u.floor().clamp_(0, size - 1)
    f = u - i
    weights = (-f * (f - 1) * (f - 2) / 6, (f + 1) * (f - 1) * (f - 2) / 2,
               -(f + 1) * f * (f - 2) / 2, (f + 1) * f * (f - 1) / 6)
    return i.long() + 1, weights


#: entries interpolated at a time: the dozen temporaries of a chunk stay ~100 MB in float64
_CHUNK = 1 << 20


def interpolate(tables: tuple[Tensor, ...], kappa: float, k12: Tensor, size: int,
                scale: tuple[Tensor, ...] | None = None) -> list[Tensor]:
    """Each padded table (``size + 3`` values on the angles of ``angles``) at k12, or with
    ``scale`` the sum Σᵢ scaleᵢ ⊙ tableᵢ(k12) (one array; scales broadcast against k12), in
    chunks of ``_CHUNK`` entries written into the outputs."""
    flat = k12.reshape(-1)
    outs = [torch.empty_like(flat) for _ in (tables if scale is None else (None,))]
    flat_scale = None if scale is None else [torch.broadcast_to(c, k12.shape).reshape(-1) for c in scale]
    for lo in range(0, flat.numel(), _CHUNK):
        idx, (wm, w0, w1, w2) = _weights(kappa, flat[lo:lo + _CHUNK], size)
        vals = [wm * t[idx - 1] + w0 * t[idx] + w1 * t[idx + 1] + w2 * t[idx + 2] for t in tables]
        if flat_scale is None:
            for out, v in zip(outs, vals):
                out[lo:lo + _CHUNK] = v
        else:
            acc = vals[0].mul_(flat_scale[0][lo:lo + _CHUNK])
            for v, c in zip(vals[1:], flat_scale[1:]):
                acc.addcmul_(v, c[lo:lo + _CHUNK])
            outs[0][lo:lo + _CHUNK] = acc
    return [out.reshape(k12.shape) for out in outs]


def angles(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.linspace(0.0, math.pi, size + 1, dtype=dtype, device=device)


def _coarse_size(kappa: float, size: int) -> int:
    """Angles at which the duals are integrated before the cosine interpolation onto the table:
    ~128·max(1, √κ/2) (the duals' features in θ narrow like 1/√κ: tanh tends to the step
    function, whose T = (2/π) arcsin(cos θ) has a kink at θ = 0), a power of two, at most
    ``size``.  Measured against direct integration at all 1025 angles (float64, tanh / softplus /
    silu / sigmoid): ≤ 3e-11 relative at κ ≤ 10 with 128 angles, 1.5e-8 at κ = 100 with 256 (a
    tanh kernel above κ ≈ 64 is refused by its own accuracy check, ``Activation._rule``)."""
    want = 128.0 * max(1.0, math.sqrt(max(kappa, 0.0)) / 2) if math.isfinite(kappa) else float(size)
    return min(size, 1 << max(0, math.ceil(math.log2(want))))


def _on_table(act, fn, kappa: float, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """fn(θ) (a tuple of arrays) on the ``size + 1`` table angles.  For smooth φ it is integrated
    at ``_coarse_size`` angles and carried to the others by the cosine series through them
    (DCT-I): T(θ) and its relatives are then smooth, even and 2π-periodic in θ, so the series
    converges spectrally.  A kink in φ or φ' (ELU, ``Elementwise``) leaves them only finitely
    smooth, where the series converges slowly (3e-6 for ELU's T at 128 angles): all angles."""
    size = act.table_size
    m = _coarse_size(kappa, size) if getattr(act, "smooth", False) else size
    vals = fn(angles(m, dtype, device))
    if m == size:
        return list(vals)
    j = torch.arange(m + 1, dtype=dtype, device=device)
    ends = torch.ones(m + 1, dtype=dtype, device=device)
    ends[0] = ends[-1] = 0.5
    coeff = torch.cos(torch.outer(j, j) * (math.pi / m)) * ends * (2.0 / m)
    coeff[0] *= 0.5
    coeff[-1] *= 0.5
    basis = torch.cos(torch.outer(angles(size, dtype, device), j)) @ coeff   # (size+1, m+1)
    return [basis @ v for v in vals]


def value_tables(act, kappa: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Padded tables of T and Ṫ at variance κ."""
    def duals(theta: Tensor) -> tuple[Tensor, Tensor]:
        kk = torch.full_like(theta, kappa)
        with torch.no_grad():
            return act.dual(kk, kappa * torch.cos(theta), kk)
    t, td = _on_table(act, duals, kappa, dtype, device)
    return act._pad_table(t), act._pad_table(td)


def derivative_tables(act, kappa: float, dtype: torch.dtype,
                      device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Padded tables of ∂T/∂k12 (= Ṫ), ∂Ṫ/∂k12, ∂T/∂κ and ∂Ṫ/∂κ (κ = k11 = k22, k12 fixed)."""
    rule = act._rule(torch.tensor(kappa), dtype, device)

    def derivatives(theta: Tensor) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            kk = torch.full_like(theta, kappa).requires_grad_(True)
            k12 = (kappa * torch.cos(theta)).requires_grad_(True)
            # the same tensor as k11 and k22: its gradient is the sum of the two
            series = _mehler.dual(act, kk, k12, kk) if getattr(act, "mehler", False) else None
            t, td = series if series is not None else QuadratureDual.apply(act, rule, kk, k12, kk)
            dt_kk, dt_12 = torch.autograd.grad(t.sum(), (kk, k12), retain_graph=True)
            dtd_kk, dtd_12 = torch.autograd.grad(td.sum(), (kk, k12))
        return dt_12, dtd_12, dt_kk, dtd_kk
    return tuple(act._pad_table(x.detach()) for x in _on_table(act, derivatives, kappa, dtype, device))


class EqualVarianceDual(torch.autograd.Function):
    """(T, Ṫ) at (κ, k12, κ) from the angle tables, differentiable in κ (a 0-d tensor) and k12
    with the tabulated derivatives of the module docstring.  Call as
    ``EqualVarianceDual.apply(act, kappa, k12)``."""

    @staticmethod
    def forward(act, kappa: Tensor, k12: Tensor):
        tab_t, tab_td = act._angle_table(float(kappa), k12.dtype, k12.device)
        t, td = interpolate((tab_t, tab_td), float(kappa), k12, act.table_size)
        return t, td

    @staticmethod
    def setup_context(ctx, inputs, output):
        act, kappa, k12 = inputs
        ctx.act = act
        ctx.save_for_backward(kappa, k12)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_t, g_td):
        kappa, k12 = ctx.saved_tensors
        act, k = ctx.act, float(kappa)
        tabs = act._angle_table(k, k12.dtype, k12.device, derivatives=True)
        zero = torch.zeros((), dtype=k12.dtype, device=k12.device)
        g_t = zero if g_t is None else g_t
        g_td = zero if g_td is None else g_td
        g12 = g_kappa = None
        if ctx.needs_input_grad[2]:
            (g12,) = interpolate(tabs[:2], k, k12, act.table_size, scale=(g_t, g_td))
        if ctx.needs_input_grad[1]:
            (g_k,) = interpolate(tabs[2:], k, k12, act.table_size, scale=(g_t, g_td))
            g_kappa = g_k.sum().reshape(kappa.shape)
        return None, g_kappa, g12
