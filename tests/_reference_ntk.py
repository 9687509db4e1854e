"""An independent empirical NTK for tests: column by column with one VJP and one JVP.

Deliberately unlike every method of ``wideNN.empirical`` (no Jacobian, no vmap, no layer
structure), so agreement with it is evidence rather than a restatement.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp


def reference_ntk(model: nn.Module, x: Tensor, mode: str = "trace", x2: Tensor | None = None) -> Tensor:
    """Empirical NTK Θ̂ = J Jᵀ of ``model`` on x, column by column: Θ̂ e_k = J (Jᵀ e_k) with one
    VJP and one JVP each, so memory stays O(#params) (never the N·O × P Jacobian).

    Returns "full" (N, N, O, O), "diagonal" (N, N, O) or "trace" (N, N, mean over outputs);
    with ``x2`` (M, …) the cross block (N, M, …), taken from the kernel of both sets together.
    """
    if x2 is not None:
        n = x.shape[0]
        return reference_ntk(model, torch.cat([x, x2]), mode)[:n, n:]
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p):
        return functional_call(model, p, (x,))

    with torch.enable_grad():
        out, pull = vjp(f, params)
        shape = out.shape
        out = out.reshape(out.shape[0], -1)
        n, o = out.shape
        cols = []
        for k in range(n * o):
            e = torch.zeros(n * o, dtype=out.dtype, device=out.device)
            e[k] = 1.0
            (jt,) = pull(e.reshape(shape))
            cols.append(jvp(f, (params,), (jt,))[1].detach().reshape(n * o))
    full = torch.stack(cols, dim=1).reshape(n, o, n, o).permute(0, 2, 1, 3)
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    if mode == "diagonal":
        return diag
    if mode == "trace":
        return diag.mean(-1)
    raise ValueError(f"mode must be 'trace', 'diagonal' or 'full', got {mode!r}")


def flat_jacobian(net: nn.Module, x: Tensor):
    """(f, θ₀): the network's outputs on x, flattened, as a function of one flat parameter
    vector, and that vector now, so that ``jacrev(f)(θ₀)`` is the (N·O, P) Jacobian."""
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(flat):
        parts, i = {}, 0
        for k, s in zip(names, shapes):
            parts[k] = flat[i:i + s.numel()].reshape(s)
            i += s.numel()
        return functional_call(net, parts, (x,)).reshape(-1)

    return f, theta0
