"""One predictor, many questions: NTK-GP mean and variance at 100 times on 10 test sets of MNIST,
and a finite network's trajectory at 100 times, each timed against the factorizations of the
same training kernel in the same run (ratios are robust to a loaded machine, absolute times
are not).

    python benchmarks/bench_predictor.py                  # CPU: 5k train, 10 × 1k test, 100 times
    python benchmarks/bench_predictor.py --device cuda

Measured (best of --repeats for the references, one run for the rest):
  * chol / eigh: one float64 Cholesky / eigendecomposition of the N×N training NTK (+ noise);
  * predictor, means: wn.Predictor(arch, x, y, "ntk") (kernels, one eigendecomposition, K in
    its eigenbasis for the variance) + predict(x_test_j, t=100 times, compute_variance=False)
    for every test set j;
  * predictor, variance: the NTK-GP variance at the 100 times on --variance-points test points
    from the same predictor, extrapolated linearly to all test points (its cost is r·M·N² for
    the rank r ≈ 35 of the time weights);
  * posterior: --posterior-calls calls of wn.posterior(..., t=t_i, compute_variance=False) on
    one test set (a fresh
    kernel and factorization per call, as before the predictor existed), extrapolated to
    times × test sets calls;
  * trajectory: wideNN.trajectory.NetworkTrajectory from an N×N kernel (the analytic NTK standing
    in for an empirical one: the cost is the same) and initial outputs, outputs on the training
    set and on one test set at 100 times.
Falls back to random data when MNIST is not in --root.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wideNN as wn  # noqa: E402
from wideNN import data as wdata  # noqa: E402
from wideNN.trajectory import NetworkTrajectory  # noqa: E402
from bench_posterior import _best  # noqa: E402  (the same timing rule as the posterior benchmark)


def _best_time(fn, device, repeats=1):
    """(best wall time of ``repeats`` runs, the last output), synchronising ``device``."""
    return _best(fn, repeats, device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(args, device):
    n_test = args.n_test * args.test_sets
    try:
        split = wdata.load_mnist(args.root, n_train=args.n_train, n_test=n_test)
        x, xt = wdata.preprocess(split.x_train, "center_norm"), wdata.preprocess(split.x_test, "center_norm")
        y, source = split.y_train, "MNIST (center_norm, one-hot targets)"
    except Exception as err:  # no data: the timing is the same for random inputs
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.n_train, 784, generator=g, dtype=torch.float64)
        xt = torch.randn(n_test, 784, generator=g, dtype=torch.float64)
        y = torch.randn(args.n_train, 10, generator=g, dtype=torch.float64)
        source = f"random data ({type(err).__name__}: {err})"
    return x.double().to(device), xt.double().to(device), y.double().to(device), source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/work/shared/data/mnist")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--test-sets", type=int, default=10)
    ap.add_argument("--times", type=int, default=100)
    ap.add_argument("--posterior-calls", type=int, default=2)
    ap.add_argument("--variance-points", type=int, default=200,
                    help="test points of the timed NTK-variance query (0: skip); extrapolated")
    ap.add_argument("--noise", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parts", default="means,variance,posterior,trajectory,cholesky",
                    help="comma-separated subset of: means, variance, posterior, trajectory, cholesky")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    device = torch.device(args.device)
    x, xt, y, source = _data(args, device)
    n = x.shape[0]
    arch = wn.Architecture(2, "relu", 2.0, 0.05)
    times = torch.logspace(0, 6, args.times, dtype=torch.float64)
    tests = xt.split(args.n_test)
    print(f"data: {source}; N = {n}, {len(tests)} test sets of {args.n_test}, {args.times} times; "
          f"device {device}, torch threads {torch.get_num_threads()}")

    theta = arch.ntk(x)
    theta.diagonal().add_(args.noise)
    t_chol, _ = _best(lambda: torch.linalg.cholesky(theta), args.repeats, device)
    t_eigh = t_torch_eigh = float("nan")
    if parts & {"means", "variance", "posterior", "trajectory"}:
        # the library's eigendecomposition (LAPACK's MRRR driver on the CPU from N = 512) is the
        # reference; torch's own (divide and conquer) is printed beside it
        t_eigh, _ = _best(lambda: wn.linalg.eigh_psd(theta), args.repeats, device)
        t_torch_eigh, _ = _best(lambda: torch.linalg.eigh(theta), args.repeats, device)
    print(f"reference: one Cholesky {t_chol:.3f} s, one eigendecomposition {t_eigh:.3f} s "
          f"(eigh / Cholesky = {t_eigh / t_chol:.1f}; torch.linalg.eigh {t_torch_eigh:.3f} s)")

    if "cholesky" in parts:
        def run_cholesky():
            pred = wn.Predictor(arch, x, y, "ntk", wn.GradientFlow(1.0), args.noise, factorization="cholesky",
                                compute_variance=False)
            return [pred.predict(xb) for xb in tests]
        t_ch, _ = _best_time(run_cholesky, device)
        print(f"predictor at t = ∞ (Cholesky), means on {len(tests)} test sets: {t_ch:.2f} s = "
              f"{t_ch / t_chol:.1f} × one Cholesky")

    t_pred = float("nan")
    if parts & {"means", "variance"}:
        # one predictor (with what the variance needs: K in Θ's eigenbasis) answers both
        t_build, pred = _best_time(lambda: wn.Predictor(arch, x, y, "ntk", wn.GradientFlow(1.0), args.noise), device)
        t_queries, posts = _best_time(lambda: [pred.predict(xb, times, compute_variance=False) for xb in tests], device)
        assert posts[0].mean.shape == (args.times, args.n_test, y.shape[1])
        t_pred = t_build + t_queries
        print(f"predictor, means: {t_pred:.2f} s in all ({t_build:.2f} s kernels + factorization, "
              f"{t_queries:.2f} s for {len(tests)} × {args.times} (t, test set) pairs) = "
              f"{t_pred / t_chol:.1f} × one Cholesky, {t_pred / t_eigh:.2f} × one eigendecomposition")
        if args.variance_points and "variance" in parts:
            xv = tests[0][: args.variance_points]
            t_var, post = _best_time(lambda: pred.predict(xv, times), device)
            assert post.variance.shape == (args.times, xv.shape[0])
            scale = len(tests) * args.n_test / xv.shape[0]
            print(f"predictor, NTK variance at {args.times} times on {xv.shape[0]} points: {t_var:.2f} s "
                  f"(mean included); extrapolated to {len(tests)} × {args.n_test} points: {t_var * scale:.0f} s; "
                  f"with the build: {(t_build + t_var * scale) / t_chol:.0f} × one Cholesky, "
                  f"{(t_build + t_var * scale) / t_eigh:.1f} × one eigh")
        del pred, posts

    if "posterior" in parts:
        calls = [float(t) for t in times[:: max(1, args.times // args.posterior_calls)][: args.posterior_calls]]
        t_post, _ = _best_time(lambda: [wn.posterior(arch, x, y, tests[0], kernel="ntk", t=t, noise_variance=args.noise,
                                                 compute_variance=False) for t in calls], device)
        per_call = t_post / len(calls)
        total_calls = args.times * len(tests)
        print(f"wn.posterior (mean) per (t, test set): {per_call:.2f} s (mean of {len(calls)} calls); "
              f"{total_calls} calls extrapolated: {per_call * total_calls:.0f} s = "
              f"{per_call * total_calls / t_pred:.0f} × the predictor's means")

    if "trajectory" in parts:
        g = torch.Generator().manual_seed(1)
        f0 = torch.randn(n, y.shape[1], generator=g, dtype=torch.float64).to(device)
        f0t = torch.randn(args.n_test, y.shape[1], generator=g, dtype=torch.float64).to(device)
        theta_test = arch.ntk(tests[0], x)

        def run_trajectory():
            traj = NetworkTrajectory(theta, f0, y, wn.GradientFlow(1.0))
            return traj.train_outputs(times), traj.outputs(theta_test, f0t, times)
        t_traj, (out_train, out_test) = _best_time(run_trajectory, device)
        assert out_train.shape == (args.times, n, y.shape[1])
        print(f"trajectory (N = {n}, {args.times} times, training set + {args.n_test} test points): "
              f"{t_traj:.2f} s = {t_traj / t_eigh:.2f} × one eigendecomposition")


if __name__ == "__main__":
    main()
