"""Benchmark: empirical NTK of a depth-3 ReLU MLP 784 → width → 10 (wideNN.Network, NTK
parameterization), every wideNN method against the torch.func tutorial's Jacobian-contraction
recipe (per-example Jacobians with vmap(jacrev(functional_call)), then one einsum per
parameter tensor, summed), in the same run.

Each (method, size) runs in its own subprocess so that its peak memory is its own:
CPU peak = growth of ru_maxrss over the post-setup baseline; CUDA peak = max_memory_allocated.
Times are the best of ``--repeats`` runs after one warm-up.  Every kernel is checked against
the recipe's (relative Frobenius error) when the recipe is run.

The structured method is also compared to a matrix-multiply roofline: the FLOPs of the
products it must do (forward, gradient recursion, input Grams, gradient Grams), divided by
the float32 GEMM rate measured on this machine in the same run.

    python benchmarks/bench_empirical.py                 # CPU: N=64, width 512, full mode
    python benchmarks/bench_empirical.py --large         # + N=1024, width 4096 (structured only on CPU)
    python benchmarks/bench_empirical.py --device cuda   # GPU sizes of the issue, + TF32
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torch.func import functional_call, jacrev, vmap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import wideNN as wn  # noqa: E402

D_IN, O, DEPTH = 784, 10, 3


# ----------------------------------------------------------------------------- baseline
def recipe_ntk(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The torch.func tutorial's recipe: per-example Jacobians, einsum per parameter, sum.
    Full mode (N, M, O, O)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(f_single), (None, 0))(params, x1)
    jac2 = vmap(jacrev(f_single), (None, 0))(params, x2)
    terms = [torch.einsum("Naf,Mbf->NMab", j1.flatten(2), j2.flatten(2))
             for j1, j2 in zip(jac1.values(), jac2.values())]
    return torch.stack(terms).sum(0)


# ----------------------------------------------------------------------------- roofline
def structured_flops(n: int, m: int, width: int, mode: str) -> float:
    """Multiply-add FLOPs of the structured formula for the depth-3 MLP (x1 ≠ x2)."""
    sizes = [D_IN] + [width] * DEPTH + [O]
    dense = list(zip(sizes[:-1], sizes[1:]))
    fwd = 2.0 * (n + m) * sum(a * b for a, b in dense)
    # G is pushed through every dense layer except the readout (diagonal) and the first
    recursion = 2.0 * (n + m) * O * sum(a * b for a, b in dense[1:-1])
    input_grams = 2.0 * n * m * sum(a for a, _ in dense)
    hidden_out = [b for _, b in dense[:-1]]
    if mode == "full":
        grad_grams = 2.0 * (n * O) * (m * O) * sum(hidden_out)
    elif mode == "diagonal":
        grad_grams = 2.0 * O * n * m * sum(hidden_out)
    else:
        grad_grams = 2.0 * n * m * O * sum(hidden_out)
    return fwd + recursion + input_grams + grad_grams


def gemm_rate(device: str, dtype: torch.dtype, size: int, repeats: int = 5, tf32: bool = False) -> float:
    """Best GEMM FLOP/s for a square product of the given size (with TF32 matmuls when ``tf32``,
    so that the roofline of a TF32 run is the TF32 rate)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(repeats + 1):
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return 2.0 * size ** 3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- worker
def worker(cfg: dict) -> dict:
    device, n, width, mode, method = cfg["device"], cfg["n"], cfg["width"], cfg["mode"], cfg["method"]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # the memory statistics below are the current device's
    if cfg.get("tf32"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.float64 if cfg.get("float64") else torch.float32
    arch = wn.Architecture(DEPTH, "relu", 2.0, 0.1)
    model = arch.build(D_IN, width, O, seed=0, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(n, D_IN, generator=g, dtype=dtype).to(device)
    x2 = torch.randn(n, D_IN, generator=g, dtype=dtype).to(device)
    if method == "recipe":
        run = lambda: recipe_ntk(model, x1, x2)  # noqa: E731
    else:
        run = lambda: wn.empirical_ntk(model, x1, x2, mode=mode, method=method)  # noqa: E731
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for _ in range(cfg["repeats"] + 1):
        _sync(device)
        t = time.perf_counter()
        out = run()
        _sync(device)
        times.append(time.perf_counter() - t)
    res = {"best_s": min(times[1:]) if len(times) > 1 else times[0], "first_s": times[0],
           "peak_cpu_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}
    if device.startswith("cuda"):
        res["peak_cuda_bytes"] = torch.cuda.max_memory_allocated() - base_cuda
    if cfg.get("check64"):
        # float64 reference of the leading 128×128 block (TF32 off), against the timed result
        torch.backends.cuda.matmul.allow_tf32 = False
        k = min(n, 128)
        ref = wn.empirical_ntk(model.double(), x1[:k].double(), x2[:k].double(), mode=mode,
                               method="structured")
        res["rel_err_vs_float64"] = ((out[:k, :k].double() - ref).norm() / ref.norm()).item()
        out = out[:k, :k]
    if cfg.get("save"):
        torch.save(out.cpu(), cfg["save"])
    return res


def run_isolated(cfg: dict, timeout: float) -> dict:
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt_bytes(b: float) -> str:
    return f"{b / 2**20:8.1f} MiB"


def case(device: str, n: int, width: int, mode: str, methods: list[str], repeats: dict,
         timeout: float, extra: dict | None = None) -> dict:
    print(f"\n== {device}: N=M={n}, width={width}, mode={mode} ==", flush=True)
    results, kernels = {}, {}
    tmp = tempfile.mkdtemp()
    for method in methods:
        cfg = {"device": device, "n": n, "width": width, "mode": mode, "method": method,
               "repeats": repeats.get(method, 3), "save": os.path.join(tmp, f"{method}.pt"),
               **(extra or {})}
        r = run_isolated(cfg, timeout)
        results[method] = r
        if "error" in r:
            print(f"  {method:10s}  FAILED: {r['error']}", flush=True)
            continue
        kernels[method] = torch.load(cfg["save"])
        mem = fmt_bytes(r.get("peak_cuda_bytes", r["peak_cpu_bytes"]))
        print(f"  {method:10s}  best {r['best_s']:9.4f} s   (first {r['first_s']:8.3f} s)   peak +{mem}"
              + (f"   rel. error vs float64 {r['rel_err_vs_float64']:.1e}" if "rel_err_vs_float64" in r else ""),
              flush=True)
    if "recipe" in kernels:
        ref = kernels["recipe"].double()
        for method, k in kernels.items():
            if method == "recipe":
                continue
            err = ((k.double() - ref).norm() / ref.norm()).item()
            results[method]["rel_err_vs_recipe"] = err
            speed = results["recipe"]["best_s"] / results[method]["best_s"]
            results[method]["speedup_vs_recipe"] = speed
            print(f"  {method:10s}  {speed:9.1f}x faster than the recipe, rel. Frobenius error {err:.1e}")
    if "structured" in results and "error" not in results["structured"]:
        flops = structured_flops(n, n, width, mode)
        rate = gemm_rate(device, torch.float32, 2048 if device == "cpu" else 8192,
                         tf32=bool((extra or {}).get("tf32")))
        roof = flops / rate
        results["structured"].update(flops=flops, gemm_flops_per_s=rate, roofline_s=roof)
        kind = "TF32" if (extra or {}).get("tf32") else "float32"
        print(f"  structured: {flops / 1e9:.1f} GFLOP; {kind} GEMM rate {rate / 1e9:.1f} GFLOP/s "
              f"-> roofline {roof:.4f} s; measured/roofline = {results['structured']['best_s'] / roof:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)  # the saved kernels (400 MB each at N=1024, full mode)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--large", action="store_true", help="also N=1024, width 4096")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"cpus {os.cpu_count()}")
    all_results = {}
    methods = ["recipe", "jacobian", "ntk_vp", "structured"]
    reps = {"recipe": 2, "jacobian": 2, "ntk_vp": 2, "structured": 10}
    if args.device == "cpu":
        all_results["cpu_n64_w512_full"] = case("cpu", 64, 512, "full", methods, reps, args.timeout)
        for mode in ("trace", "diagonal"):
            all_results[f"cpu_n64_w512_{mode}"] = case("cpu", 64, 512, mode, ["jacobian", "structured"],
                                                       reps, args.timeout)
        if args.large:
            for mode in ("trace", "full"):
                all_results[f"cpu_n1024_w4096_{mode}"] = case("cpu", 1024, 4096, mode, ["structured"],
                                                              {"structured": 1}, args.timeout,
                                                              {"check64": True})
    else:
        all_results["gpu_n256_w1024_full"] = case(args.device, 256, 1024, "full", methods, reps, args.timeout)
        all_results["gpu_n1024_w4096_full"] = case(args.device, 1024, 4096, "full", ["structured"],
                                                   {"structured": 5}, args.timeout, {"check64": True})
        all_results["gpu_n1024_w4096_full_tf32"] = case(args.device, 1024, 4096, "full", ["structured"],
                                                        {"structured": 5}, args.timeout,
                                                        {"tf32": True, "check64": True})
        # the generic methods at the large size: they must not OOM (tiling), however slow
        all_results["gpu_n1024_w4096_full_generic"] = case(args.device, 1024, 4096, "full",
                                                           ["jacobian", "ntk_vp"], {"jacobian": 0, "ntk_vp": 0},
                                                           args.timeout)
    print("\nJSON " + json.dumps(all_results))


if __name__ == "__main__":
    main()
