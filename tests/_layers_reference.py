"""Independent references for the layered kernels (used by tests/test_layers_*.py).

``dense_reference``: every example pair's position×position covariance as a dense matrix over
flattened positions; a convolution tap or pooling window is a 0/1 selection matrix S built
position by position here (op(K) = (1/k) Σ_taps S K Sᵀ for a convolution, A K Aᵀ with
A = (1/k) Σ S for a pooling window), padding amounts written out from the stax rule.  It reads
only the public attributes of the description, and shares no code with ``wideNN.layers``.

``monte_carlo_outputs``: the outputs of many random finite networks built by ``.build``,
vectorised over seeds with ``torch.func.stack_module_state`` + ``vmap(functional_call)``.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch.func import functional_call, stack_module_state

import wideNN as wn
from wideNN import activations as acts


def _pads(n, k, s, padding):
    if padding == "valid":
        return (n - k) // s + 1, 0
    out = -(-n // s)
    return out, max((out - 1) * s + k - n, 0) // 2


def _tuple(v, d):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def _selections(spatial, kernel, stride, padding):
    """[(S_tap (P_out × P_in))], the output spatial shape."""
    d = len(spatial)
    k, s = _tuple(kernel, d), _tuple(stride, d)
    outs, los = zip(*[_pads(n, kk, ss, padding) for n, kk, ss in zip(spatial, k, s)])
    p_in, p_out = math.prod(spatial), math.prod(outs)
    mats = []
    for tap in itertools.product(*[range(kk) for kk in k]):
        m = torch.zeros(p_out, p_in, dtype=torch.float64)
        for o_idx, o in enumerate(itertools.product(*[range(n) for n in outs])):
            q = [oo * ss + t - lo for oo, ss, t, lo in zip(o, s, tap, los)]
            if padding == "circular":
                q = [qq % n for qq, n in zip(q, spatial)]
            elif any(qq < 0 or qq >= n for qq, n in zip(q, spatial)):
                continue
            flat = 0
            for qq, n in zip(q, spatial):
                flat = flat * n + qq
            m[o_idx, flat] = 1.0
        mats.append(m)
    return mats, tuple(outs)


def _dual(act, k):
    """Pairwise duals of a (N, N, P, P) covariance with per-example variances diag(K[a, a])."""
    n = k.shape[0]
    var = torch.stack([torch.diagonal(k[a, a]) for a in range(n)])          # (N, P)
    k11 = var[:, None, :, None]
    k22 = var[None, :, None, :]
    return act.dual(k11.expand_as(k), k, k22.expand_as(k))


def dense_reference(description, x, defaults=(2.0, 0.0, "ntk")):
    """(nngp, ntk), each (N, N), of ``description`` on x (N, C, *S) or (N, C), float64."""
    n = x.shape[0]
    spatial = tuple(x.shape[2:])
    flat = x.reshape(n, x.shape[1], -1)                                        # (N, C, P)
    k = torch.einsum("acp,bcq->abpq", flat, flat) / x.shape[1]
    state = [k, torch.zeros_like(k), spatial]
    _walk(description, state, defaults)
    k, th, spatial = state
    assert k.shape[-1] == 1, "reference handles flat outputs only"
    return k[..., 0, 0], th[..., 0, 0]


def _walk(layer, state, defaults):
    w0, b0, p0 = defaults
    if isinstance(layer, wn.Serial):
        d = (layer.weight_variance if layer.weight_variance is not None else w0,
             layer.bias_variance if layer.bias_variance is not None else b0,
             layer.parameterization or p0)
        for child in layer.layers:
            _walk(child, state, d)
        return
    k, th, spatial = state
    if isinstance(layer, wn.layers.ActivationLayer):
        t, td = _dual(layer.activation, k)
        state[:] = [t, td * th, spatial]
    elif isinstance(layer, (wn.Dense, wn.Conv)):
        w = layer.weight_variance if layer.weight_variance is not None else w0
        b = layer.bias_variance if layer.bias_variance is not None else b0
        if isinstance(layer, wn.Conv):
            mats, spatial = _selections(spatial, layer.kernel_size, layer.stride, layer.padding)
            op = lambda t: sum(m @ t @ m.T for m in mats) / len(mats)
        else:
            op = lambda t: t
        kk = b + w * op(k)
        state[:] = [kk, kk + w * op(th), spatial]
    elif isinstance(layer, wn.AvgPool):
        stride = layer.kernel_size if layer.stride is None else layer.stride
        mats, spatial = _selections(spatial, layer.kernel_size, stride, layer.padding)
        a = sum(mats) / len(mats)
        state[:] = [a @ k @ a.T, a @ th @ a.T, spatial]
    elif isinstance(layer, wn.GlobalAvgPool):
        a = torch.full((1, k.shape[-1]), 1.0 / k.shape[-1], dtype=k.dtype)
        state[:] = [a @ k @ a.T, a @ th @ a.T, ()]
    elif isinstance(layer, wn.Flatten):
        mean_diag = lambda t: torch.diagonal(t, dim1=-2, dim2=-1).mean(-1)[..., None, None]
        state[:] = [mean_diag(k), mean_diag(th), ()]
    elif isinstance(layer, wn.Residual):
        inner = [k, th, spatial]
        _walk(layer.block, inner, defaults)
        state[:] = [k + inner[0], th + inner[1], spatial]
    else:
        raise TypeError(layer)


def monte_carlo_outputs(description, x, *, width, out_features, nets, seed0=0, dtype=torch.float64):
    """Outputs (nets, N, out_features) of ``nets`` random networks (seeds seed0, seed0+1, …),
    evaluated with one vmapped call over their stacked parameters."""
    models = [description.build(tuple(x.shape[1:]), width=width, out_features=out_features,
                                seed=seed0 + s, dtype=dtype) for s in range(nets)]
    params, buffers = stack_module_state(models)
    base = models[0]

    def f(p, b):
        return functional_call(base, (p, b), (x.to(dtype),))

    with torch.no_grad():
        return torch.vmap(f)(params, buffers)


def mc_nngp(description, x, *, width, out_features, nets, seed0=0, dtype=torch.float32):
    """The Monte Carlo NNGP estimate (N, N) and its standard error (N, N).

    Per network, the mean over its outputs of f_o(x) f_o(x') is one sample (outputs share the
    network's hidden features, so they are not independent; networks are); the estimate is the
    mean over networks and the standard error their standard deviation / √nets.  The networks
    run in float32 by default (rounding ~1e-7, far below the sampling error; half the memory).
    """
    f = monte_carlo_outputs(description, x, width=width, out_features=out_features, nets=nets, seed0=seed0,
                            dtype=dtype).double()
    per_net = torch.einsum("sno,smo->snm", f, f) / f.shape[-1]
    return per_net.mean(0), per_net.std(0) / math.sqrt(nets)
