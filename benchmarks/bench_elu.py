"""ELU dual kernels: the closed form (``wideNN._elu``) against the degree-48 quadrature it
replaced (``Activation._quadrature_dual``, still the generic fallback), per kernel entry,
without and with autograd; then a depth-3 N×N NNGP + NTK through ``analytic.kernels``.

    OMP_NUM_THREADS=1 python benchmarks/bench_elu.py [--entries 200] [--n 2000] [--device cpu]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import wideNN.activations as A  # noqa: E402  (the checkout's copy)
from wideNN import analytic  # noqa: E402

DEVICE = "cpu"


def _grid(n: int):
    g = torch.Generator().manual_seed(0)
    k11 = torch.rand(n, 1, generator=g, dtype=torch.float64) + 0.5
    k22 = torch.rand(1, n, generator=g, dtype=torch.float64) + 0.5
    k12 = (torch.rand(n, n, generator=g, dtype=torch.float64) * 2 - 1) * (k11 * k22).sqrt()
    return k11.to(DEVICE), k12.to(DEVICE), k22.to(DEVICE)


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def per_entry(n: int) -> None:
    act = A.ELU()
    k11, k12, k22 = _grid(n)
    closed = _time(lambda: act.dual(k11, k12, k22))
    quad = _time(lambda: A.Activation._quadrature_dual(act, k11, k12, k22))
    exact = act.dual(k11, k12, k22)
    approx = A.Activation._quadrature_dual(act, k11, k12, k22)
    errs = [float((a - e).abs().max() / e.abs().max()) for a, e in zip(approx, exact)]
    print(f"forward, {n * n} entries: closed form {closed / n / n * 1e6:.1f} µs/entry, quadrature "
          f"{quad / n / n * 1e6:.1f} µs/entry (ratio quadrature/closed {quad / closed:.2f}); "
          f"quadrature error T {errs[0]:.1e}, Ṫ {errs[1]:.1e}")
    leaves = [t.clone().requires_grad_(True) for t in (k11, k12, k22)]

    def backward(fn):
        t, td = fn(*leaves)
        (t.sum() + td.sum()).backward()

    closed = _time(lambda: backward(act.dual))
    quad = _time(lambda: backward(lambda *k: A.Activation._quadrature_dual(act, *k)))
    print(f"forward+backward: closed form {closed / n / n * 1e6:.1f} µs/entry, quadrature "
          f"{quad / n / n * 1e6:.1f} µs/entry (ratio {quad / closed:.2f})")


def mlp(n: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g, dtype=torch.float64).to(DEVICE)
    for label, inputs in (("unequal norms", x), ("equal norms (angle table)", x / x.norm(dim=1, keepdim=True) * math.sqrt(20))):
        sec = _time(lambda: analytic.kernels(inputs, depth=3, activation="elu", weight_variance=1.5, bias_variance=0.1))
        print(f"depth-3 NNGP+NTK, {n}×{n}, {label}: {sec:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200, help="per-entry timing on an N×N grid")
    parser.add_argument("--n", type=int, default=2000, help="N of the MLP kernel (0: skip)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    DEVICE = args.device
    per_entry(args.entries)
    if args.n:
        mlp(args.n)
