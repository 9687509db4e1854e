"""Benchmark: analytic NNGP + NTK of a depth-3 ReLU network.

CPU: 2000×2000, 784 features, float64 — against a plain unfused PyTorch recursion written
here (the straightforward version: arccos + sin + cos per layer, new arrays everywhere), and
the neural-tangents (JAX, jit) number measured on our 2-core machines (0.26 s; JAX is not
installed here).  GPU (if present): 50k×50k float32 against the Gram matrix x·x'ᵀ alone.

    python benchmarks/bench_analytic.py [--n 2000] [--repeats 5] [--gpu-n 50000] [--device auto|cpu|cuda]

``--device auto`` (default) runs the CPU part and, when CUDA is available, the GPU part;
``cpu`` / ``cuda`` run only that part.  Peak memory is measured in a fresh subprocess (max RSS
growth, CPU) or with torch.cuda.max_memory_allocated (GPU); every GPU time is taken between
torch.cuda.synchronize() calls, and the GPU kernels are checked against float64 CPU ones on a
corner block.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import wideNN as wn  # noqa: E402

JAX_REFERENCE_S = 0.26  # neural-tangents stax, jit, same problem, our 2-core CI-class machines


def plain_recursion(x: torch.Tensor, depth: int, w: float, b: float):
    """The textbook unfused recursion (the baseline a researcher writes in an afternoon)."""
    d = x.shape[1]
    k = b + w * (x @ x.T) / d
    th = k
    for _ in range(depth):
        diag = torch.sqrt(torch.diagonal(k))
        norm = diag[:, None] * diag[None, :]
        c = torch.clamp(k / norm, -1.0, 1.0)
        theta = torch.arccos(c)
        k_new = b + w / (2 * math.pi) * norm * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
        th = k_new + w * (math.pi - theta) / (2 * math.pi) * th
        k = k_new
    return k, th


def best_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_peak_ratio(n: int, d: int) -> float:
    """Peak RSS growth of one kernels() call divided by the size of its two outputs."""
    script = f"""
import resource, torch, wideNN as wn
x = torch.randn({n}, {d}, dtype=torch.float64)
arch = wn.Architecture(3, "relu", 2.0, 0.1)
arch.kernels(x[:256])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
k, t = arch.kernels(x)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024 / (2 * k.numel() * 8))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-n", type=int, default=50000)
    parser.add_argument("--device", default="auto", help="auto (CPU, then GPU if present), cpu, or cuda[:N]")
    args = parser.parse_args()
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        parser.error(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    arch = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
    if args.device in ("auto", "cpu"):
        cpu_part(args, arch)
    if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()):
        gpu_part(args, arch, torch.device("cuda" if args.device == "auto" else args.device))
    elif args.device == "auto":
        print("GPU: no CUDA device here; skipped")


def cpu_part(args, arch) -> None:
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    # first, in a clean subprocess (after torch.compile has run, child processes inherit its
    # environment and report nothing useful)
    peak = cpu_peak_ratio(args.n, args.d)
    x = torch.randn(args.n, args.d, dtype=torch.float64)

    ours = best_time(lambda: arch.kernels(x), args.repeats)
    t0 = time.perf_counter()
    arch.kernels(x, compile=True)
    first_compiled = time.perf_counter() - t0
    compiled = best_time(lambda: arch.kernels(x, compile=True), args.repeats)
    plain = best_time(lambda: plain_recursion(x, 3, 2.0, 0.1), args.repeats)
    gram = best_time(lambda: x @ x.T, args.repeats)
    k, t = arch.kernels(x)
    k0, t0 = plain_recursion(x, 3, 2.0, 0.1)
    err = max(((k - k0).abs().max() / k0.abs().max()).item(), ((t - t0).abs().max() / t0.abs().max()).item())
    print(f"CPU NNGP+NTK depth 3 ReLU {args.n}x{args.n}, d={args.d}, float64")
    print(f"  wideNN (eager)         {ours * 1e3:8.1f} ms")
    print(f"  wideNN (compile=True)  {compiled * 1e3:8.1f} ms   (first call incl. compilation {first_compiled:.1f} s)")
    print(f"  plain PyTorch          {plain * 1e3:8.1f} ms   (ratio plain/wideNN {plain / ours:5.2f}x)")
    print(f"  neural-tangents (JAX)  {JAX_REFERENCE_S * 1e3:8.1f} ms   (quoted; JAX/eager {JAX_REFERENCE_S / ours:5.2f}x, "
          f"JAX/compiled {JAX_REFERENCE_S / compiled:5.2f}x)")
    print(f"  Gram x·xᵀ alone        {gram * 1e3:8.1f} ms   (ours / Gram {ours / gram:5.2f}x)")
    print(f"  max relative difference to the plain recursion: {err:.1e}")
    print(f"  peak RSS growth / size of the two outputs: {peak:.2f}")


def gpu_part(args, arch, device: torch.device) -> None:
    n = args.gpu_n
    torch.cuda.set_device(device)
    sync = torch.cuda.synchronize
    g = torch.Generator(device=device).manual_seed(0)
    xg = torch.randn(n, args.d, generator=g, dtype=torch.float32, device=device)
    gram_t = best_time(lambda: xg @ xg.T, 3, sync)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    ours_t = best_time(lambda: arch.kernels(xg), 3, sync)
    peak_gpu = (torch.cuda.max_memory_allocated(device) - base) / (2 * n * n * 4)
    compiled_t = best_time(lambda: arch.kernels(xg, compile=True), 3, sync)
    # correctness on the device: a corner block against the float64 CPU kernels
    k, t = arch.kernels(xg)
    c = min(n, 512)
    k64, t64 = arch.kernels(xg[:c].double().cpu())
    err = max(((k[:c, :c].double().cpu() - k64).abs().max() / k64.abs().max()).item(),
              ((t[:c, :c].double().cpu() - t64).abs().max() / t64.abs().max()).item())
    del k, t
    print(f"GPU {torch.cuda.get_device_name(device)} NNGP+NTK {n}x{n} float32")
    print(f"  wideNN {ours_t * 1e3:.1f} ms (compile=True {compiled_t * 1e3:.1f} ms), Gram floor "
          f"{gram_t * 1e3:.1f} ms, ratio {ours_t / gram_t:.2f}x, peak memory / two outputs {peak_gpu:.2f}")
    print(f"  max relative difference to float64 CPU on the {c}x{c} corner: {err:.1e}")


if __name__ == "__main__":
    main()
