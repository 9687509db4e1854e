"""Benchmarks for wideNN.training / Ensemble / linearize.

1. Ensemble of S networks (784 → 512 → 512 → 10) trained `steps` full-batch GD steps on N
   points, vmapped, vs a Python loop training S separate networks with wn.train.
2. One training step of wn.linearize(net) vs one step of net itself.

Prints the reference, the candidate and the ratio (best of --repeats).  Defaults are the
issue's sizes; on a small CPU use e.g. --steps 5 (the per-step time is what matters).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import wideNN as wn  # noqa: E402


def _sync(dev: str) -> None:
    if torch.device(dev).type == "cuda":  # also "cuda:1": unsynchronized GPU times are launch times
        torch.cuda.synchronize(dev)


def best_of(fn, repeats: int, dev: str) -> float:
    fn()  # warm-up: CUDA context, cuBLAS handles, allocator pools
    times = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lin-steps", type=int, default=20)
    args = ap.parse_args()
    dev = args.device
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 784, generator=g).to(dev)
    y = torch.randn(args.n, 10, generator=g).to(dev)
    print(f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__}")

    def loop():
        for i in range(args.size):
            net = arch.build(784, args.width, 10, seed=i, device=dev)
            wn.train(net, x, y, steps=args.steps, learning_rate=0.5, progress=False)

    def vmapped():
        ens = wn.Ensemble(arch, args.width, 784, 10, size=args.size, seed=0, device=dev)
        ens.train(x, y, steps=args.steps, learning_rate=0.5, progress=False)

    t_loop = best_of(loop, args.repeats, dev)
    t_ens = best_of(vmapped, args.repeats, dev)
    print(f"ensemble S={args.size} width={args.width} N={args.n} steps={args.steps}: "
          f"loop of separate models {t_loop:.3f} s, Ensemble (vmap) {t_ens:.3f} s, "
          f"speed-up {t_loop / t_ens:.2f}x")

    net = arch.build(784, args.width, 10, seed=0, device=dev)
    lin = wn.linearize(net)
    xs, ys = x[:256], y[:256]
    t_net = best_of(lambda: wn.train(net, xs, ys, steps=args.lin_steps, learning_rate=0.1), args.repeats, dev)
    t_lin = best_of(lambda: wn.train(lin, xs, ys, steps=args.lin_steps, learning_rate=0.1), args.repeats, dev)
    print(f"linearize (784-{args.width}-{args.width}-10, N=256): network step {1e3 * t_net / args.lin_steps:.2f} ms, "
          f"linearized step {1e3 * t_lin / args.lin_steps:.2f} ms, ratio {t_lin / t_net:.2f}x")


if __name__ == "__main__":
    main()
