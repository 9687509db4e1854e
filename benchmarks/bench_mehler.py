"""Benchmark: quadrature activations on inputs of unequal norms — Mehler's series against the
per-entry 2-D quadrature it replaced, in the same run.

Depth-3 NNGP + NTK (σ_w² = 1.7, σ_b² = 0.1) of N standard-normal inputs in d = 20 (so every
input has its own variance), float64, without gradients and with the gradient of a scalar of
both kernels in σ_w² (what one marginal-likelihood step of a GPyTorch fit asks).  The reference
is the same activation with ``mehler = False`` (the degree-48 quadrature); it is timed only up
to ``--reference-max`` points (it grows ~N² and takes minutes at N = 500).  Printed: times, the
ratio, and the largest relative difference of the two kernels (the quadrature's own error).

    python benchmarks/bench_mehler.py [--n 100 200 500 1000] [--activations tanh sigmoid]
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from wideNN import activations as _acts  # noqa: E402
from wideNN.analytic import kernels  # noqa: E402


def run(act, x: torch.Tensor, grad: bool) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    w = torch.tensor(1.7, dtype=torch.float64, requires_grad=grad)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(grad):
        k, th = kernels(x, depth=3, activation=act, weight_variance=w, bias_variance=0.1)
        if grad:
            torch.autograd.grad(k.sum() + th.sum(), w)
    return time.perf_counter() - t0, (k.detach(), th.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="+", type=int, default=[100, 200, 500, 1000])
    parser.add_argument("--activations", nargs="+", default=["tanh", "sigmoid"])
    parser.add_argument("--reference-max", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {platform.machine()} {args.device}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {load:.1f}")
    print(f"{'act':>8} {'N':>5} {'grad':>5} | {'series s':>9} {'quadrature s':>13} {'ratio':>7} {'max rel diff':>12}")
    for name in args.activations:
        act = _acts.get(name)
        reference = copy.deepcopy(act)
        reference.mehler = False
        for n in args.n:
            x = torch.randn(n, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(n),
                            device=args.device)
            for grad in (False, True):
                run(act, x[:8], grad)  # warm-up: tables and the compiled library
                t_new, out = run(act, x, grad)
                line = f"{name:>8} {n:>5} {str(grad):>5} | {t_new:9.2f} "
                if n <= args.reference_max:
                    t_ref, ref = run(reference, x, grad)
                    diff = max(float(((a - b).abs() / b.abs().max()).max()) for a, b in zip(out, ref))
                    line += f"{t_ref:13.2f} {t_ref / t_new:7.1f} {diff:12.1e}"
                else:
                    line += f"{'—':>13} {'—':>7} {'—':>12}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
