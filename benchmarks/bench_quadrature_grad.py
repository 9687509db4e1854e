"""Memory per kernel entry of a quadrature (tanh) NNGPKernel with and without autograd, and the
time of one exact marginal-likelihood step.

Run: ``PYTHONPATH=. python benchmarks/bench_quadrature_grad.py [N ...]``.  Each measurement runs in
a fresh subprocess and reports the growth of the peak RSS over the process's baseline, divided
by N² (entries); the ratio autograd / no-grad is printed as the reference (goal: ≤ 3).
"""
from __future__ import annotations

import json
import subprocess
import sys

_CHILD = r'''
import json, resource, sys, time, torch, gpytorch, wideNN as wn
n, grad, depth = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
torch.manual_seed(0)
x = torch.randn(n, 10, dtype=torch.float64)
y = torch.randn(n, dtype=torch.float64)
k = wn.NNGPKernel(wn.Architecture(depth=depth, activation="tanh", weight_variance=1.5, bias_variance=0.1)).double()
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
    model = GP().double()
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


def measure(n: int, grad: bool, depth: int = 3, path: str = ".") -> dict:
    """One measurement in a fresh process; ``path`` is the wideNN tree to import."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if grad else "0", str(depth)],
                         capture_output=True, text=True, env={"PYTHONPATH": path, "OMP_NUM_THREADS": "1",
                                                              "PATH": "/usr/bin:/bin"})
    if out.returncode:
        return {"n": n, "grad": grad, "error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout)


if __name__ == "__main__":
    # usage: bench_quadrature_grad.py [--tree PATH] [--depth D] N [N ...]
    args, path, depth = sys.argv[1:], ".", 3
    while args and args[0].startswith("--"):
        flag, value, args = args[0], args[1], args[2:]
        path, depth = (value, depth) if flag == "--tree" else (path, int(value))
    for n in [int(a) for a in args] or [100]:
        ng, g = measure(n, False, depth, path), measure(n, True, depth, path)
        ratio = g.get("bytes_per_entry", float("nan")) / max(ng.get("bytes_per_entry", 1), 1)
        print(f"tree={path} N={n}: no-grad {ng}  autograd {g}  ratio autograd/no-grad {ratio:.2f}",
              flush=True)
