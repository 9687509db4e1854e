"""Differential fuzzer for ``wn.posterior`` (not collected by pytest):
``PYTHONPATH=.:tests python tests/_diff_fuzz_predict.py [substring]``.

Reference: the kernel matrices and the whole predictor in 40-digit mpmath (ReLU / erf MLP
kernels from ``_diff_fuzz.mp_mlp``; eigen-decomposition ``mpmath.eigsy``), so exactly duplicated
training inputs give exactly singular kernels whose null directions the test kernels do not see.
Formulas (``wideNN.prediction``): s = ηt/N, M = Θ + σ²I (ntk) or K + σ²I (nngp),
A_t = V diag((1 − e^{−sλ})/λ) Vᵀ, A_∞ = M⁺;  μ = Θ_xX A_t Y (K_xX for nngp),
ntk Σ = K_xx − 2 Θ_xX A_t K_Xx + Θ_xX A_t (K + σ²I) A_t Θ_Xx,
nngp Σ(t) = K_xx − K_xX M⁺(I − e^{−2sM}) K_Xx.

Errors: mean |Δμ| / max|Y|, variance |Δv| / K_xx.  Cases whose training kernel is merely
near-singular (not exactly) are ill-conditioned by nature and are checked only with noise large
enough to bound the condition number.
"""
from __future__ import annotations

import itertools
import sys
import time

import mpmath
import numpy as np
import torch

import wideNN as wn
from _diff_fuzz import mp_mlp

mpmath.mp.dps = 40


def mp_kernels(act, depth, wv, bv, xa, xb):
    k = mpmath.matrix(len(xa), len(xb))
    th = mpmath.matrix(len(xa), len(xb))
    for i, j in itertools.product(range(len(xa)), range(len(xb))):
        a, b = mp_mlp_mp(depth, act, wv, bv, xa[i], xb[j])
        k[i, j], th[i, j] = a, b
    return k, th


def mp_mlp_mp(depth, act, wv, bv, xa, xb):
    """As ``mp_mlp`` but returning mpf (no rounding to float)."""
    from _mp_duals import mp_mlp as reference
    return reference(depth, act, wv, bv, xa, xb)


def mp_weights(m, s, twice=False):
    """V diag(f(λ)) Vᵀ with f = (1 − e^{−sλ})/λ (s = inf: 1/λ; λ ≈ 0 exactly: s or 0)."""
    lam, v = mpmath.eigsy(m)
    n = m.rows
    scale = max(abs(x) for x in lam)
    f = []
    for x in lam:
        if abs(x) <= scale * mpmath.mpf(10) ** -30:  # exactly singular direction
            f.append(mpmath.mpf(0) if s == mpmath.inf else (2 * s if twice else s))
        elif s == mpmath.inf:
            f.append(1 / x)
        else:
            ss = 2 * s if twice else s
            f.append(-mpmath.expm1(-ss * x) / x)
    return v * mpmath.diag(f) * v.T


def reference(c):
    act, depth, wv, bv = c["arch"]
    xs = list(c["xtr"]) + list(c["xte"])
    k, th = mp_kernels(act, depth, wv, bv, xs, xs)
    n = len(c["xtr"])
    sl = lambda a, r, q: a[r[0]:r[1], q[0]:q[1]]
    tr, te = (0, n), (n, len(xs))
    noise = mpmath.mpf(c["noise"])
    y = mpmath.matrix(c["y"].tolist())
    eye = mpmath.eye(n)
    t = mpmath.inf if c["t"] is None or c["t"] == float("inf") else mpmath.mpf(c["t"])
    s = t / n if t != mpmath.inf else t
    K, T = sl(k, tr, tr), sl(th, tr, tr)
    Kx, Tx, Kxx = sl(k, te, tr), sl(th, te, tr), sl(k, te, te)
    if c["kernel"] == "ntk":
        m = T + noise * eye
        a = mp_weights(m, s)
        mean = Tx * a * y
        cov = Kxx - Tx * a * Kx.T - Kx * a * Tx.T + Tx * a * (K + noise * eye) * a * Tx.T
    else:
        m = K + noise * eye
        a = mp_weights(m, s)
        mean = Kx * a * y
        if c["t"] is None:
            cov = Kxx - Kx * a * Kx.T
        else:
            a2 = mp_weights(m, s, twice=True)  # M⁺(I − e^{−2sM})
            cov = Kxx - Kx * a2 * Kx.T
    to = lambda mm: np.array([[float(mm[i, j]) for j in range(mm.cols)] for i in range(mm.rows)])
    return to(mean), np.diag(to(cov)), np.diag(to(Kxx))


def cases(rng):
    out = []
    d = 3
    base = rng.standard_normal((5, d))
    for act, kernel, noise, t, kind in itertools.product(
            ("relu", "erf"), ("ntk", "nngp"), (0.0, 1e-300, 1e-12, 1.0, 1e10),
            (0.0, 1e-8, 1.0, 1e3, 1e14, 1e20, float("inf"), None), ("plain", "dup", "dupsame", "near")):
        if kernel == "ntk" and t is None:
            continue
        if kind == "near" and noise < 1e-6:
            continue  # ill-conditioned by nature
        xtr = base.copy()
        y = rng.standard_normal((5, 2))
        if kind in ("dup", "dupsame"):
            xtr[3] = xtr[1]
            if kind == "dupsame":
                y[3] = y[1]
        elif kind == "near":
            xtr[3] = xtr[1] * (1 + 1e-9)
        xte = np.concatenate([xtr[[1, 2]], rng.standard_normal((2, d))])
        out.append(dict(id=f"{act}/{kernel}/{kind}/noise={noise:g}/t={t}", arch=(act, 2, 1.7, 0.1),
                        xtr=xtr, y=y, xte=xte, noise=noise, t=t, kernel=kernel))
    return out


def run(c):
    act, depth, wv, bv = c["arch"]
    arch = wn.Architecture(depth=depth, activation=act, weight_variance=wv, bias_variance=bv)
    p = wn.posterior(arch, torch.tensor(c["xtr"]), torch.tensor(c["y"]), torch.tensor(c["xte"]),
                     kernel=c["kernel"], t=c["t"], noise_variance=c["noise"])
    return p.mean.numpy(), p.variance.numpy()


def main(sel=""):
    rng = np.random.default_rng(1)
    t0 = time.time()
    bad = 0
    cs = [c for c in cases(rng) if sel in c["id"]]
    for c in cs:
        ref_mean, ref_var, kxx = reference(c)
        try:
            mean, var = run(c)
        except Exception as e:
            print(f"DIFF {c['id']}: raised {type(e).__name__}: {str(e)[:200]}", flush=True)
            bad += 1
            continue
        em = float(np.max(np.abs(mean - ref_mean)) / max(np.abs(c["y"]).max(), 1e-300))
        ev = float(np.max(np.abs(var - ref_var) / kxx))
        tol = 1e-8
        if c["id"].split("/")[2] == "dup":
            if c["kernel"] == "nngp" and c["t"] is None and c["noise"] < 1e-10:
                continue  # no Bayesian posterior exists: the documented escalating jitter decides
            if c["noise"] > 0:  # exactly singular kernel + noise: conditioned as (kernel scale)/noise
                tol = max(tol, 1e-14 * float(kxx.max()) / c["noise"])
        if not (em <= tol and ev <= tol):
            bad += 1
            print(f"DIFF {c['id']}: mean {em:.3g} var {ev:.3g}", flush=True)
    print(f"{len(cs)} cases, {bad} discrepancies, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1] if len(sys.argv) > 1 else "")
