"""Differential check of ``wn.empirical_ntk`` against neural-tangents' ``empirical_ntk_fn`` on
small networks with the *same* parameters (not collected by pytest):
``PYTHONPATH=.:tests python tests/_diff_fuzz_empirical.py``.

NT initialises a stax network (float64) and returns its parameters and its full empirical NTK
(trace_axes=(), N×M×O×O); the parameters are copied into the network that wideNN builds from the
same description (Dense: W (in, out) → weight (out, in); Conv: HWIO → OIHW; a Dense after
Flatten: NT flattens H, W, C, torch C, H, W), and ``wn.empirical_ntk(mode="full")`` is compared.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import wideNN as wn

NT_PYTHON = "/work/venv-nt/bin/python"

WORKER = r'''
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
import neural_tangents as nt
specs = {
  "mlp": lambda: stax.serial(stax.Dense(5, W_std=2**.5, b_std=.1**.5), stax.Relu(), stax.Dense(5, W_std=1.3**.5, b_std=.2**.5),
                             stax.Erf(), stax.Dense(3, W_std=2**.5, b_std=.1**.5)),
  "conv-gap": lambda: stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=2**.5, b_std=.1**.5), stax.Relu(),
                                  stax.GlobalAvgPool(), stax.Dense(2, W_std=2**.5, b_std=.1**.5)),
  "conv-flat": lambda: stax.serial(stax.Conv(3, (2, 2), (2, 2), padding="VALID", W_std=2**.5, b_std=.1**.5), stax.Relu(),
                                   stax.Flatten(), stax.Dense(2, W_std=2**.5, b_std=.1**.5)),
}
d = np.load(sys.argv[1])
out = {}
for name, mk in specs.items():
    x = d[name + "/x"]
    init_fn, apply_fn, _ = mk()
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    flat = jax.tree_util.tree_leaves(params)
    for i, p in enumerate(flat):
        out[f"{name}/p{i}"] = np.asarray(p)
    k = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)(x, None, params)
    out[name + "/ntk"] = np.asarray(k)
np.savez(sys.argv[2], **out)
'''


def descriptions():
    return {
        "mlp": (wn.Serial(wn.Dense(weight_variance=2.0, bias_variance=0.1), "relu",
                          wn.Dense(weight_variance=1.3, bias_variance=0.2), "erf",
                          wn.Dense(weight_variance=2.0, bias_variance=0.1)), 5, 3),
        "conv-gap": (wn.Serial(wn.Conv(3, padding="same"), "relu", wn.GlobalAvgPool(), wn.Dense(),
                               weight_variance=2.0, bias_variance=0.1), 4, 2),
        "conv-flat": (wn.Serial(wn.Conv(2, stride=2, padding="valid"), "relu", wn.Flatten(), wn.Dense(),
                                weight_variance=2.0, bias_variance=0.1), 3, 2),
    }


def inputs(rng):
    """NCHW (torch) inputs with edge rows: zero, duplicated, norms 1e-6 … 1e6, negated."""
    xs = {}
    mlp = rng.standard_normal((6, 4))
    mlp[1] = 0.0
    mlp[2] = mlp[0]
    mlp[3] *= 1e-6
    mlp[4] *= 1e6
    mlp[5] = -mlp[0]
    xs["mlp"] = mlp
    img = rng.standard_normal((5, 2, 4, 4))
    img[1] = 0.0
    img[2] = img[0]
    img[3] *= 1e-5
    img[4] *= 1e5
    xs["conv-gap"] = img
    xs["conv-flat"] = img[:, :, :4, :4].copy()
    return xs


def load_params(net, name, ref, x_shape):
    """Copy NT's leaves (W, b per linear layer, in order) into the torch network."""
    leaves = []
    i = 0
    while f"{name}/p{i}" in ref:
        leaves.append(ref[f"{name}/p{i}"])
        i += 1
    linear = [m for m in net.modules() if hasattr(m, "weight") and isinstance(m.weight, torch.nn.Parameter)]
    assert len(linear) * 2 == len(leaves), (len(linear), len(leaves))
    with torch.no_grad():
        for m, (w, b) in zip(linear, zip(leaves[::2], leaves[1::2])):
            if w.ndim == 4:                                    # HWIO → OIHW
                w = np.transpose(w, (3, 2, 0, 1))
            else:
                w = w.T                                        # (in, out) → (out, in)
                if m.weight.shape[1] != w.shape[1]:
                    raise AssertionError("shape")
                if name == "conv-flat":                        # flatten order H, W, C → C, H, W
                    c = linear[0].weight.shape[0]
                    hw = w.shape[1] // c
                    h = int(round(hw ** 0.5))
                    w = w.reshape(w.shape[0], h, h, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
            m.weight.copy_(torch.tensor(w))
            m.bias.copy_(torch.tensor(b).reshape(m.bias.shape))


def main():
    rng = np.random.default_rng(0)
    xs = inputs(rng)
    with tempfile.TemporaryDirectory() as d:
        arrays = {k + "/x": (np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v) for k, v in xs.items()}
        np.savez(os.path.join(d, "in.npz"), **arrays)
        open(os.path.join(d, "w.py"), "w").write(WORKER)
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([NT_PYTHON, os.path.join(d, "w.py"), os.path.join(d, "in.npz"), os.path.join(d, "out.npz")],
                       check=True, env=env, capture_output=True)
        ref = dict(np.load(os.path.join(d, "out.npz")))
    bad = 0
    for name, (desc, width, out) in descriptions().items():
        x = torch.tensor(xs[name])
        net = desc.build(tuple(x.shape[1:]), width=width, out_features=out, seed=0, dtype=torch.float64)
        load_params(net, name, ref, x.shape)
        want = ref[name + "/ntk"]
        for method in ("auto", "jacobian", "ntk_vp", "structured") if name == "mlp" else ("auto", "jacobian", "ntk_vp"):
            try:
                got = wn.empirical_ntk(net, x, mode="full", method=method).detach().numpy()
            except Exception as e:
                print(f"DIFF {name}/{method}: raised {type(e).__name__}: {str(e)[:200]}")
                bad += 1
                continue
            dg = np.einsum("nnoo->no", want).mean(-1)
            scale = np.sqrt(np.maximum(np.outer(dg, dg), 1e-300))[:, :, None, None]
            err = float(np.max(np.abs(got - want) / scale))
            print(f"{name}/{method}: max normalised error {err:.3g}")
            if not err <= 1e-12:
                bad += 1
    print(f"{bad} discrepancies")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.1f} s")
