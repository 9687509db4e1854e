"""Worker functions for tests/test_distributed*.py, run in processes started by
``wideNN.distributed.spawn`` (module level so that the spawned interpreters can import them)."""
from __future__ import annotations

import json
import os

import torch

import wideNN as wn
from wideNN import distributed as wd


def arch():
    return wn.Architecture(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)


def problem(n=40, n_test=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 3, 2, generator=g, dtype=torch.float64)      # image-like (N, C, H, W)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(n_test, 2, 3, 2, generator=g, dtype=torch.float64)
    return x, y, xt


def flat_kernels(x1, x2=None):
    """The MLP kernels of the flattened images: a plain function kernel on (N, C, H, W) inputs."""
    return arch().kernels(x1.flatten(1), None if x2 is None else x2.flatten(1))


class DyingKernel:
    """The MLP kernel that kills its process (as a crash would) after ``after`` tiles on ``rank``."""

    def __init__(self, rank: int, after: int):
        self.rank, self.after, self.calls = rank, after, 0

    def __call__(self, x1, x2=None):
        if int(os.environ.get("RANK", 0)) == self.rank:
            self.calls += 1
            if self.calls > self.after:
                os._exit(3)
        return flat_kernels(x1, x2)


def equality_worker(rank: int, store: str, out: str) -> None:
    """The restart of a killed kernel job (``job_worker``), kernels, posterior means and
    variances on every solve path, then the bad-input cases of ``bad_input_cases`` (one spawned
    run for all, since starting the processes dominates)."""
    job_worker(rank, store + "/killed", store + "/killed_report.restart", None)   # the restart
    x, y, xt = problem()
    job = wd.kernel(flat_kernels, x, store=store + "/train", tile_size=8)
    var = wd.VarianceOptions
    chol = wd.posterior(flat_kernels, x, y, xt, store=store + "/nngp", noise_variance=0.01,
                        method="cholesky", tile_size=8, variance=var(test_block_size=4))
    chol_cov = wd.posterior(flat_kernels, x, y, xt, store=store + "/nngp", noise_variance=0.01,
                            method="cholesky", tile_size=8, variance=var(full_covariance=True))
    ntk = wd.posterior_mean(flat_kernels, x, y, xt, store=store + "/ntk", component="ntk",
                            noise_variance=0.01, method="cholesky", tile_size=8, keep_test_tiles=True)
    # blocks of 5 cross the test store's tile rows (8): rows 5:10 come from two tiles
    ntk_var = wd.posterior(flat_kernels, x, y, xt, store=store + "/ntkv", component="ntk",
                           noise_variance=0.01, method="cholesky", tile_size=8, keep_test_tiles=True,
                           variance=var(test_block_size=5))
    opts = wd.SolveOptions(tol=1e-12, rank=5)
    pcg = wd.posterior(flat_kernels, x, y, xt, store=store + "/nngp", noise_variance=0.01,
                       method="pcg", options=opts, tile_size=8, variance=var(test_block_size=4))
    ntk_pcg = wd.posterior(flat_kernels, x, y, xt, store=store + "/ntkv", component="ntk",
                           noise_variance=0.01, method="pcg", options=opts, tile_size=8,
                           variance=var(full_covariance=True, noise_convention="ntk"))
    if rank == 0:
        torch.save({"nngp": job.store.dense("nngp"), "ntk": job.store.dense("ntk"),
                    "mean_nngp": chol.mean, "mean_ntk": ntk.mean, "mean_pcg": pcg.mean,
                    "var_nngp": chol.variance, "cov_nngp": chol_cov.covariance,
                    "mean_ntk_var": ntk_var.mean, "var_ntk": ntk_var.variance,
                    "var_pcg": pcg.variance, "pcg_report": pcg.variance_report,
                    "mean_ntk_pcg": ntk_pcg.mean, "cov_ntk_pcg": ntk_pcg.covariance,
                    "ntk_pcg_report": ntk_pcg.variance_report, "chol_report": chol.variance_report,
                    "pcg_iterations": pcg.solution.iterations, "computed": len(job.computed)}, out)
    bad_input_cases(rank, store, out + ".errors")


def job_worker(rank: int, store: str, out: str, dying: tuple | None) -> None:
    x, _, _ = problem()
    kern = DyingKernel(*dying) if dying else flat_kernels
    job = wd.kernel(kern, x, store=store, tile_size=8, description="flat MLP kernel, depth 2")
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump({"computed": len(job.computed), "computed_total": job.computed_total,
                   "reused": job.reused}, f)


def bad_input_cases(rank: int, store: str, out: str) -> None:
    x, y, xt = problem()
    errors = {}
    cases = {
        "few_tiles": lambda: wd.kernel(flat_kernels, x[:4], store=store + "/few", tile_size=8),
        "mismatch": lambda: wd.kernel(flat_kernels, x + rank, store=store + "/mm", tile_size=8),
        "other_kernel": lambda: wd.kernel(arch(), x.flatten(1) * 2, store=store + "/done", tile_size=8),
        "variance_mismatch": lambda: wd.posterior(
            flat_kernels, x, y, xt, store=store + "/nngp", noise_variance=0.01, method="cholesky",
            tile_size=8, variance=wd.VarianceOptions(test_block_size=4 + rank)),
    }
    wd.kernel(arch(), x.flatten(1), store=store + "/done", tile_size=8)
    for name, case in cases.items():
        try:
            case()
            errors[name] = None
        except (ValueError, OSError) as e:
            errors[name] = f"{type(e).__name__}: {e}"
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(errors, f)


def cuda_worker(rank: int, store: str, out: str) -> None:
    x, y, xt = problem()
    p = wd.posterior(flat_kernels, x, y, xt, store=store, noise_variance=0.01, method="pcg",
                     options=wd.SolveOptions(tol=1e-12, rank=5), tile_size=8, device="cuda",
                     variance=wd.VarianceOptions(test_block_size=4))
    if rank == 0:
        torch.save({"mean": p.mean.cpu(), "variance": p.variance.cpu(),
                    "residual": p.variance_report.residual}, out)
