"""Cross-entropy gradient flow with soft labels at long times (a stiff ODE), timed against the
explicit Dormand–Prince solver used before on the same problem, in the same run.

    python benchmarks/bench_xent_stiff.py                       # N = 100, O = 10, t = 1e6
    python benchmarks/bench_xent_stiff.py --n 10 --classes 3 --t 1e6 1e12 --no-explicit
    python benchmarks/bench_xent_stiff.py --problem empirical --learning-rate 2   # the 145 s case

Problem "analytic" (default): N random inputs in R^20, the analytic NTK of a depth-2 erf network (σ_w² = 1.5,
σ_b² = 0.1), initial outputs 0 (infinite-width mean), soft targets softmax(2·z), z ~ N(0, 1),
learning rate --learning-rate (1), test set of 50 points.  Problem "empirical": the test
suite's network (depth-2 erf MLP, width 48, 3 outputs, float64, seed 0) on N = 10 random
inputs in R^3, its full empirical NTK (N, N, O, O) and its own initial outputs, soft targets
softmax(z), 4 test points.  Measured:
  * explicit: Dormand–Prince 5(4) on (f_X, G) with r = σ(f) − P throughout (rtol 1e-9,
    atol 1e-12), the solver before the stiff switch;
  * CrossEntropyTrajectory: Dormand–Prince until the flow is stiff, then RODAS;
both answering train and test outputs at each t, with the largest difference between them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wideNN as wn  # noqa: E402
from wideNN._odes import dopri5  # noqa: E402
from wideNN.xent import CrossEntropyTrajectory  # noqa: E402


def _problem(n: int, o: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 20, dtype=torch.float64, generator=g)
    xt = torch.randn(50, 20, dtype=torch.float64, generator=g)
    soft = torch.softmax(2 * torch.randn(n, o, dtype=torch.float64, generator=g), -1)
    arch = wn.Architecture(2, "erf", 1.5, 0.1)
    th, thx = arch.ntk(x), arch.ntk(xt, x)
    return th.to(device), thx.to(device), soft.to(device)


def _empirical(device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64, generator=g)
    xt = torch.randn(4, 3, dtype=torch.float64, generator=g)
    soft = torch.softmax(torch.randn(10, 3, dtype=torch.float64, generator=g), -1)
    net = wn.Architecture(2, "erf", 1.5, 0.1).build(3, 48, 3, seed=0, dtype=torch.float64)
    th, f0, thx, f0t = wn.network_kernels(net, x, xt)
    return [a.to(device) for a in (th, thx, soft, f0, f0t)]


def _apply(theta, r):
    return theta @ r if theta.dim() == 2 else torch.einsum("mnab,nb->ma", theta, r)


def _explicit(th, thx, soft, f0, f0t, eta, t):
    n, o = soft.shape

    def rhs(state):
        r = torch.softmax(state[0], -1) - soft
        return torch.stack([-(eta / n) * _apply(th, r), r])
    y = dopri5(rhs, torch.stack([f0, torch.zeros_like(f0)]), [t])[0]
    return y[0], f0t - (eta / n) * _apply(thx, y[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--t", type=float, nargs="+", default=[1e6])
    ap.add_argument("--problem", choices=("analytic", "empirical"), default="analytic")
    ap.add_argument("--learning-rate", type=float, default=1.0)
    ap.add_argument("--no-explicit", action="store_true", help="skip the explicit reference")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.problem == "empirical":
        th, thx, soft, f0, f0t = _empirical(device)
    else:
        th, thx, soft = _problem(args.n, args.classes, device)
        f0 = torch.zeros_like(soft)
        f0t = torch.zeros(thx.shape[0], soft.shape[1], dtype=th.dtype, device=device)
    eta = args.learning_rate
    print(f"{args.problem}: N = {soft.shape[0]}, O = {soft.shape[1]}, eta = {eta:g}, device {device}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")
    for t in args.t:
        t0 = time.perf_counter()
        traj = CrossEntropyTrajectory(th, f0, soft, wn.GradientFlow(eta))
        f, ft = traj.train_outputs(t), traj.outputs(thx, f0t, t)
        new = time.perf_counter() - t0
        gap = float((torch.softmax(f, -1) - soft).abs().max())
        line = (f"t = {t:g}: CrossEntropyTrajectory {new:.2f} s (implicit from t = "
                f"{traj.stiff_from if traj.stiff_from is None else round(traj.stiff_from)}), "
                f"max|σ(f) − y| = {gap:.2e}")
        if not args.no_explicit:
            t0 = time.perf_counter()
            fe, fte = _explicit(th, thx, soft, f0, f0t, eta, t)
            old = time.perf_counter() - t0
            diff = max(float((fe - f).abs().max()), float((fte - ft).abs().max()))
            line += f"; explicit {old:.2f} s; ratio {old / new:.1f}×; max |difference| {diff:.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
