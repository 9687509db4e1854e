"""Refuse an out-of-range quadrature variance before the N×M work, not after it.

A quadrature activation refuses pre-activation variances its rule cannot resolve (the
estimated-error check of ``Activation._rule``), but the check fires only when a layer reaches
such a variance — in a deep network after every earlier layer's N×M quadrature (softplus with
σ_w² = 30: ~70 s of work before the error at layer 3).  The per-input variances
K^{l+1}(x, x) = σ_b² + σ_w² E[φ(u)²], u ~ N(0, K^l(x, x)), follow a 1-D recursion of their own,
so the variances every layer will see are known in O(N·nodes): each is checked up front, with
the same rule and the same exemption where Mehler's series takes over (``wideNN._mehler``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _mehler

__all__ = ["check_quadrature_range"]

#: rows of the 1-D pass at a time (bounds the (rows, nodes) temporary)
_CHUNK = 1 << 13


def check_quadrature_range(act, depth: int, w, b, xs: tuple[Tensor | None, ...]) -> None:
    """ValueError (the activation's own message) when some layer of a depth-``depth`` network
    would take a variance beyond the accurate range of ``act``'s quadrature rule."""
    if getattr(act, "closed_form", True) or not hasattr(act, "_check_accuracy") or depth == 0:
        return
    with torch.no_grad():
        w_t, b_t = (torch.as_tensor(v).detach().to(torch.float64).cpu().unsqueeze(-1) for v in (w, b))
        ks = [b_t + w_t * (x.detach().to(torch.float64).cpu() ** 2).sum(-1) / x.shape[-1]
              for x in xs if x is not None and x.numel()]
        for _ in range(depth):
            if not ks:
                return
            top = max(float(k.max()) for k in ks)
            if not math.isfinite(top):
                return  # (the overflow checks of the kernel path say more)
            if top > act._checked_up_to and not _series_covers(act, torch.cat([k.reshape(-1) for k in ks])):
                act._check_accuracy(top)
            ks = [b_t + w_t * _second_moments(act, k) for k in ks]


def _series_covers(act, k: Tensor) -> bool:
    return bool(getattr(act, "mehler", False)) and _mehler._terms(act, k, k)[0] is not None


def _second_moments(act, k: Tensor) -> Tensor:
    """E[φ(u)²], u ~ N(0, k) per entry, by the activation's 1-D rule (no accuracy check: only
    the range matters here)."""
    z, wts = act._plain_rule(k, torch.float64, k.device)
    flat = k.reshape(-1)
    out = torch.empty_like(flat)
    for s in range(0, flat.numel(), _CHUNK):
        u = flat[s:s + _CHUNK, None].clamp_min(0.0).sqrt() * z
        out[s:s + _CHUNK] = (act.forward(u) ** 2 * wts).sum(-1)
    return out.reshape(k.shape)
