"""The quadrature dual kernels with an explicit backward (Price's theorem).

For (u, v) ~ N(0, [[k11, k12], [k12, k22]]) the duals T = E[φ(u)φ(v)] and Ṫ = E[φ'(u)φ'(v)]
are sums over a tensor grid of nodes.  Letting autograd record that sum stores every node's
intermediate values: ~nodes² floats per kernel entry (0.3–0.8 MB for a 48-degree rule), which
limited marginal-likelihood fitting of quadrature kernels to ~150 points.  Instead the
gradients are computed by the same quadrature from Price's theorem (R. Price, IRE Trans. Inf.
Theory 1958: the derivative of E[f(u, v)] in a covariance entry is the expectation of a
derivative of f):

    ∂T/∂k12 = E[φ'(u) φ'(v)] = Ṫ,            ∂Ṫ/∂k12 = E[φ''(u) φ''(v)],
    ∂T/∂k11 = ½ E[φ''(u) φ(v)],              ∂Ṫ/∂k11 = ½ E[φ'''(u) φ'(v)],

(k22 symmetric).  The k11 / k22 derivatives are evaluated one derivative lower, by Gaussian
integration by parts (Stein's lemma on u given v), u = √k11 z1:

    E[φ''(u) h(v)] = (E[z1 φ'(u) h(v)] − c √k22 E[φ'(u) h'(v)]) / √k11,

which holds for φ' with jumps (whose φ'' is a Dirac delta) and is as accurate as the forward
quadrature (the third derivative on the same rule is not: 2e-5 vs 1e-6 relative for a depth-3
tanh NTK at degree 48).  It divides by √k11, so for standard deviations below ``SMALL_SCALE``
activations marked ``smooth`` use the direct form instead.  Only (k11, k12, k22) and Ṫ are
saved, so a differentiable kernel keeps a few N×M arrays per layer, as without autograd.
The gradients are as accurate as the forward quadrature for smooth φ (gradcheck-level
agreement at degree 64).  For φ' with a jump (a Dirac delta in φ'') ∂Ṫ/∂k12 would converge
only like 1/degree; ELU, the one such built-in activation, has a closed-form dual and backward
instead (``wideNN._elu``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._gaussian import correlation, safe_sqrt

# all n² nodes at once below this many (entries × nodes²); a Python loop over z1 nodes above
_VECTORISE_LIMIT = 1 << 21


def _features(act, x: Tensor, z, names: set[str]) -> dict[str, Tensor]:
    """φ, φ', φ'', φ''' at x, and z·φ', z·φ'' (z the standard-normal variable of x's axis)."""
    out: dict[str, Tensor] = {}
    if "f" in names:
        out["f"] = act.forward(x)
    if names & {"d1", "zd1"}:
        out["d1"] = act.derivative(x)
    if names & {"d2", "zd2"}:
        out["d2"] = act.second_derivative(x)
    if "d3" in names:
        out["d3"] = act.third_derivative(x)
    if "zd1" in names:
        out["zd1"] = z * out["d1"]
    if "zd2" in names:
        out["zd2"] = z * out["d2"]
    return out


def gaussian_sums(act, k11: Tensor, k12: Tensor, k22: Tensor, pairs: list[tuple[str, str]],
                  rule: tuple[Tensor, Tensor]) -> list[Tensor]:
    """E[F(u) G(v)] for each (F, G) in ``pairs`` (feature names of ``_features``), by the
    product rule ``rule`` = (z, w): u = √k11 z1, v = √k22 (c z1 + √(1−c²) z2)."""
    z, w = rule
    shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
    _, c = correlation(k11, k12, k22)
    c = c.expand(shape)
    a1 = safe_sqrt(k11).expand(shape)
    a2 = safe_sqrt(k22).expand(shape)
    sc = safe_sqrt(1.0 - c * c)
    names_u = {p[0] for p in pairs}
    names_v = {p[1] for p in pairs}
    n = z.numel()
    if c.numel() * n * n <= _VECTORISE_LIMIT:
        # small kernels: all n² nodes at once (the Python loop would dominate)
        zu = z[:, None]
        u = a1[..., None, None] * zu                                                  # (..., n, 1)
        zv = c[..., None, None] * zu + sc[..., None, None] * z                        # (..., n, n)
        fu = _features(act, u, zu, names_u)
        fv = _features(act, a2[..., None, None] * zv, zv, names_v)
        ww = w[:, None] * w
        return [(fu[p] * fv[q] * ww).sum((-1, -2)) for p, q in pairs]
    acc = [torch.zeros(shape, dtype=k12.dtype, device=k12.device) for _ in pairs]
    for i in range(n):
        zi = z[i]
        zv = c.unsqueeze(-1) * zi + sc.unsqueeze(-1) * z
        fu = _features(act, a1 * zi, zi, names_u)
        fv = _features(act, a2.unsqueeze(-1) * zv, zv, names_v)
        for s, (p, q) in zip(acc, pairs):
            s.add_(fu[p] * (fv[q] * w).sum(-1), alpha=float(w[i]))
    return acc


class QuadratureDual(torch.autograd.Function):
    """(T, Ṫ) = (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) by quadrature, differentiable in (k11, k12, k22)
    with the backward of the module docstring.  Call as ``QuadratureDual.apply(act, rule,
    k11, k12, k22)``."""

    @staticmethod
    def forward(act, rule, k11, k12, k22):
        t, td = gaussian_sums(act, k11, k12, k22, [("f", "f"), ("d1", "d1")], rule)
        return t, td

    @staticmethod
    def setup_context(ctx, inputs, output):
        act, rule, k11, k12, k22 = inputs
        ctx.act, ctx.rule = act, rule
        ctx.save_for_backward(k11, k12, k22, output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_t, g_td):
        k11, k12, k22, td = ctx.saved_tensors
        act, rule = ctx.act, ctx.rule
        need11, need12, need22 = ctx.needs_input_grad[2:]
        shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
        zero = torch.zeros((), dtype=td.dtype, device=td.device)
        want_t, want_td = g_t is not None, g_td is not None
        _, c = correlation(k11, k12, k22)
        a1, a2 = safe_sqrt(k11), safe_sqrt(k22)
        small = {11: a1 < SMALL_SCALE, 22: a2 < SMALL_SCALE}
        direct = {w: getattr(act, "smooth", False) and bool(small[w].any()) for w in small}
        pairs = [("d2", "d2")] if want_td else []
        for which, need in ((11, need11), (22, need22)):
            if need:
                pairs += [p for p, used in zip(_PAIRS[which]["ibp"], (want_t, want_td)) if used]
                if direct[which]:
                    pairs += [p for p, used in zip(_PAIRS[which]["direct"], (want_t, want_td)) if used]
        sums = dict(zip(pairs, gaussian_sums(act, k11, k12, k22, pairs, rule)))
        dd = sums.get(("d2", "d2"), zero)

        def total(d_t: Tensor, d_td: Tensor, like: Tensor) -> Tensor:
            g = (g_t * d_t if want_t else 0.0) + (g_td * d_td if want_td else 0.0)
            return torch.broadcast_to(g, shape).sum_to_size(like.shape)

        out = {11: None, 12: None, 22: None}
        if need12:
            out[12] = total(td, dd, k12)
        for which, need, mine, other, like in ((11, need11, a1, a2, k11), (22, need22, a2, a1, k22)):
            if not need:
                continue
            ibp_t, ibp_td = (sums.get(p, zero) for p in _PAIRS[which]["ibp"])
            # integration by parts divides by the standard deviation: exact, but it cancels
            # for small ones, where the direct form (smooth φ only) is used instead
            safe = torch.where(mine > 0, mine, torch.ones_like(mine))
            d_t = torch.where(mine > 0, (ibp_t - c * other * td) / (2 * safe), zero)
            d_td = torch.where(mine > 0, (ibp_td - c * other * dd) / (2 * safe), zero)
            if direct[which]:
                dir_t, dir_td = (0.5 * sums.get(p, zero) for p in _PAIRS[which]["direct"])
                d_t = torch.where(small[which], dir_t, d_t)
                d_td = torch.where(small[which], dir_td, d_td)
            out[which] = total(d_t, d_td, like)
        return None, None, out[11], out[12], out[22]


#: standard deviations below which smooth activations use Price's direct form for ∂/∂k11
#: (the integration-by-parts form loses ~eps/√k to cancellation there)
SMALL_SCALE = 0.25

# (for ∂T, for ∂Ṫ) with respect to k11 and k22, in the two forms of the module docstring
_PAIRS = {
    11: {"ibp": (("zd1", "f"), ("zd2", "d1")), "direct": (("d2", "f"), ("d3", "d1"))},
    22: {"ibp": (("f", "zd1"), ("d1", "zd2")), "direct": (("f", "d2"), ("d1", "d3"))},
}
