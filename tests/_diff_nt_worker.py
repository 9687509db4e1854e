"""neural-tangents side of the differential fuzzer (tests/_diff_fuzz.py); runs in the jax venv:
``python _diff_nt_worker.py cases.json inputs.npz out.npz``.

Each case: ``spec`` (a nested list of layer tuples, see ``_diff_fuzz.py``), weight/bias variance,
inputs x1 (and x2) in NCHW / (N, C, L) / (N, D) layout.  Writes ``<id>/nngp`` and ``<id>/ntk``
(full N×M matrices) or ``<id>/error`` (the exception text) for every case, float64.
"""
import json
import math
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

_NUMERICAL = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
}


def activation(name, deg):
    if name == "relu":
        return stax.Relu()
    if name == "leaky_relu":
        return stax.LeakyRelu(0.01)
    if name == "abs":
        return stax.Abs()
    if name == "erf":
        return stax.Erf()
    if name == "gelu":
        return stax.Gelu(approximate=False)
    if name == "sin":
        return stax.Sin()
    if name == "cos":
        return stax.Cos()
    if name == "identity":
        return stax.Identity()
    if name in _NUMERICAL:
        return stax.ElementwiseNumerical(_NUMERICAL[name], deg=deg)
    raise KeyError(name)


def layer(t, wv, bv, deg, nd):
    kind = t[0]
    ws, bs = math.sqrt(wv), (math.sqrt(bv) if bv > 0 else None)
    if kind == "dense":
        return stax.Dense(1, W_std=ws, b_std=bs)
    if kind == "conv":
        _, k, s, pad = t
        k = (1, k) if nd == 1 else (k, k)
        s = (1, s) if nd == 1 else (s, s)
        return stax.Conv(1, k, s, pad.upper(), W_std=ws, b_std=bs)
    if kind == "act":
        return activation(t[1], deg)
    if kind == "avgpool":
        _, k, s, pad = t
        k = (1, k) if nd == 1 else (k, k)
        s = (1, s) if nd == 1 else (s, s)
        return stax.AvgPool(k, s, pad.upper())
    if kind == "gap":
        return stax.GlobalAvgPool()
    if kind == "flatten":
        return stax.Flatten()
    if kind == "res":
        inner = stax.serial(*[layer(u, wv, bv, deg, nd) for u in t[1]])
        return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), inner), stax.FanInSum())
    raise KeyError(kind)


def to_nt(x):
    """NCHW → NHWC; (N, C, L) → (N, 1, L, C); flat unchanged."""
    if x.ndim == 4:
        return np.transpose(x, (0, 2, 3, 1))
    if x.ndim == 3:
        return np.transpose(x, (0, 2, 1))[:, None]
    return x


def main(cases_path, inputs_path, out_path):
    cases = json.load(open(cases_path))
    arrays = np.load(inputs_path)
    out = {}
    for i, c in enumerate(cases):
        cid = c["id"]
        if i % 25 == 0:
            print(f"NT {i}/{len(cases)}", file=sys.stderr, flush=True)
        try:
            x1 = arrays[cid + "/x1"].astype(np.float64)
            x2 = arrays[cid + "/x2"].astype(np.float64) if cid + "/x2" in arrays else None
            nd = x1.ndim - 2
            layers = [layer(t, c["wv"], c["bv"], c.get("deg", 100), nd) for t in c["spec"]]
            _, _, kernel_fn = stax.serial(*layers)
            k = kernel_fn(to_nt(x1), None if x2 is None else to_nt(x2), ("nngp", "ntk"))
            out[cid + "/nngp"] = np.asarray(k.nngp, np.float64)
            out[cid + "/ntk"] = np.asarray(k.ntk, np.float64)
        except Exception as e:  # recorded, compared as "NT failed"
            out[cid + "/error"] = np.array(f"{type(e).__name__}: {e}"[:400])
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
