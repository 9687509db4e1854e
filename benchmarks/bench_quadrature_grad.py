"""Memory per kernel entry of a quadrature (tanh) NNGPKernel with and without autograd, and the
time of one exact marginal-likelihood step.

Run: ``python benchmarks/bench_quadrature_grad.py --sizes 40 100 [--tree PATH] [--depth 3]
[--device cpu] [--equal-norm]``.  Each measurement runs in a fresh subprocess (importing wideNN from ``--tree``,
default this checkout, so an older tree can be measured the same way) and reports the growth of
the peak RSS over the process's baseline, divided by N² (entries); the ratio autograd / no-grad
is printed as the reference (goal: ≤ 3), and GPyTorch's own share of the autograd figure (the
same marginal-likelihood step with its RBF kernel).  Peak RSS is a CPU measure: on CUDA the figures are
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
if sys.argv[5] == "1":  # rows of one norm: the angle-table path
    x = x / x.norm(dim=1, keepdim=True) * 10 ** 0.5
y = torch.randn(n, dtype=torch.float64).to(device)
if sys.argv[6] == "rbf":  # GPyTorch's own N×N matrices, with a kernel that keeps nothing per layer
    k = gpytorch.kernels.RBFKernel().double().to(device)
else:
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


def measure(n: int, grad: bool, depth: int = 3, path: str = ".", device: str = "cpu",
            equal_norm: bool = False, kernel: str = "tanh") -> dict:
    """One measurement in a fresh process; ``path`` is the wideNN tree to import."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if grad else "0", str(depth), device,
                          "1" if equal_norm else "0", kernel],
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
    ap.add_argument("--equal-norm", action="store_true",
                    help="inputs of one norm (per-example normalisation): the angle-table path")
    args = ap.parse_args()
    for n in args.sizes:
        ng = measure(n, False, args.depth, args.tree, args.device, args.equal_norm)
        g = measure(n, True, args.depth, args.tree, args.device, args.equal_norm)
        ratio = g.get("bytes_per_entry", float("nan")) / max(ng.get("bytes_per_entry", 1), 1)
        print(f"tree={args.tree} N={n}: no-grad {ng}  autograd {g}  ratio autograd/no-grad {ratio:.2f}",
              flush=True)
        # the marginal likelihood's own N×N matrices (noisy kernel, Cholesky factor, their
        # gradients) are GPyTorch's, whatever the kernel: an RBF kernel in the same harness
        rbf = measure(n, True, args.depth, args.tree, args.device, args.equal_norm, "rbf")
        extra = g.get("bytes_per_entry", float("nan")) - rbf.get("bytes_per_entry", float("nan"))
        print(f"  GPyTorch's marginal likelihood with an RBF kernel: {rbf}; the tanh kernel's autograd "
              f"beyond it: {extra} B/entry = {extra / max(ng.get('bytes_per_entry', 1), 1):.2f} × no-grad",
              flush=True)
