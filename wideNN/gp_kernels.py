"""GPyTorch kernels for the infinite-width limits: ``NNGPKernel`` and ``NTKKernel``.

Both wrap the analytic recursion of ``wideNN.analytic`` for a fixed depth and activation and
make the weight and bias variances learnable GPyTorch hyperparameters, so the limits drop
into any GPyTorch model (``ScaleKernel``, ``ExactGP``, ``ExactMarginalLogLikelihood``,
``MultiDeviceKernel``, batch models).
"""
from __future__ import annotations

from typing import Sequence

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior
from torch import Tensor

from ._checks import real_number
from .analytic import kernels as _kernels
from .architecture import Architecture
from .layers import Serial
from .layers.gp import check_in_shape, serial_defaults, serial_forward

__all__ = ["NNGPKernel", "NTKKernel"]


class _InfiniteWidthKernel(Kernel):
    """Shared machinery: two positive hyperparameters σ_w², σ_b² of shape (*batch_shape, 1)."""

    has_lengthscale = False
    _which = "nngp"

    def __init__(
        self,
        architecture: Architecture,
        weight_variance_prior: Prior | None = None,
        weight_variance_constraint: Interval | None = None,
        bias_variance_prior: Prior | None = None,
        bias_variance_constraint: Interval | None = None,
        widths: Sequence[int] | int | None = None,
        block_size: int | None = None,
        in_shape: Sequence[int] | None = None,
        **kwargs,
    ):
        if not isinstance(architecture, (Architecture, Serial)):
            raise TypeError(f"architecture must be a wideNN.Architecture or wideNN.Serial, "
                            f"got {type(architecture).__name__}")
        self.in_shape = check_in_shape(architecture, in_shape)
        if isinstance(architecture, Serial):  # unset top-level variances: the description's defaults
            architecture = architecture.replace(**serial_defaults(architecture))
        for name, v in (("weight_variance", architecture.weight_variance),
                        ("bias_variance", architecture.bias_variance)):
            if isinstance(v, Tensor) and v.numel() != 1:
                raise ValueError(f"the architecture's {name} must be a scalar (use batch_shape "
                                 f"for a batch of kernels), got shape {tuple(v.shape)}")
        super().__init__(**kwargs)
        # depth, activation and parameterization are structure, not hyperparameters: keep them
        # in a plain (unregistered) Architecture whose variances are never read.
        self._template = architecture.replace(weight_variance=float(architecture.weight_variance),
                                              bias_variance=float(architecture.bias_variance))
        self.widths = widths
        self.block_size = block_size
        if (self._which == "ntk" and architecture.parameterization == "standard" and widths is None
                and self.in_shape is None):
            raise ValueError("the standard-parameterization NTK depends on the hidden widths: "
                             "pass widths=[n_1, ..., n_depth] (or an int)")

        for name, prior, constraint in (("weight_variance", weight_variance_prior, weight_variance_constraint),
                                        ("bias_variance", bias_variance_prior, bias_variance_constraint)):
            self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1)))
            self.register_constraint(f"raw_{name}", constraint if constraint is not None else Positive())
            if prior is not None:
                if not isinstance(prior, Prior):
                    raise TypeError(f"Expected gpytorch.priors.Prior but got {type(prior).__name__}")
                self.register_prior(f"{name}_prior", prior,
                                    lambda m, n=name: getattr(m, n),
                                    lambda m, v, n=name: m._set_variance(n, v))
        # σ² = 0 maps to raw = -inf, which the softplus maps back to exactly 0 (as GPyTorch's own
        # setters do); such a variance then stays at 0 under gradient-based fitting.
        self._set_variance("weight_variance", float(architecture.weight_variance))
        self._set_variance("bias_variance", float(architecture.bias_variance))

    # -- hyperparameters -------------------------------------------------------------------
    def _set_variance(self, name: str, value) -> None:
        if not torch.is_tensor(value):
            real_number(name, value)  # bool / str are not variances
        raw = getattr(self, f"raw_{name}")
        exact = (value.detach() if torch.is_tensor(value) else
                 torch.as_tensor(value, dtype=torch.float64)).to(torch.float64)
        if not torch.is_tensor(value):
            value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)  # no float32 detour
        if bool((value < 0).any()) or not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite and non-negative, got {value}")
        constraint = getattr(self, f"raw_{name}_constraint")
        self.initialize(**{f"raw_{name}": constraint.inverse_transform(value)})
        # the exact value, and the raw parameter it produced: a later cast to a wider dtype
        # (.double(), .to(torch.float64)) re-derives the raw parameter from the exact value
        # while it has not been changed since (see ``_apply``)
        self.__dict__.setdefault("_exact", {})[name] = (
            exact, getattr(self, f"raw_{name}").detach().clone())

    def _apply(self, fn, *args, **kwargs):
        """Module casts (``.double()``, ``.to(...)``) keep σ² exact: the raw parameters are
        created in the default dtype (GPyTorch's convention), where σ² = 1.3 rounds to
        1.2999999523; after a cast to float64 the raw value is recomputed from the value the
        kernel was given, as long as it has not been changed (by fitting or by hand) since."""
        out = super()._apply(fn, *args, **kwargs)
        for name, (exact, snap) in list(self.__dict__.get("_exact", {}).items()):
            raw = getattr(self, f"raw_{name}")
            if snap.shape != raw.shape or not torch.equal(snap.to(raw), raw.detach()):
                del self._exact[name]  # changed since it was set: nothing exact to restore
                continue
            if torch.finfo(raw.dtype).eps < torch.finfo(snap.dtype).eps:
                constraint = getattr(self, f"raw_{name}_constraint")
                with torch.no_grad():
                    raw.copy_(constraint.inverse_transform(exact.to(raw)))
            self._exact[name] = (exact, raw.detach().clone())
        return out

    @property
    def weight_variance(self) -> Tensor:
        """σ_w², shape (*batch_shape, 1)."""
        return self.raw_weight_variance_constraint.transform(self.raw_weight_variance)

    @weight_variance.setter
    def weight_variance(self, value) -> None:
        self._set_variance("weight_variance", value)

    @property
    def bias_variance(self) -> Tensor:
        """σ_b², shape (*batch_shape, 1)."""
        return self.raw_bias_variance_constraint.transform(self.raw_bias_variance)

    @bias_variance.setter
    def bias_variance(self, value) -> None:
        self._set_variance("bias_variance", value)

    @property
    def architecture(self) -> Architecture:
        """The ``Architecture`` with the current (fitted) variances as floats (batch_shape [] only)."""
        if self.batch_shape.numel() != 1:
            raise ValueError(f"a kernel with batch_shape {tuple(self.batch_shape)} holds several "
                             f"architectures; index it first (kernel[i])")
        return self._template.replace(weight_variance=float(self.weight_variance.detach().reshape(())),
                                      bias_variance=float(self.bias_variance.detach().reshape(())))

    @property
    def is_stationary(self) -> bool:
        return False

    # -- evaluation ------------------------------------------------------------------------
    def _variances(self, x: Tensor):
        w = self.weight_variance.squeeze(-1)
        b = self.bias_variance.squeeze(-1)
        # Scalars without autograd go through the fused (ReLU) path of wideNN.analytic.
        if w.dim() == 0 and not (torch.is_grad_enabled() and (w.requires_grad or b.requires_grad)):
            return float(w), float(b)
        return w.to(x.dtype), b.to(x.dtype)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params) -> Tensor:
        if last_dim_is_batch:
            x1 = x1.transpose(-1, -2).unsqueeze(-1)
            x2 = x2.transpose(-1, -2).unsqueeze(-1)
        for name, x in (("x1", x1), ("x2", x2)):
            # before the variances are cast to x's dtype, so the message names the inputs
            if not torch.is_floating_point(x):
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
                                f"convert with .double() or .float()")
        w, b = self._variances(x1)
        if self.in_shape is not None:
            return serial_forward(self._template, self.in_shape, x1, x2, w, b, diag=diag,
                                  which=self._which, width=self.widths, block_size=self.block_size)
        # x2 = None selects the symmetric code paths (half the work, exact symmetry)
        same = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        nngp, ntk = _kernels(
            x1, None if same else x2, depth=self._template.depth, activation=self._template.phi,
            weight_variance=w, bias_variance=b, parameterization=self._template.parameterization,
            widths=self.widths, diag=diag, compute_ntk=self._which == "ntk", block_size=self.block_size)
        return ntk if self._which == "ntk" else nngp


class NNGPKernel(_InfiniteWidthKernel):
    r"""The NNGP kernel of an infinitely wide fully-connected network, as a GPyTorch kernel.

    .. math::
        K^1(x, x') = \sigma_b^2 + \sigma_w^2\, x^\top x' / d, \qquad
        K^{l+1}(x, x') = \sigma_b^2 + \sigma_w^2\, \mathbb{E}_{(u, v) \sim \mathcal N(0, K^l)}[\phi(u)\phi(v)],

    and k(x, x') = K^{\text{depth}+1}(x, x').  σ_w² (``weight_variance``) and σ_b²
    (``bias_variance``) are learnable (raw parameters behind ``Positive`` constraints, shape
    ``(*batch_shape, 1)``), initialised from ``architecture``; the depth, activation and
    parameterization are fixed.  Not stationary, no lengthscale; ``diag=True`` is O(N).

    Args:
        architecture: a ``wideNN.Architecture`` (its variances are the initial values).
        weight_variance_prior: optional ``gpytorch.priors.Prior`` on σ_w².
        bias_variance_prior: optional ``gpytorch.priors.Prior`` on σ_b².
        weight_variance_constraint: constraint of σ_w² (default ``Positive()``).
        bias_variance_constraint: constraint of σ_b² (default ``Positive()``).
        widths: hidden widths (only the standard-parameterization NTK needs them).
        block_size: tile size override for the analytic kernel.
        **kwargs (Any): ``batch_shape``, ``active_dims``, … as for any ``gpytorch.kernels.Kernel``.
    """

    _which = "nngp"


class NTKKernel(_InfiniteWidthKernel):
    r"""The neural tangent kernel of an infinitely wide fully-connected network, as a GPyTorch kernel.

    .. math::
        \Theta^1 = K^1, \qquad
        \Theta^{l+1} = K^{l+1} + \sigma_w^2\, \mathbb{E}_{(u, v) \sim \mathcal N(0, K^l)}[\phi'(u)\phi'(v)]\, \Theta^l,

    and k(x, x') = Θ^{depth+1}(x, x') (NTK parameterization; the standard parameterization
    needs ``widths``).  Arguments and hyperparameters as for ``NNGPKernel``.
    """

    _which = "ntk"
