"""``Architecture``: one description of a fully-connected network that yields the finite
network, its analytic NNGP and NTK, and (via ``wideNN.NNGPKernel``/``NTKKernel``) GPyTorch
kernels."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from . import activations as _acts
from ._checks import check_device, check_float_dtype, check_int, check_variance, check_widths
from .analytic import _check_depth, kernels as _kernels
from .networks import Network

__all__ = ["Architecture"]


@dataclasses.dataclass(frozen=True, eq=False)
class Architecture:
    """A fully-connected architecture: ``depth`` hidden layers with activation φ.

    Args:
        depth: number of hidden layers (0 is a linear readout).
        activation: a name (``"relu"``, ``"erf"``, …; see ``wideNN.activations``) or an
            ``Activation`` object such as ``wn.activations.LeakyReLU(0.1)``.
        weight_variance: σ_w² ≥ 0 (a float, or a tensor to differentiate kernels through).
        bias_variance: σ_b² ≥ 0.
        parameterization: ``"ntk"`` (z = √(σ_w²/n) W x + σ_b b with W, b ~ N(0, 1)) or
            ``"standard"`` (W ~ N(0, σ_w²/n), b ~ N(0, σ_b²)).

    Kernels follow the recursion in ``wideNN.analytic``:
    K¹ = σ_b² + σ_w² x·x'/d, K^{l+1} = σ_b² + σ_w² E[φ(u)φ(v)], Θ^{l+1} = K^{l+1} + σ_w² E[φ'(u)φ'(v)] Θ^l.
    """

    depth: int
    activation: str | _acts.Activation = "relu"
    weight_variance: float | Tensor = 2.0
    bias_variance: float | Tensor = 0.0
    parameterization: str = "ntk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", _check_depth(self.depth))
        check_variance("weight_variance", self.weight_variance)
        check_variance("bias_variance", self.bias_variance)
        if self.parameterization not in ("ntk", "standard"):
            raise ValueError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")
        object.__setattr__(self, "_phi", _acts.get(self.activation))

    # -- identity --------------------------------------------------------------------
    @property
    def phi(self) -> _acts.Activation:
        """The resolved activation module."""
        return self._phi  # type: ignore[attr-defined]

    def replace(self, **changes) -> "Architecture":
        """A copy with some fields changed (e.g. fitted variances)."""
        return dataclasses.replace(self, **changes)

    def _key(self):
        def num(v):
            return float(v) if not isinstance(v, Tensor) or v.numel() == 1 else tuple(v.tolist())
        act = self.activation if isinstance(self.activation, str) else repr(self.activation)
        return (self.depth, act, num(self.weight_variance), num(self.bias_variance), self.parameterization)

    def __eq__(self, other) -> bool:
        return isinstance(other, Architecture) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        def fmt(v):
            return f"{float(v):g}" if not isinstance(v, Tensor) or v.numel() == 1 else repr(v)
        act = self.activation if isinstance(self.activation, str) else repr(self.activation)
        return (f"Architecture(depth={self.depth}, activation={act!r}, "
                f"weight_variance={fmt(self.weight_variance)}, bias_variance={fmt(self.bias_variance)}, "
                f"parameterization={self.parameterization!r})")

    def serial(self):
        """The equivalent composition ``wn.Serial(Dense(), φ, …, φ, Dense())`` (``depth``
        activations) with this description's variances and parameterization; its kernels are
        computed by the same code and equal this description's exactly."""
        from .layers import Dense, Serial
        layers = [Dense()]
        for _ in range(self.depth):
            layers += [self.phi, Dense()]
        return Serial(*layers, weight_variance=self.weight_variance, bias_variance=self.bias_variance,
                      parameterization=self.parameterization)

    @property
    def name(self) -> str:
        """The label of Lee et al. 2018 ("Deep Neural Networks as Gaussian Processes", Table 2): ``GP-depth-σ_w²-σ_b²``."""
        return f"GP-{self.depth}-{float(self.weight_variance):.2f}-{float(self.bias_variance):.2f}"

    # -- finite network ----------------------------------------------------------------
    def build(self, in_features: int, width: int | Sequence[int], out_features: int, *,
              seed: int | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> Network:
        """A finite network (``wideNN.networks.Network``, an ``nn.Sequential``).

        ``width`` is one int for every hidden layer or a list of ``depth`` widths.  The same
        ``seed`` gives the same parameters on every dtype and device.
        """
        for name in ("weight_variance", "bias_variance"):
            v = getattr(self, name)
            if isinstance(v, Tensor) and v.numel() != 1:
                raise ValueError(f"build() needs a scalar {name} (a finite network has one), got "
                                 f"shape {tuple(v.shape)}")
        widths = check_widths("width", width, self.depth)
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            check_int(name, v)
        check_float_dtype(dtype)
        check_device("device", device)
        return Network(self, in_features, widths, out_features, seed=seed, dtype=dtype, device=device)

    # -- analytic kernels ----------------------------------------------------------------
    def kernels(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
                widths: Sequence[int] | int | None = None,
                block_size: int | None = None, compile: bool = False) -> tuple[Tensor, Tensor]:
        """``(nngp, ntk)`` = (K^{depth+1}, Θ^{depth+1}) between x1 (…, N, d) and x2 (…, M, d).

        K¹(x, x') = σ_b² + σ_w² x·x'/d,   Θ¹ = K¹,
        K^{l+1} = σ_b² + σ_w² E[φ(u)φ(v)],   Θ^{l+1} = K^{l+1} + σ_w² E[φ'(u)φ'(v)] Θ^l,

        with (u, v) ~ N(0, [[K^l(x, x), K^l(x, x')], [K^l(x, x'), K^l(x', x')]]); the output
        kernels are K^{depth+1} and Θ^{depth+1} (NTK parameterization).

        x2=None: x1 with itself.  ``diag=True``: only the diagonal, shape (…, N), in O(N) memory.  ``widths`` (hidden
        widths) is required for the NTK in the standard parameterization.  ``block_size``
        overrides the automatic tiling; ``compile=True`` fuses the ReLU fast path with
        ``torch.compile`` (see ``wideNN.analytic.kernels``).
        """
        return _kernels(x1, x2, depth=self.depth, activation=self.phi,
                        weight_variance=self.weight_variance, bias_variance=self.bias_variance,
                        parameterization=self.parameterization, widths=widths, diag=diag,
                        block_size=block_size, compile=compile)

    def nngp(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
             block_size: int | None = None, compile: bool = False) -> Tensor:
        """The NNGP kernel K^{depth+1}(x1, x2), without the NTK (options as in ``kernels``).

        K¹(x, x') = σ_b² + σ_w² x·x'/d,  K^{l+1} = σ_b² + σ_w² E_{(u,v)~N(0, K^l)}[φ(u)φ(v)].
        """
        return _kernels(x1, x2, depth=self.depth, activation=self.phi,
                        weight_variance=self.weight_variance, bias_variance=self.bias_variance,
                        parameterization=self.parameterization, diag=diag, compute_ntk=False,
                        block_size=block_size, compile=compile)[0]

    def ntk(self, x1: Tensor, x2: Tensor | None = None, *, diag: bool = False,
            widths: Sequence[int] | int | None = None, block_size: int | None = None,
            compile: bool = False) -> Tensor:
        """The NTK Θ^{depth+1}(x1, x2), without storing the NNGP (options as in ``kernels``).

        Θ¹ = K¹,  Θ^{l+1} = K^{l+1} + σ_w² E_{(u,v)~N(0, K^l)}[φ'(u)φ'(v)] Θ^l  (NTK
        parameterization; the standard one needs ``widths``).
        """
        return _kernels(x1, x2, depth=self.depth, activation=self.phi,
                        weight_variance=self.weight_variance, bias_variance=self.bias_variance,
                        parameterization=self.parameterization, widths=widths, diag=diag,
                        block_size=block_size, compile=compile, compute_nngp=False)[1]
