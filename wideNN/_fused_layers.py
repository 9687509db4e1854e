"""One layer of the NNGP/NTK recursion on an in-cache tile, for each closed-form activation.

Each plan runs the recursion K^{l+1} = σ_b² + σ_w² T(K^l), Θ^{l+1} = K^{l+1} + σ_w² Ṫ(K^l) Θ^l
(NTK parameterization, duals of ``wideNN.activations``) on a *scaled* tile

    c = sign · K ⊙ (s ⊗ s'),   q = sign · Θ ⊙ (s ⊗ s'),

with a per-input scale s^l chosen so that the dual is cheap in c: the arc-cosine family works
on the correlation (s = K(x,x)^{-1/2}), erf on ρ = 2K/√((1+2K)(1+2K')) (its arcsin argument),
the others on K itself (s = 1).  Everything that depends on one input only (the next layer's
diagonal variances, the ratio of scales) is a vector; each layer is a handful of in-place passes
over the tile with one transcendental per entry, no allocation:

    family          transcendentals per entry and layer     identity used
    relu/leaky/abs  arccos, sqrt                            π − arccos c = arccos(−c), c kept negated
    step            arccos                                  Θ = K
    erf             arcsin, rsqrt                           Ṫ = (2/π) u u' / √(1 − ρ²)
    sin/cos         exp (and a reciprocal)                  e^{−k12} = 1/e^{k12}
    gelu            sqrt, atan2                             (the closed form of ``wideNN._gelu``)
    identity        none                                    —
On the CPU the arccos and square roots of the arc-cosine family run in NumPy (``wideNN._numpy_math``).
The driver (tiling, threads) is ``wideNN._fused``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import activations as _acts
from ._native import pointer as _ptr
from ._numpy_math import arccos_into, sqrt_

__all__ = ["plan_for"]

_INV_2PI = 1.0 / (2.0 * math.pi)


def _snapped_(m: Tensor) -> Tensor:
    """m = −c clamped to [−1, 1], with correlations c within 8 ulps of 1 set to exactly 1 (as
    ``wideNN._gaussian.snap_correlation`` does in the generic path: a rounding residue δ would
    become an angle √(2δ) ≈ 1e-8, which the step kernel amplifies layer after layer)."""
    tol = 8 * torch.finfo(m.dtype).eps
    m.clamp_(max=1.0)
    return torch.nn.functional.threshold_(m, -1.0 + tol, -1.0)


class _Plan:
    """Scales, per-layer vectors and the in-place tile layer of one activation."""

    sign = 1.0
    #: whether the scaled first-layer rows are unit vectors (the tile is then a correlation)
    unit_rows = False
    #: scratch tile buffers the layer needs besides c, q and the output
    scratch = 3
    #: Θ = K at every layer (step: φ' = 0), so q is never formed
    ntk_is_nngp = False

    def __init__(self, act: _acts.Activation, w: float, b: float) -> None:
        self.act, self.w, self.b = act, w, b
        #: the compiled layers (``wideNN._native``) for CPU tiles, set by the driver; None: torch
        self.lib = None

    def _native(self, name: str, c: Tensor):
        return getattr(self.lib, name + ("_f64" if c.dtype == torch.float64 else "_f32"))

    def valid(self, ks: list[Tensor]) -> bool:
        """Whether the fused path applies to these per-layer diagonal variances."""
        return all(bool(torch.isfinite(k).all()) for k in ks)

    def scale(self, k: Tensor) -> Tensor:
        return torch.ones_like(k)

    def diagonal(self, k: Tensor, s: Tensor) -> Tensor:
        """The scaled tile's entries at coincident points (set exactly, as in the generic path)."""
        return self.sign * k * s * s

    def vectors(self, k: Tensor, s: Tensor, k_next: Tensor, s_next: Tensor) -> Tensor:
        """(V, n) per-input vectors the layer from k to k_next uses."""
        raise NotImplementedError

    def layer_(self, c: Tensor, q: Tensor | None, rv: Tensor, cv: Tensor, out: Tensor,
               scratch: list[Tensor]) -> Tensor:
        """Writes the next scaled c into ``out`` (returned) and updates q in place."""
        raise NotImplementedError


class _ArcCosine(_Plan):
    """ReLU, leaky ReLU (|x| is slope −1): T = s/2π ((1−α)²(√(1−c²) + (π−θ)c)) + α k12,
    Ṫ = (1−α)²(π−θ)/2π + α.  Tiles hold m = −c, so arccos(m) = π − θ directly."""

    sign = -1.0
    unit_rows = True

    def __init__(self, act, w, b, slope: float = 0.0) -> None:
        super().__init__(act, w, b)
        self.slope = slope
        self.kappa = (1.0 - slope) ** 2 * _INV_2PI

    def valid(self, ks):
        return super().valid(ks) and all(bool((k > 0).all()) for k in ks)

    def scale(self, k):
        return k.rsqrt()

    def diagonal(self, k, s):
        return torch.full_like(k, self.sign)  # correlation exactly 1

    def vectors(self, k, s, k_next, s_next):
        ratio = (k / k_next).sqrt()  # r₊/r
        coef = self.w * (self.kappa if self.slope == 0.0 else 1.0)
        # row vectors carry the sign and the scalar factors, column vectors are bare
        return torch.stack([-coef * ratio, ratio, -self.b * s_next, s_next])

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            h, w = c.shape
            self._native("arccos_layer", c)(_ptr(c), _ptr(q), _ptr(out), h, w, _ptr(rv[0]),
                                            _ptr(rv[2]), _ptr(cv[1]), _ptr(cv[3]), self.kappa,
                                            self.slope, 8 * torch.finfo(c.dtype).eps)
            return out
        p, amat = scratch[0], scratch[1]
        m = _snapped_(c)
        arccos_into(m, p)                                                 # π − θ
        torch.mul(m, m, out=out)
        sqrt_(out.neg_().add_(1.0)).addcmul_(p, m, value=-1.0)            # √(1−c²) + (π−θ)c
        a = self.slope
        if a != 0.0:
            out.mul_(self.kappa).add_(m, alpha=-a)
        torch.outer(rv[0], cv[1], out=amat)
        out.mul_(amat).addr_(rv[2], cv[3])                                # −c₊
        if q is not None:
            if a != 0.0:
                p.mul_(self.kappa).add_(a)
            p.mul_(amat)
            torch.addcmul(out, p, q, value=-1.0, out=q)                   # −Θ₊ scaled
        return out


class _Step(_ArcCosine):
    """Heaviside: T = (π − θ)/2π, Ṫ = 0 (so Θ = K)."""

    ntk_is_nngp = True
    scratch = 2

    def vectors(self, k, s, k_next, s_next):
        return torch.stack([-self.w * _INV_2PI * s_next, s_next, -self.b * s_next, s_next])

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            h, w = c.shape
            self._native("step_layer", c)(_ptr(c), _ptr(out), h, w, _ptr(rv[0]), _ptr(rv[2]),
                                          _ptr(cv[1]), _ptr(cv[3]), 8 * torch.finfo(c.dtype).eps)
            return out
        p, amat = scratch[0], scratch[1]
        arccos_into(_snapped_(c), p)
        torch.outer(rv[0], cv[1], out=amat)
        torch.mul(p, amat, out=out).addr_(rv[2], cv[3])
        return out


class _Erf(_Plan):
    """erf on ρ = K u u', u = √(2/(1+2k)): ρ₊ = (σ_b² + (2σ_w²/π) arcsin ρ) u₊u₊',
    q₊ = ρ₊ + (2σ_w²/π) u₊u₊' q / √(1 − ρ²)."""

    def valid(self, ks):
        # near coincident points 1 − ρ² ≈ 1/(1+2k) is known only to ε·(1+2k) relative (ρ itself
        # is rounded), and Ṫ = 1/√(1 − ρ²) inherits that: variances above 256 (error > 128ε)
        # go to the generic path, which forms D/S from bounded ratios (``_gaussian.shifted_gram``)
        return super().valid(ks) and all(bool((k <= 256.0).all()) for k in ks)

    def scale(self, k):
        return (2.0 / (1.0 + 2.0 * k)).sqrt()

    def vectors(self, k, s, k_next, s_next):
        return torch.stack([(2.0 * self.w / math.pi) * s_next, s_next, self.b * s_next, s_next])

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            h, w = c.shape
            self._native("erf_layer", c)(_ptr(c), _ptr(q), _ptr(out), h, w, _ptr(rv[0]),
                                         _ptr(rv[2]), _ptr(cv[1]), _ptr(cv[3]))
            return out
        p, z, amat = scratch
        rho = c.clamp_(-1.0, 1.0)
        torch.asin(rho, out=p)
        torch.outer(rv[0], cv[1], out=amat)
        torch.mul(p, amat, out=out).addr_(rv[2], cv[3])
        if q is not None:
            torch.mul(rho, rho, out=z)
            z.neg_().add_(1.0).rsqrt_().mul_(amat)
            torch.addcmul(out, q, z, out=q)
        return out


class _Sin(_Plan):
    """sin / cos on K: E± = e^{±k12}·e^{−k/2}e^{−k'/2}; sin: T = (E₊ − E₋)/2, Ṫ = (E₊ + E₋)/2
    (cos swaps them).  e^{−k12} = 1/e^{k12} needs |k12| ≤ k_max small enough not to overflow."""

    def __init__(self, act, w, b, cosine: bool) -> None:
        super().__init__(act, w, b)
        self.cosine = cosine

    def valid(self, ks):
        limit = 0.45 * math.log(torch.finfo(ks[0].dtype).max)
        return super().valid(ks) and all(bool((k <= limit).all()) for k in ks)

    def vectors(self, k, s, k_next, s_next):
        e = (-0.5 * k).exp()
        return torch.stack([0.5 * self.w * e, e])

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            h, w = c.shape
            self._native("sin_layer", c)(_ptr(c), _ptr(q), _ptr(out), h, w, _ptr(rv[0]),
                                         _ptr(cv[1]), self.b, int(self.cosine))
            return out
        p, z, amat = scratch
        # with e = e^{k12} − 1 (expm1: exact for tiny k12, where e^{k12} − e^{−k12} cancels):
        # e^{k12} − e^{−k12} = e(2 + e)/(1 + e),  e^{k12} + e^{−k12} = (1 + e) + 1/(1 + e)
        torch.special.expm1(c, out=p)
        torch.add(p, 1.0, out=z).reciprocal_()                           # e^{−k12}
        torch.add(p, 2.0, out=amat).mul_(p).mul_(z)                      # e^{k12} − e^{−k12}
        p.add_(1.0).add_(z)                                               # e^{k12} + e^{−k12}
        if self.cosine:
            out.copy_(p)
            p.copy_(amat)
        else:
            out.copy_(amat)
        torch.outer(rv[0], cv[1], out=amat)
        out.mul_(amat).add_(self.b)
        if q is not None:
            p.mul_(amat)
            torch.addcmul(out, p, q, out=q)
        return out


class _Identity(_Plan):
    """K₊ = σ_b² + σ_w² K, Θ₊ = K₊ + σ_w² Θ."""

    scratch = 0

    def vectors(self, k, s, k_next, s_next):
        return k[None]

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            self._native("identity_layer", c)(_ptr(c), _ptr(q), _ptr(out), c.numel(), self.w, self.b)
            return out
        torch.mul(c, self.w, out=out).add_(self.b)
        if q is not None:
            q.mul_(self.w).add_(out)
        return out


class _GELU(_Plan):
    """GELU on K, the closed form of ``wideNN._gelu`` (S = (1+k)(1+k'), D = S − k12²,
    P = ¼ + atan2(k12, √D)/2π):
        T = k12 P + (k k' D + k12²)/(2π S √D),  Ṫ = P + k12((3 + k + k') D + k12²)/(2π S D^{3/2})."""

    scratch = 6

    def vectors(self, k, s, k_next, s_next):
        inv_a = 1.0 / torch.clamp_min(1.0 + k, 0.5)
        return torch.stack([k, 1.0 + k, 3.0 + k, _INV_2PI * inv_a, inv_a])

    def layer_(self, c, q, rv, cv, out, scratch):
        if self.lib is not None:
            h, w = c.shape
            self._native("gelu_layer", c)(_ptr(c), _ptr(q), _ptr(out), h, w, _ptr(rv[0]),
                                          _ptr(rv[1]), _ptr(rv[2]), _ptr(rv[3]), _ptr(cv[0]),
                                          _ptr(cv[4]), self.w, self.b)
            return out
        sq, prod, d, sd, p, r = scratch
        torch.mul(c, c, out=sq)
        torch.outer(rv[0], cv[0], out=prod)                               # k k'
        torch.sub(prod, sq, out=d)
        d.add_(rv[1][:, None]).add_(cv[0][None, :]).clamp_min_(0.5)      # D
        torch.sqrt(d, out=sd)
        torch.atan2(c, sd, out=p)
        p.mul_(_INV_2PI).add_(0.25)                                      # P
        torch.reciprocal(sd, out=r)
        r.mul_(rv[3][:, None]).mul_(cv[4][None, :])                      # 1/(2π S √D)
        prod.mul_(d).add_(sq).mul_(r)
        torch.addcmul(prod, c, p, out=out)                               # T
        if q is not None:
            torch.add(rv[2][:, None], cv[0][None, :], out=sd)             # 3 + k + k'
            sd.mul_(d).add_(sq).mul_(c).mul_(r).div_(d).add_(p)          # Ṫ
            q.mul_(sd)
        out.mul_(self.w).add_(self.b)
        if q is not None:
            q.mul_(self.w).add_(out)
        return out


def plan_for(act: _acts.Activation, w: float, b: float) -> _Plan | None:
    """The fused plan of a closed-form activation, or None (exact types only: a subclass may
    override its duals)."""
    kind = type(act)
    if kind is _acts.ReLU:
        return _ArcCosine(act, w, b)
    if kind in (_acts.LeakyReLU, _acts.Abs):
        return _ArcCosine(act, w, b, slope=act.negative_slope)
    if kind is _acts.Step:
        return _Step(act, w, b)
    if kind is _acts.Erf:
        return _Erf(act, w, b)
    if kind in (_acts.Sin, _acts.Cos):
        return _Sin(act, w, b, cosine=kind is _acts.Cos)
    if kind is _acts.Identity:
        return _Identity(act, w, b)
    if kind is _acts.GELU:
        return _GELU(act, w, b)
    return None
