"""Memory per kernel entry of a quadrature (tanh) NNGPKernel with and without autograd, and the
time of one exact marginal-likelihood step.

Run: ``python benchmarks/bench_quadrature_grad.py --sizes 40 100 [--tree PATH] [--depth 3]
[--device cpu]``.  Each measurement runs in a fresh subprocess (importing wideNN from ``--tree``,
default this checkout, so an older tree can be measured the same way) and reports the growth of
the peak RSS over the process's baseline, divided by N² (entries); the ratio autograd / no-grad
is printed as the reference (goal: ≤ 3).  Peak RSS is a CPU measure: on CUDA the figures are
those of host memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r'''
import json, resource, sys, time, torch, gpytorch, wideNN as wn
n, grad, depth, device = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
x = torch.randn(n, 10, dtype=torch.float64).to(device)
y = torch.randn(n, dtype=torch.float64).to(device)
k = wn.NNGPKernel(wn.Architecture(depth=depth, activation="tanh", weight_variance=1.5,
                                  bias_variance=0.1)).double().to(device)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if grad:
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = k
        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))
    model = GP().double().to(device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train(); lik.train()
    with gpytorch.settings.max_cholesky_size(10**9):
        loss = -mll(model(x), y)
        loss.backward()
else:
    with torch.no_grad():
        k(x).to_dense()
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "grad": grad, "depth": depth, "seconds": round(dt, 2),
                  "peak_rss_mb": round(peak / 1024), "bytes_per_entry": round((peak - base) * 1024 / n**2)}))
'''


def measure(n: int, grad: bool, depth: int = 3, path: str = ".", device: str = "cpu") -> dict:
    """One measurement in a fresh process; ``path`` is the wideNN tree to import."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if grad else "0", str(depth), device],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        return {"n": n, "grad": grad, "error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 100])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--tree", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                    help="the wideNN checkout to measure (default: this one)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for n in args.sizes:
        ng = measure(n, False, args.depth, args.tree, args.device)
        g = measure(n, True, args.depth, args.tree, args.device)
        ratio = g.get("bytes_per_entry", float("nan")) / max(ng.get("bytes_per_entry", 1), 1)
        print(f"tree={args.tree} N={n}: no-grad {ng}  autograd {g}  ratio autograd/no-grad {ratio:.2f}",
              flush=True)
