"""The cross-entropy residual σ(f) − P to rounding relative to its own size, in coordinates
δ = f − f_ref around a reference point of the targets.

Why: the flow's G = ∫ r ds integrates every rounding error of r.  Computed as σ(f) − P, r
carries an absolute error ~ε·P once σ(f) ≈ P, so G drifts like ε·t (1e-4 at t = 1e12) and the
adaptive step, which controls G's error too, is capped near 1e8 — t = 1e12 then takes ~10⁵
steps.  Storing the state as δ = f − f_ref with f_ref = log P + c (c_i per row) keeps δ exact
to its own size near the soft-label fixed point (δ* = 0 for a shared Θ, whose flow conserves
the row sums of f), and

    r_a = P̂_a expm1(u_a − log(Q/S))   (P_a > 0),      r_a = e^{u_a}/Q   (P_a = 0),
    u = δ − Σ_b P̂_b δ_b,   Q = Σ_{P_b>0} P_b e^{u_b} + Σ_{P_b=0} e^{u_b},   S = Σ_b P_b, P̂ = P/S,
    log(Q/S) = log1p((Σ_{P_b>0} P_b expm1(u_b) + Σ_{P_b=0} e^{u_b}) / S),

is exact to rounding relative to |r| (so a fixed point is reached exactly and G stops).  The
target is P̂, P normalised exactly as used (rows summing to 1 only to within 1e-16 would
otherwise leave a residual of that size forever).  One-hot rows reduce to r_c = −Z/(1+Z),
r_b = e^{u_b}/(1+Z), Z = Σ_{b≠c} e^{u_b}: the true class's residual from the small
probabilities, not from σ_c − 1.  Rows with a large u (> 30, far from the reference) use a
log-sum-exp for log Q instead (no overflow; there r is not small).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ReferenceResidual"]

_BIG = 30.0


class ReferenceResidual:
    """r(δ) = σ(f_ref + δ) − P̂ for targets P (N, O) and initial outputs f0 (N, O)."""

    def __init__(self, p: Tensor, f0: Tensor) -> None:
        self.support = p > 0
        self.total = p.sum(-1, keepdim=True)
        self.p, self.p_hat = p, p / self.total
        self.log_w = torch.where(self.support, p.clamp_min(torch.finfo(p.dtype).tiny).log(), 0.0)
        # c_i keeps the row sums of f0: the soft-label fixed point of a shared Θ is then δ = 0
        self.f_ref = self.log_w + (f0 - self.log_w).mean(-1, keepdim=True)

    def __call__(self, d: Tensor) -> Tensor:
        u = d - (self.p_hat * d).sum(-1, keepdim=True)
        uc = u.clamp(max=_BIG)
        inside = torch.where(self.support, self.p * torch.expm1(uc), 0.0).sum(-1, keepdim=True)
        outside = torch.where(self.support, 0.0, torch.exp(uc)).sum(-1, keepdim=True)
        log_q_over_s = torch.log1p((inside + outside) / self.total)
        big = u.amax(-1, keepdim=True) > _BIG
        if bool(big.any()):
            lse = torch.logsumexp(u + self.log_w, -1, keepdim=True) - self.total.log()
            log_q_over_s = torch.where(big, lse, log_q_over_s)
        r_in = self.p_hat * torch.expm1(u - log_q_over_s)
        r_out = torch.exp(u - log_q_over_s - self.total.log())
        return torch.where(self.support, r_in, r_out)

    def probabilities(self, d: Tensor) -> Tensor:
        """σ(f_ref + δ)."""
        return torch.softmax(self.f_ref + d, -1)

