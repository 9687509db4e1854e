"""Cross-entropy gradient flow with one-hot labels on a stiff problem (a training input repeated
with two labels), timed against the explicit solver it used before, in the same run.

    python benchmarks/bench_xent_onehot_stiff.py                         # N = 10, O = 10
    python benchmarks/bench_xent_onehot_stiff.py --n 100 --t 1e4 1e6 1e8 --explicit-up-to 1e5

Problem: N random inputs in R^5, input 1 a copy of input 0 with label 1 (input 0: label 0), the
other labels uniform over O classes; the analytic NTK of a depth-2 erf network (σ_w² = 1.5,
σ_b² = 0.1) times --scale; initial outputs 0; learning rate --learning-rate.  Measured:
  * CrossEntropyTrajectory: Dormand–Prince, then RODAS once the stiffness test fires (for
    one-hot targets also ρ(J)·t ≥ ``wideNN.xent.ONE_HOT_STIFF_RHO_T``);
  * explicit: the same with that threshold infinite (Dormand–Prince throughout, as before: its
    steps grow only linearly in t here), up to ``--explicit-up-to``;
with steps, seconds and the largest difference of the train outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wideNN as wn  # noqa: E402
import wideNN.xent as xent  # noqa: E402


def _problem(n: int, o: int, scale: float, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, dtype=torch.float64, generator=g)
    labels = torch.randint(0, o, (n,), generator=g)
    x[1] = x[0]
    labels[0], labels[1] = 0, 1
    th = scale * wn.Architecture(2, "erf", 1.5, 0.1).ntk(x)
    return th.to(device), labels.to(device)


def _run(th, labels, o, eta, t, threshold):
    before = xent.ONE_HOT_STIFF_RHO_T
    xent.ONE_HOT_STIFF_RHO_T = threshold
    try:
        t0 = time.perf_counter()
        traj = xent.CrossEntropyTrajectory(th, torch.zeros(th.shape[0], o, dtype=th.dtype, device=th.device),
                                           labels, wn.GradientFlow(eta))
        f = traj.train_outputs(t)
        return f, time.perf_counter() - t0, traj
    finally:
        xent.ONE_HOT_STIFF_RHO_T = before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--t", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e8])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--learning-rate", type=float, default=1.0)
    ap.add_argument("--explicit-up-to", type=float, default=1e6,
                    help="largest t for the explicit reference (its cost grows linearly in t)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    th, labels = _problem(args.n, args.classes, args.scale, device)
    eta = args.learning_rate
    print(f"N = {args.n}, O = {args.classes}, scale {args.scale:g}, eta = {eta:g}, device {device}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    for t in args.t:
        f, new, traj = _run(th, labels, args.classes, eta, t, xent.ONE_HOT_STIFF_RHO_T)
        steps = traj.solver_steps
        line = (f"t = {t:g}: CrossEntropyTrajectory {new:.2f} s, {steps['explicit']} explicit + "
                f"{steps['implicit']} implicit steps (implicit from t = "
                f"{traj.stiff_from if traj.stiff_from is None else round(traj.stiff_from)})")
        if t <= args.explicit_up_to:
            fe, old, te = _run(th, labels, args.classes, eta, t, float("inf"))
            line += (f"; explicit {old:.2f} s, {te.solver_steps['explicit']} steps; ratio {old / new:.1f}×; "
                     f"max |difference| {float((fe - f).abs().max()):.1e}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
