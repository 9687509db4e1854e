"""Benchmark: does ``empirical_ntk(method="auto")`` pick the faster of ``jacobian`` and
``ntk_vp`` for models that are not MLPs?

For each case (a small CNN, a LayerNorm MLP that the structured path does not parse, with
O = 1, 10, 32, 100 outputs, in full and trace mode) both methods are timed (best of
``--repeats`` after one warm-up), then ``auto`` is run once with its cost model recorded.
Printed per case: both times, the measured ratio ntk_vp/jacobian next to the cost model's,
auto's pick, and the pick's time over the best time (1.00 = auto picked the faster one).

On a shared CPU the default is one thread: with two threads and other jobs on the cores,
timings are dominated by threads waiting for each other and vary several-fold.

    python benchmarks/bench_auto_method.py                  # CPU, 1 thread
    python benchmarks/bench_auto_method.py --threads 2 --repeats 5
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import wideNN as wn  # noqa: E402
from wideNN import empirical as emp  # noqa: E402


def cnn(side: int, o: int) -> nn.Module:
    """Conv2d 3→16→16 (3×3, same padding, ReLU) on side×side images, flatten, Linear → O."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * side * side, o))


def ln_mlp(d: int, width: int, o: int) -> nn.Module:
    """Linear → LayerNorm → ReLU → Linear: dense, but not parsed by the structured path."""
    return nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, o))


# (name, model factory, per-example input shape, N = M, modes)
CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], int, tuple[str, ...]]] = [
    ("cnn 8x8, O=10", lambda: cnn(8, 10), (3, 8, 8), 32, ("full", "trace")),
    ("cnn 16x16, O=10", lambda: cnn(16, 10), (3, 16, 16), 32, ("full", "trace")),
    ("cnn 8x8, O=1", lambda: cnn(8, 1), (3, 8, 8), 32, ("full",)),
    ("cnn 8x8, O=100", lambda: cnn(8, 100), (3, 8, 8), 8, ("full", "trace")),
    ("ln-mlp 256, O=10", lambda: ln_mlp(32, 256, 10), (32,), 32, ("full", "trace")),
    ("ln-mlp 1024, O=10", lambda: ln_mlp(32, 1024, 10), (32,), 32, ("full", "trace")),
    ("ln-mlp 256, O=1", lambda: ln_mlp(32, 256, 1), (32,), 32, ("full",)),
    ("ln-mlp 256, O=32", lambda: ln_mlp(32, 256, 32), (32,), 32, ("full", "trace")),
    ("ln-mlp 1024, O=32", lambda: ln_mlp(32, 1024, 32), (32,), 16, ("full", "trace")),
    ("ln-mlp 256, O=100", lambda: ln_mlp(32, 256, 100), (32,), 16, ("full", "trace")),
]


def best_time(run: Callable[[], torch.Tensor], repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return min(times[1:])


def auto_choice(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, mode: str) -> tuple[str, dict]:
    """Run method="auto" once; record the method it took and the costs (and F) it compared."""
    seen: dict = {}
    real_costs, real_choose = emp._method_costs, emp._choose_method

    def costs(*args, **kwargs):
        seen["flops"] = inspect.signature(real_costs).bind(*args, **kwargs).arguments["flops"]
        seen["costs"] = real_costs(*args, **kwargs)
        return seen["costs"]

    def choose(c):
        seen["pick"] = real_choose(c)
        return seen["pick"]

    emp._method_costs, emp._choose_method = costs, choose
    try:
        wn.empirical_ntk(model, x1, x2, mode=mode, method="auto")
    finally:
        emp._method_costs, emp._choose_method = real_costs, real_choose
    return seen["pick"], {**seen["costs"], "flops": seen["flops"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"float32, best of {args.repeats} after a warm-up")
    print("| case | mode | N=M | P | F | jacobian s | ntk_vp s | measured vp/jac | model vp/jac "
          "| auto | auto/best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    worst = 1.0
    for name, make, shape, n, modes in CASES:
        torch.manual_seed(0)
        model = make().to(args.device)
        g = torch.Generator().manual_seed(1)
        x1 = torch.randn(n, *shape, generator=g).to(args.device)
        x2 = torch.randn(n, *shape, generator=g).to(args.device)
        n_params = sum(p.numel() for p in model.parameters())
        for mode in modes:
            t = {m: best_time(lambda: wn.empirical_ntk(model, x1, x2, mode=mode, method=m),
                              args.repeats, args.device) for m in ("jacobian", "ntk_vp")}
            pick, costs = auto_choice(model, x1, x2, mode)
            ratio = t[pick] / min(t.values())
            worst = max(worst, ratio)
            flops = costs["flops"]
            print(f"| {name} | {mode} | {n} | {n_params} | {flops:.3g} | {t['jacobian']:.4f} "
                  f"| {t['ntk_vp']:.4f} | {t['ntk_vp'] / t['jacobian']:.2f} "
                  f"| {costs['ntk_vp'] / costs['jacobian']:.2f} | {pick} | {ratio:.2f} |", flush=True)
    print(f"\nworst auto/best: {worst:.2f}")


if __name__ == "__main__":
    main()
