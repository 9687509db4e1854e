"""The kernel state a layer transforms, and the tensor layouts of per-position covariances.

A state holds the NNGP K and the NTK Θ of the current representation between a batch of
example pairs.  Its leading *batch* dims index the pairs: (n, m) for a kernel matrix between
two sets, (n,) for one kernel value per example (self-covariances, or ``diag=True``).  Its
trailing *position* dims follow one of three layouts (Novak et al. 2019, "Bayesian deep
convolutional networks with many channels are Gaussian processes", §2.2):

- flat: no positions (after ``Flatten``/``GlobalAvgPool``, or for flat inputs);
- diagonal: (S1, …, SD), the covariance of position p of one input with the *same* position p of
  the other, K[p] = E[z_p(x) z_p(x')] — all that convolutions followed by a flatten readout need;
- full: (S1, S1', …, SD, SD'), every position pair, K[p, p'] = E[z_p(x) z_p'(x')], interleaved per
  spatial dimension so a convolution can act on one (S_d, S_d') plane at a time — what pooling needs.

Channels never appear: in the infinite-width limit every channel is an independent copy with
the same covariance, so the state is a per-channel covariance (inputs: x·x' / C per position).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

__all__ = ["KernelState", "positions_diagonal", "input_state"]


@dataclasses.dataclass
class KernelState:
    """NNGP ``nngp`` and NTK ``ntk`` (None: identically zero, before any trainable layer) of a
    batch of example pairs, with ``spatial`` the spatial shape (``()`` when flat) and ``full``
    whether the position layout is full (every position pair) or diagonal.  ``log2_scale`` = E:
    the true kernels are 2^E times the tensors held (inputs whose squares leave the dtype's
    range: ``wideNN.layers._scale``); 0 for every input of ordinary size."""

    nngp: Tensor
    ntk: Tensor | None
    spatial: tuple[int, ...]
    full: bool
    log2_scale: int = 0

    @property
    def batch_dims(self) -> int:
        """The number of leading pair dims."""
        per_dim = 2 if self.full else 1
        return self.nngp.dim() - per_dim * len(self.spatial)

    def map(self, fn: Callable[[Tensor], Tensor], spatial: tuple[int, ...], full: bool | None = None) -> "KernelState":
        """The same linear map applied to K and Θ."""
        ntk = None if self.ntk is None else fn(self.ntk)
        return KernelState(fn(self.nngp), ntk, spatial, self.full if full is None else full,
                           self.log2_scale)

    def diagonalized(self) -> "KernelState":
        """Full → diagonal layout (keep only the coincident position pairs)."""
        if not self.full or not self.spatial:
            return KernelState(self.nngp, self.ntk, self.spatial, False, self.log2_scale)
        return self.map(lambda t: positions_diagonal(t, len(self.spatial)), self.spatial, full=False)


def positions_diagonal(t: Tensor, d: int) -> Tensor:
    """(…, S1, S1', …, SD, SD') → (…, S1, …, SD): the entries with p = p'."""
    for done in range(d):
        # layout (…, remaining pairs, finished diagonals): the first remaining (S, S') pair sits
        # just before them; diagonal() appends its diagonal last, keeping S1, …, SD in order
        first = -(2 * (d - done) + done)
        t = torch.diagonal(t, dim1=first, dim2=first + 1)
    return t


_LETTERS = "abcdefghijkl"


def input_state(x1: Tensor, x2: Tensor | None, spatial_dims: int, full: bool, pairs: str) -> KernelState:
    """The covariance of the inputs themselves, per channel: K[p, p'] = Σ_c x_{c p} x'_{c p'} / C.

    ``x`` is (n, C, *S) (or (n, d) when flat).  ``pairs``: ``"matrix"`` (all pairs, batch (n, m)),
    ``"self"`` (x1 with itself, batch (n,)), ``"zip"`` (x1_i with x2_i, batch (n,)).
    """
    xb = x1 if x2 is None else x2
    c = x1.shape[1]
    if spatial_dims == 0:
        if pairs == "matrix":
            k = x1 @ xb.T / c
        else:
            k = (x1 * xb).sum(-1) / c
        return KernelState(k, None, (), False)
    s1 = _LETTERS[:spatial_dims]
    s2 = s1.upper()
    out_pos = "".join(a + b for a, b in zip(s1, s2)) if full else s1
    right = s2 if full else s1
    batch_in2 = "m" if pairs == "matrix" else "n"
    batch_out = "nm" if pairs == "matrix" else "n"
    k = torch.einsum(f"nz{s1},{batch_in2}z{right}->{batch_out}{out_pos}", x1, xb) / c
    return KernelState(k, None, tuple(x1.shape[2:]), full)
