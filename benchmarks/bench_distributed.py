"""Distributed NNGP regression on MNIST (GP-1-0.10-0.48, center_norm, one-hot targets,
noise σ² = 0.01, float64) against the single-process dense path, and PCG against one Cholesky.

    python benchmarks/bench_distributed.py e2e --n-train 20000 --n-test 2000 --ranks 2
    python benchmarks/bench_distributed.py pcg --sizes 5000 10000 20000
    python benchmarks/bench_distributed.py tile --device cuda      # per-tile kernel throughput
    python benchmarks/bench_distributed.py variance --n-train 5000 --n-test 1000

e2e:  the reference is ``wn.posterior(..., compute_variance=False)`` in one process with as
      many threads as there are ranks; the distributed run is ``wn.distributed`` kernel job
      (upper-triangle tiles to a store) + PCG on row blocks + streamed test prediction on
      ``--ranks`` gloo processes of one thread each.  Peak memory = each process's max RSS.
pcg:  one process: time of one in-place Cholesky + two triangular solves against PCG
      (pivoted-Cholesky rank 100 + diagonal, and no preconditioner) to a relative residual of
      1e-8, with α's distance to the Cholesky α.
tile: seconds per tile of NNGP+NTK (depth 3 ReLU MLP on 784-d inputs, and a Myrtle-style
      convolutional kernel when the composed-layer API is available) on ``--device``.
variance: one process: ``wd.posterior`` with ``variance=True`` against the mean alone, by Cholesky
      and by PCG (tol 1e-8, rank 100), the training kernel already in the store: time ratio,
      PCG iterations per test block, largest variance error against ``wn.posterior`` (dense).
Falls back to random data when MNIST is not in --root.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wideNN as wn  # noqa: E402
from wideNN import distributed as wd  # noqa: E402

ARCH = wn.Architecture(1, "relu", 0.10, 0.48)
NOISE = 0.01


def _data(root, n_train, n_test):
    try:
        s = wn.data.load_mnist(root, n_train=n_train, n_test=n_test)
        pre = wn.data.preprocess
        return pre(s.x_train, "center_norm"), s.y_train, pre(s.x_test, "center_norm"), s.labels_test
    except (OSError, ValueError):
        g = torch.Generator().manual_seed(0)
        return (torch.randn(n_train, 784, generator=g, dtype=torch.float64), torch.randn(n_train, 10, generator=g,
                dtype=torch.float64), torch.randn(n_test, 784, generator=g, dtype=torch.float64),
                torch.randint(0, 10, (n_test,), generator=g))


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _rank_worker(rank, root, n, nt, store, out, tile):
    x, y, xt, lab = _data(root, n, nt)
    t0 = time.perf_counter()
    job = wd.kernel(ARCH, x, store=store, components=("nngp",), tile_size=tile)
    t1 = time.perf_counter()
    sol = wd.solve(job.store, y, noise_variance=NOISE, method="pcg", options=wd.SolveOptions(tol=1e-8))
    t2 = time.perf_counter()
    mean = wd.predict(ARCH, xt, x, sol.alpha, tile_size=tile)
    t3 = time.perf_counter()
    rec = {"rank": rank, "kernel_s": t1 - t0, "solve_s": t2 - t1, "predict_s": t3 - t2, "total_s": t3 - t0,
           "iterations": sol.iterations, "residual": sol.residual, "peak_gb": _peak_gb(),
           "accuracy": wn.data.accuracy(mean, lab)}
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(rec, f)


def _dense_worker(root, n, nt, threads):
    torch.set_num_threads(threads)
    x, y, xt, lab = _data(root, n, nt)
    t0 = time.perf_counter()
    post = wn.posterior(ARCH, x, y, xt, kernel="nngp", noise_variance=NOISE, compute_variance=False)
    return {"total_s": time.perf_counter() - t0, "peak_gb": _peak_gb(),
            "accuracy": wn.data.accuracy(post.mean, lab)}


def e2e(args) -> None:
    cmd = [sys.executable, __file__, "dense", "--root", args.root, "--n-train", str(args.n_train),
           "--n-test", str(args.n_test), "--ranks", str(args.ranks)]
    dense = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"single process, {args.ranks} threads, dense Cholesky: {dense['total_s']:.1f} s, "
          f"peak {dense['peak_gb']:.2f} GB, accuracy {dense['accuracy']:.4f}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        wd.spawn(_rank_worker, args.ranks, args.root, args.n_train, args.n_test, d + "/k", d + "/rep",
                 args.tile)
        reps = [json.load(open(f"{d}/rep.{r}.json")) for r in range(args.ranks)]
    for r in reps:
        print(f"rank {r['rank']}: kernel {r['kernel_s']:.1f} s, PCG {r['solve_s']:.1f} s "
              f"({r['iterations']} it, residual {r['residual']:.1e}), predict {r['predict_s']:.1f} s, "
              f"total {r['total_s']:.1f} s, peak {r['peak_gb']:.2f} GB, accuracy {r['accuracy']:.4f}")
    worst = max(r["total_s"] for r in reps)
    print(f"ratio distributed / dense: time {worst / dense['total_s']:.2f}×, peak memory per process "
          f"{max(r['peak_gb'] for r in reps) / dense['peak_gb']:.2f}×")


def pcg_scaling(args) -> None:
    for n in args.sizes:
        x, y, _, _ = _data(args.root, n, 10)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            job = wd.kernel(ARCH, x, store=d, components=("nngp",), tile_size=args.tile)
            tk = time.perf_counter() - t0
            chol = wd.solve(job.store, y, noise_variance=NOISE, method="cholesky")
            row = [f"N={n}: kernel {tk:.1f} s, Cholesky {chol.seconds:.2f} s"]
            for pre in ("pivoted_cholesky", None):
                s = wd.solve(job.store, y, noise_variance=NOISE, method="pcg",
                             options=wd.SolveOptions(tol=1e-8, preconditioner=pre))
                err = float((s.alpha - chol.alpha).norm() / chol.alpha.norm())
                row.append(f"PCG[{pre or 'none'}] {s.iterations} it {s.seconds:.2f} s "
                           f"({s.seconds / chol.seconds:.2f}× Cholesky, α rel. err {err:.1e})")
            print("; ".join(row), flush=True)


def variance_cost(args) -> None:
    x, y, xt, _ = _data(args.root, args.n_train, args.n_test)
    t0 = time.perf_counter()
    ref = wn.posterior(ARCH, x, y, xt, kernel="nngp", noise_variance=NOISE)
    t_ref = time.perf_counter() - t0
    print(f"N={args.n_train}, N_test={args.n_test}: reference wn.posterior (dense, kernels included) "
          f"{t_ref:.1f} s; below, the training kernel is already in the store", flush=True)
    with tempfile.TemporaryDirectory() as d:
        wd.kernel(ARCH, x, store=d, components=("nngp",), tile_size=args.tile)
        for method in ("cholesky", "pcg"):
            row, base = [], None
            for var in (False, True):
                t0 = time.perf_counter()
                p = wd.posterior(ARCH, x, y, xt, store=d, noise_variance=NOISE, method=method,
                                 tile_size=args.tile, variance=var, options=wd.SolveOptions(tol=1e-8))
                dt = time.perf_counter() - t0
                base = dt if base is None else base
                text = f"{'mean+variance' if var else 'mean'} {dt:.1f} s"
                if var:
                    rep = p.variance_report
                    err = float((p.variance - ref.variance).abs().max() / ref.variance.abs().max())
                    text += (f" ({dt / base:.1f}× the mean alone; "
                             f"variance part {rep.seconds:.1f} s, {rep.blocks} blocks of "
                             f"{rep.block_size}, iterations {rep.iterations}; "
                             f"max variance error {err:.1e} relative)")
                else:
                    text += f" (α solve {p.solution.seconds:.1f} s, {p.solution.iterations} iterations)"
                row.append(text)
            print(f"  {method}: " + "; ".join(row), flush=True)


def tile_throughput(args) -> None:
    dev = torch.device(args.device)
    x = torch.rand(2 * args.tile, 784, dtype=torch.float64, device=dev)
    cases = [("MLP depth 3 ReLU, 784-d", wn.Architecture(3, "relu", 2.0, 0.01), x, args.tile)]
    if hasattr(wn, "Serial"):          # the composed-layer API: a small convolutional kernel
        conv = wn.Serial(wn.Conv(kernel_size=3, padding="same"), wn.activations.ReLU(),
                         wn.Conv(kernel_size=3, padding="same"), wn.activations.ReLU(),
                         wn.GlobalAvgPool(), wn.Dense(), weight_variance=2.0, bias_variance=0.01)
        side, t = args.conv_side, args.conv_tile
        cases.append((f"2-conv ReLU + global pool, 3×{side}×{side}", conv,
                      torch.rand(2 * t, 3, side, side, dtype=torch.float64, device=dev), t))
    for name, kern, inputs, t in cases:
        kern.kernels(inputs[:4], inputs[4:8])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        kern.kernels(inputs[:t], inputs[t:2 * t])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"{name}: {dt:.3f} s per {t}² tile = {t ** 2 / dt:.3g} entries/s on {dev} "
              f"({torch.get_num_threads()} threads)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["e2e", "pcg", "tile", "dense", "variance"])
    ap.add_argument("--root", default="/work/shared/data/mnist")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tile", type=int, default=2000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    ap.add_argument("--conv-side", type=int, default=16, help="image side of the conv kernel (tile part)")
    ap.add_argument("--conv-tile", type=int, default=16, help="images per conv tile side (tile part)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (tile part)")
    args = ap.parse_args()
    os.environ.setdefault("WIDENN_NO_PROGRESS", "1")
    if args.part == "dense":
        print(json.dumps(_dense_worker(args.root, args.n_train, args.n_test, args.ranks)))
    elif args.part == "e2e":
        e2e(args)
    elif args.part == "pcg":
        pcg_scaling(args)
    elif args.part == "variance":
        variance_cost(args)
    else:
        tile_throughput(args)


if __name__ == "__main__":
    main()
