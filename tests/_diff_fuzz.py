"""Differential fuzzer: wideNN's analytic kernels against neural-tangents' stax on edge-but-valid
inputs (not collected by pytest).  ``PYTHONPATH=.:tests python tests/_diff_fuzz.py [substring]``.

Every case is computed by neural-tangents (in the jax venv, one subprocess for all cases, inputs
and results through .npz files) on the stacked inputs X = [x1; x2], so one NT matrix gives the
self, cross and diagonal references.  wideNN is called on each of ``kernels(x1)``,
``kernels(x1, x2)``, ``kernels(x1, diag=True)``, ``kernels(x1, x2, diag=True)``.

Errors are normalised per entry: |a − b| / √(b(x_i, x_i) · b(x'_j, x'_j)) (convention free: a
kernel entry can only be as accurate as the scale of its two examples).  Closed-form activations
are held to 1e-10 in float64; quadrature activations (NT integrates them with its own
Gauss–Hermite grid of ``deg`` nodes per dim) to 1e-7; float32 to 1e-4 (depth-scaled).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import wideNN as wn

NT_PYTHON = "/work/venv-nt/bin/python"
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_diff_nt_worker.py")
CLOSED = ("relu", "leaky_relu", "abs", "erf", "gelu", "sin", "cos", "identity")
QUAD = ("tanh", "sigmoid", "softplus", "silu", "elu")


@dataclasses.dataclass
class Case:
    id: str
    spec: list
    wv: float
    bv: float
    x1: np.ndarray
    x2: np.ndarray | None
    dtype: torch.dtype = torch.float64
    mlp: tuple | None = None          # (depth, activation): also check wn.Architecture


def to_wn(spec, wv, bv):
    def one(t):
        k = t[0]
        if k == "dense":
            return wn.Dense()
        if k == "conv":
            return wn.Conv(t[1], stride=t[2], padding=t[3])
        if k == "act":
            return t[1]
        if k == "avgpool":
            return wn.AvgPool(t[1], stride=t[2], padding=t[3])
        if k == "gap":
            return wn.GlobalAvgPool()
        if k == "flatten":
            return wn.Flatten()
        if k == "res":
            return wn.Residual(wn.Serial(*[one(u) for u in t[1]]))
        raise KeyError(k)
    return wn.Serial(*[one(t) for t in spec], weight_variance=wv, bias_variance=bv)


def _inputs(rng, shape, n, m, kind):
    """x1 (n, *shape), x2 (m, *shape) of one edge kind."""
    x1 = rng.standard_normal((n, *shape))
    x2 = rng.standard_normal((m, *shape))
    if kind == "coincident":
        x2[: min(n, m) // 2 + 1] = x1[: min(n, m) // 2 + 1]
        x1[-1] = x1[0]
    elif kind == "near":
        x2[: min(n, m)] = x1[: min(n, m)] * (1 + 1e-9 * rng.standard_normal(x1[: min(n, m)].shape))
        x1[-1] = x1[0] + 1e-12
    elif kind == "zero":
        x1[1] = 0.0
        x2[0] = 0.0
    elif kind == "norms":
        s = np.array([1e-6, 1e-3, 1.0, 1e3, 1e6])
        x1 *= s[np.arange(n) % 5].reshape(-1, *[1] * len(shape))
        x2 *= s[(np.arange(m) + 2) % 5].reshape(-1, *[1] * len(shape))
        x2[0] = x1[0] * 1e3
    elif kind == "negated":
        x2[: min(n, m)] = -x1[: min(n, m)]
    return x1, x2


ACT_ALL = CLOSED + QUAD
IMAGE_SPECS = {
    "conv3-gap": lambda a: [("conv", 3, 1, "same"), ("act", a), ("gap",), ("dense",)],
    "convfull-valid": lambda a: [("conv", 4, 1, "valid"), ("act", a), ("flatten",), ("dense",)],
    "stride2-circ-pool": lambda a: [("conv", 3, 2, "same"), ("act", a), ("conv", 2, 1, "circular"), ("act", a),
                                    ("avgpool", 2, 2, "valid"), ("flatten",), ("dense",)],
    # the identity branch must be Gaussian for NT's FanInSum: the residual follows a convolution
    "res": lambda a: [("conv", 3, 1, "same"), ("act", a), ("conv", 3, 1, "same"),
                      ("res", [("act", a), ("conv", 3, 1, "same")]),
                      ("act", a), ("gap",), ("dense",)],
    "stride3-valid": lambda a: [("conv", 2, 3, "valid"), ("act", a), ("flatten",), ("dense",)],
    "pool-same": lambda a: [("conv", 2, 1, "same"), ("act", a), ("avgpool", 3, 2, "same"),
                            ("conv", 3, 1, "circular"), ("act", a), ("flatten",), ("dense",)],
}


def cases(rng):
    out = []
    params = [(2.0, 0.0), (1.5, 0.1), (1e-8, 1.0), (1e3, 0.0), (2.0, 1e3), (2.0, 1e-300), (0.7, 1e-12)]
    kinds = ["random", "coincident", "near", "zero", "norms", "negated"]
    # layered image descriptions
    for sname, sfn in IMAGE_SPECS.items():
        for a in ACT_ALL:
            for kind in kinds:
                # NT's numerical activations on per-position covariances are slow (~10 s a case)
                if a in QUAD and (kind != "random" or sname not in ("conv3-gap", "res")):
                    continue
                wv, bv = params[rng.integers(len(params))]
                if a in QUAD or a in ("sin", "cos", "erf", "gelu"):
                    wv = min(wv, 3.0)  # bounded variance: quadrature and NT's grids stay accurate
                shape = (1, 4, 4) if rng.random() < 0.5 else (2, 5, 4)
                x1, x2 = _inputs(rng, shape, 3, 4, kind)
                out.append(Case(f"img/{sname}/{a}/{kind}/{wv:g},{bv:g}", sfn(a), wv, bv, x1, x2))
    # 1-pixel images and 1-D signals
    for a in ACT_ALL:
        x1, x2 = _inputs(rng, (3, 1, 1), 3, 2, "coincident")
        out.append(Case(f"pixel/{a}", [("conv", 1, 1, "same"), ("act", a), ("conv", 1, 1, "valid"), ("act", a),
                                       ("flatten",), ("dense",)], 1.3, 0.2, x1, x2))
        x1, x2 = _inputs(rng, (1, 7), 3, 3, "random")
        out.append(Case(f"1d/{a}", [("conv", 3, 1, "circular"), ("act", a), ("avgpool", 2, 1, "same"),
                                    ("conv", 2, 2, "valid"), ("act", a), ("gap",), ("dense",)], 2.0, 0.05, x1, x2))
    # MLPs (fast path of Serial and wn.Architecture)
    for a in ACT_ALL:
        for depth in (1, 3, 30):
            for kind in kinds:
                for wv, bv in [params[i] for i in sorted(rng.choice(len(params), 3, replace=False))]:
                    if a in QUAD and (kind in ("near", "norms") or depth == 30 or wv > 3):
                        continue
                    if a in ("sin", "cos", "erf", "gelu") and wv > 3:
                        continue
                    if depth == 30 and wv > 3:
                        continue
                    x1, x2 = _inputs(rng, (5,), 5, 4, kind)
                    spec = [t for _ in range(depth) for t in (("dense",), ("act", a))] + [("dense",)]
                    out.append(Case(f"mlp/{a}/d{depth}/{kind}/{wv:g},{bv:g}", spec, wv, bv, x1, x2,
                                    mlp=(depth, a)))
    # residual MLP and float32 copies of a subset
    for a in ("relu", "erf", "tanh"):
        x1, x2 = _inputs(rng, (4,), 3, 3, "coincident")
        # the residual sum of a Gaussian input (NT refuses a non-Gaussian identity branch)
        out.append(Case(f"resmlp/{a}", [("dense",), ("act", a), ("dense",), ("res", [("act", a), ("dense",)]),
                                        ("act", a), ("dense",)], 1.7, 0.1, x1, x2))
    f32 = [dataclasses.replace(c, id=c.id + "/f32", dtype=torch.float32) for c in out[::7]
           if "/d30/" not in c.id]
    return out + f32


def run_nt(cs, deg=60):
    with tempfile.TemporaryDirectory() as d:
        arrays = {}
        for c in cs:
            arrays[c.id + "/x1"] = c.x1
            if c.x2 is not None:
                arrays[c.id + "/x2"] = c.x2
        meta = [dict(id=c.id, spec=c.spec, wv=c.wv, bv=c.bv, deg=deg) for c in cs]
        json.dump(meta, open(os.path.join(d, "c.json"), "w"))
        np.savez(os.path.join(d, "in.npz"), **arrays)
        # NT on the stacked inputs [x1; x2]: every reference from one matrix
        stacked = {k: v for k, v in arrays.items()}
        for c in cs:
            stacked[c.id + "/x1"] = np.concatenate([c.x1, c.x2]) if c.x2 is not None else c.x1
            stacked.pop(c.id + "/x2", None)
        np.savez(os.path.join(d, "in.npz"), **stacked)
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
        subprocess.run([NT_PYTHON, WORKER, os.path.join(d, "c.json"), os.path.join(d, "in.npz"),
                        os.path.join(d, "out.npz")], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=sys.stderr if os.environ.get("DIFF_FUZZ_PROGRESS") else subprocess.DEVNULL)
        res = np.load(os.path.join(d, "out.npz"))
        return {k: res[k] for k in res.files}


def _nerr(a, b, d1, d2):
    scale = np.outer(np.sqrt(np.abs(d1)), np.sqrt(np.abs(d2)))  # no underflow of d1·d2 ~ 1e-600
    scale = np.maximum(scale, 1e-300)
    return np.abs(a - b) / scale


def tolerance(c):
    acts = {t[1] for t in _flat(c.spec) if t[0] == "act"}
    tol = 1e-7 if acts & set(QUAD) else 1e-10
    if c.dtype == torch.float32:
        tol = 3e-5 * max(1, sum(t[0] in ("dense", "conv") for t in _flat(c.spec)))
    return tol


def _flat(spec):
    for t in spec:
        if t[0] == "res":
            yield from _flat(t[1])
        yield t


def compare(c, ref):
    """[(what, max normalised error)] over the four calls (and wn.Architecture for MLPs)."""
    if c.id + "/error" in ref:
        return [("NT-error", str(ref[c.id + "/error"]))]
    n = c.x1.shape[0]
    res = []
    for kname in ("nngp", "ntk"):
        big = ref[f"{c.id}/{kname}"]
        d = np.diag(big)
        s, x, dd1 = big[:n, :n], big[:n, n:], d[:n]
        dd2 = d[n:]
        desc = to_wn(c.spec, c.wv, c.bv)
        t1 = torch.tensor(c.x1, dtype=c.dtype)
        t2 = torch.tensor(c.x2, dtype=c.dtype)
        m = min(n, c.x2.shape[0])
        calls = {"self": (lambda: getattr(desc, kname)(t1), s, dd1, dd1),
                 "cross": (lambda: getattr(desc, kname)(t1, t2), x, dd1, dd2),
                 "diag": (lambda: getattr(desc, kname)(t1, diag=True), np.diag(s), None, None),
                 "xdiag": (lambda: getattr(desc, kname)(t1[:m], t2[:m], diag=True), np.diag(x)[:m],
                           dd1[:m], dd2[:m])}
        if c.mlp is not None:
            arch = wn.Architecture(depth=c.mlp[0], activation=c.mlp[1], weight_variance=c.wv,
                                   bias_variance=c.bv)
            calls["arch-self"] = (lambda: getattr(arch, kname)(t1), s, dd1, dd1)
            calls["arch-cross"] = (lambda: getattr(arch, kname)(t1, t2), x, dd1, dd2)
            calls["arch-xdiag"] = (lambda: getattr(arch, kname)(t1[:m], t2[:m], diag=True), np.diag(x)[:m],
                                   dd1[:m], dd2[:m])
        for what, (fn, b, d1, d2) in calls.items():
            try:
                a = fn().detach().double().numpy()
            except Exception as e:  # a refusal of valid input is a finding too
                res.append((f"{kname}/{what}", f"raised {type(e).__name__}: {str(e)[:160]}"))
                continue
            if a.shape != b.shape:
                res.append((f"{kname}/{what}", f"shape {a.shape} vs {b.shape}"))
                continue
            if d1 is None:
                err = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
            elif a.ndim == 1:
                err = np.abs(a - b) / np.maximum(np.sqrt(np.abs(d1)) * np.sqrt(np.abs(d2)), 1e-300)
            else:
                err = _nerr(a, b, d1, d2)
            err = np.where(np.isnan(a) != np.isnan(b), np.inf, np.nan_to_num(err, nan=0.0))
            res.append((f"{kname}/{what}", float(err.max()) if err.size else 0.0))
    return res


def main(sel=""):
    rng = np.random.default_rng(0)
    cs = [c for c in cases(rng) if sel in c.id]
    t0 = time.time()
    ref = run_nt(cs)
    print(f"{len(cs)} cases; NT {time.time() - t0:.1f} s", flush=True)
    bad = 0
    for c in cs:
        tol = tolerance(c)
        for what, e in compare(c, ref):
            if isinstance(e, str) or not (e <= tol):
                bad += 1
                print(f"DIFF {c.id} {what}: {e if isinstance(e, str) else f'{e:.3g}'} (tol {tol:g})", flush=True)
    print(f"{bad} discrepancies; total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1] if len(sys.argv) > 1 else "")


def mp_mlp(depth, act, wv, bv, xa, xb, dps=50):
    """(nngp, ntk) of the MLP at one pair, 50-digit mpmath (closed-form activations)."""
    import mpmath
    from _mp_duals import mp_mlp as reference
    with mpmath.workdps(dps):
        k12, th = reference(depth, act, wv, bv, xa, xb)
        return float(k12), float(th)


def adjudicate(c, ref, kname="ntk"):
    """For an MLP case: max normalised error of wideNN and of NT against 50-digit mpmath (cross)."""
    depth, act = c.mlp
    n = c.x1.shape[0]
    big = ref[f"{c.id}/{kname}"]
    d = np.diag(big)
    desc = to_wn(c.spec, c.wv, c.bv)
    ours = getattr(desc, kname)(torch.tensor(c.x1), torch.tensor(c.x2)).numpy()
    e_ours = e_nt = 0.0
    for i in range(n):
        for j in range(c.x2.shape[0]):
            ex = mp_mlp(depth, act, c.wv, c.bv, c.x1[i], c.x2[j])[kname == "ntk"]
            s = np.sqrt(abs(d[i])) * np.sqrt(abs(d[n + j])) or 1e-300
            e_ours = max(e_ours, abs(ours[i, j] - ex) / s)
            e_nt = max(e_nt, abs(big[i, n + j] - ex) / s)
    return e_ours, e_nt
