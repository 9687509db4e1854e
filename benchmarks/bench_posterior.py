"""End-to-end NNGP posterior mean on MNIST (GP-1-0.10-0.48), timed against one float64
Cholesky of the same size on the same device.

    python benchmarks/bench_posterior.py                         # CPU: 5k train, 1k test
    python benchmarks/bench_posterior.py --device cuda --n-train 50000 --n-test 10000

"End to end" = training kernel + in-place Cholesky + solve + test kernel in row blocks +
product, i.e. everything after the data are on the device.  Best of ``--repeats`` runs.
Falls back to random data when MNIST is not in --root.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wideNN as wn  # noqa: E402
from wideNN import data as wdata  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best(fn, repeats, device):
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/work/shared/data/mnist")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--kernel-block-size", type=int, default=None,
                    help="tile size of the analytic kernel (default: wideNN.analytic's choice)")
    args = ap.parse_args()
    device = torch.device(args.device)

    labels_test = None
    try:
        split = wdata.load_mnist(args.root, n_train=args.n_train if args.n_train < 50000 else None,
                                   n_test=args.n_test)
        x, xt = (wdata.preprocess(split.x_train, "center_norm"), wdata.preprocess(split.x_test, "center_norm"))
        y = split.y_train
        labels_test = split.labels_test
        source = "MNIST (center_norm, one-hot targets of wideNN.data)"
    except Exception as err:  # no data: the timing is the same for random inputs
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.n_train, 784, generator=g, dtype=torch.float64)
        xt = torch.randn(args.n_test, 784, generator=g, dtype=torch.float64)
        y = torch.randn(args.n_train, 10, generator=g, dtype=torch.float64)
        source = f"random data ({type(err).__name__}: {err})"
    x, xt, y = x.to(device), xt.to(device), y.to(device)
    arch = wn.Architecture(1, "relu", 0.10, 0.48)
    n = x.shape[0]

    def reference():
        a = torch.randn(n, 64, dtype=torch.float64, device=device)
        m = a @ a.T + n * torch.eye(n, dtype=torch.float64, device=device)
        _sync(device)
        t0 = time.perf_counter()
        torch.linalg.cholesky(m)
        _sync(device)
        return time.perf_counter() - t0

    t_chol = min(reference() for _ in range(args.repeats))

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_post, post = _best(lambda: wn.posterior(arch, x, y, xt, kernel="nngp", noise_variance=args.noise,
                                              compute_variance=False,
                                              kernel_block_size=args.kernel_block_size),
                          args.repeats, device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"data: {source}; N_train={n} N_test={xt.shape[0]} arch={arch.name} "
          f"kernel_block_size={args.kernel_block_size}")
    print(f"reference: float64 Cholesky {n}x{n}: {t_chol:.3f} s (best of {args.repeats})")
    print(f"posterior mean end to end: {t_post:.3f} s (best of {args.repeats}); "
          f"ratio {t_post / t_chol:.2f}x one Cholesky; jitter used {post.jitter:g}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if labels_test is not None:
        print(f"test accuracy: {wdata.accuracy(post.mean.cpu(), labels_test):.4f}")


if __name__ == "__main__":
    main()
