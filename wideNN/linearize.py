"""Taylor models of a network around its current parameters θ₀.

    order 1 (``linearize``): f_lin(x; θ) = f(x; θ₀) + J(x; θ₀) δ,                 δ = θ − θ₀
    order 2 (``taylor``):     f_quad(x; θ) = f_lin(x; θ) + ½ δᵀ ∇²_θ f(x; θ₀) δ
    order k:                  Σ_{j ≤ k} (1/j!) D^j f(x; θ₀)[δ, …, δ]

Each directional derivative D^j f(θ₀)[δ^j] is a nested ``torch.func.jvp`` (forward mode), so
neither the Jacobian nor the Hessian is ever materialized: a forward of the linear model costs
about one forward + one JVP of the network.  The result is an ``nn.Module`` whose own
parameters θ (initialized to θ₀) can be trained with ``wn.train`` like any network; under
gradient flow the linear model's training outputs follow f_t = y + e^{−ηtΘ̂₀/N}(f_0 − y)
exactly, with the empirical NTK Θ̂₀ frozen at θ₀ (Lee et al. 2019); the quadratic model is
Bai & Lee (2020)'s "beyond linearization".
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from ._checks import check_not_meta_for

__all__ = ["TaylorModel", "linearize", "taylor"]


#: the highest Taylor order (nested JVPs: the cost doubles with each order)
MAX_ORDER = 12


class TaylorModel(nn.Module):
    """Order-``order`` Taylor expansion of ``model`` in its parameters around θ₀.

    Attributes:
        network: a private copy of the model whose parameters are the trainable θ; its
            *structure* is what gets expanded (calling it directly evaluates the non-linear
            network at θ, not the Taylor model).
        order: the expansion order (1 = linearized network).
    θ₀ is stored in buffers (``theta0``) and never changes; ``reset()`` sets θ back to θ₀.
    """

    def __init__(self, model: nn.Module, order: int = 1) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        if order > MAX_ORDER:
            raise ValueError(f"order must be at most {MAX_ORDER} (each order doubles the cost: order "
                             f"{order} would take ~2**{order} forward passes), got {order}")
        if isinstance(model, TaylorModel):
            raise TypeError("model is already a Taylor model; expand the underlying network instead")
        self.order = order
        self.network = copy.deepcopy(model)
        names = [k for k, p in self.network.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError("the model has no trainable parameters to expand in")
        self._names = names
        # buffer names may not contain dots
        self._buf = {k: "theta0_" + k.replace(".", "__") for k in names}
        params = dict(self.network.named_parameters())
        for k in names:
            self.register_buffer(self._buf[k], params[k].detach().clone())

    # -- parameters --------------------------------------------------------------------
    @property
    def theta0(self) -> dict[str, Tensor]:
        """The expansion point θ₀ (name → tensor)."""
        return {k: getattr(self, self._buf[k]) for k in self._names}

    def theta(self) -> dict[str, Tensor]:
        """The current (trainable) parameters θ (name → parameter)."""
        params = dict(self.network.named_parameters())
        return {k: params[k] for k in self._names}

    def readout_parameters(self) -> list[Tensor]:
        """θ of the network's readout layer (for ``trainable="readout"``)."""
        from .training import _readout_parameters

        return _readout_parameters(self.network)

    @torch.no_grad()
    def reset(self) -> None:
        """Set θ back to θ₀."""
        for k, p in self.theta().items():
            p.copy_(getattr(self, self._buf[k]))

    # -- evaluation --------------------------------------------------------------------
    def _f(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.network, p, (x,))

    def terms(self, x: Tensor) -> list[Tensor]:
        """[f(θ₀), Df(θ₀)[δ], D²f(θ₀)[δ, δ], …] up to ``order`` (without the 1/j! factors)."""
        theta0 = self.theta0
        delta = {k: v - theta0[k] for k, v in self.theta().items()}

        def derivs(k: int, p: dict[str, Tensor]) -> tuple[Tensor, ...]:
            # D^j f(p)[δ^j] for j ≤ k, each level one more forward-mode pass along δ
            if k == 0:
                return (self._f(p, x),)
            primal, tangent = jvp(lambda q: derivs(k - 1, q), (p,), (delta,))
            return (*primal, tangent[-1])

        return list(derivs(self.order, theta0))

    def forward(self, x: Tensor) -> Tensor:
        """Σ_{j ≤ order} (1/j!) D^j f(x; θ₀)[δ^j] with δ = θ − θ₀."""
        check_not_meta_for("x", x, self)
        if self.order == 1:
            return _Linearized.apply(self, x, *self.theta().values())
        out = None
        for j, t in enumerate(self.terms(x)):
            t = t if j < 2 else t / math.factorial(j)
            out = t if out is None else out + t
        return out

    def extra_repr(self) -> str:
        return f"order={self.order}"


class _Linearized(torch.autograd.Function):
    """f(x; θ₀) + J(x; θ₀)δ with an explicit backward Jᵀg (one VJP at θ₀).

    Autograd through the JVP (reverse-over-forward) costs several times a network step; the
    model is linear in δ, so its gradient is exactly the VJP of the network at θ₀, which costs
    one forward + backward.  (Gradients with respect to x are not propagated.)
    """

    generate_vmap_rule = True  # so torch.func transforms (empirical_ntk) still apply

    @staticmethod
    def forward(model, x, *theta):  # type: ignore[override]
        theta0 = model.theta0
        delta = {k: t - theta0[k] for k, t in zip(model._names, theta)}
        f0, tangent = jvp(lambda p: model._f(p, x), (theta0,), (delta,))
        return f0 + tangent

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.model, ctx.x = inputs[0], inputs[1]

    @staticmethod
    def jvp(ctx, model_t, x_t, *theta_t):  # type: ignore[override]
        # linear in θ: the directional derivative along θ_t is J(θ₀)θ_t
        model, x = ctx.model, ctx.x
        theta0 = model.theta0
        tangent = {k: (t if t is not None else torch.zeros_like(theta0[k]))
                   for k, t in zip(model._names, theta_t)}
        return jvp(lambda p: model._f(p, x), (theta0,), (tangent,))[1]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        model, x = ctx.model, ctx.x
        with torch.enable_grad():
            _, pullback = vjp(lambda p: model._f(p, x), model.theta0)
        (grads,) = pullback(grad)
        return (None, None, *(grads[k] for k in model._names))


def linearize(model: nn.Module) -> TaylorModel:
    """The linearized network f_lin(x; θ) = f(x; θ₀) + J(x; θ₀)(θ − θ₀) around the model's
    current parameters θ₀, as a trainable ``nn.Module`` (JVP-based; J is never formed).

    Trained by ``wn.train`` with full-batch GD at rate η, its training outputs follow
    f_s = y + (I − ηΘ̂₀/N)^s (f_0 − y) exactly (→ e^{−ηtΘ̂₀/N} as η → 0), Θ̂₀ = J Jᵀ at θ₀.
    The original model is copied, not modified.
    """
    return TaylorModel(model, order=1)


def taylor(model: nn.Module, order: int = 2) -> TaylorModel:
    """The order-``order`` Taylor model Σ_{j ≤ order} (1/j!) D^j f(x; θ₀)[(θ − θ₀)^j];
    ``order=2`` is the quadratic model f_lin + ½ δᵀ ∇²f(θ₀) δ of Bai & Lee (2020).
    Each order adds one nested JVP, so the cost roughly doubles per order."""
    return TaylorModel(model, order=order)
