"""Benchmark: analytic NNGP + NTK, quiet and with one core held by a busy process, against neural-tangents.

Each case (activation × depth × N × dtype, x against itself, d = 784, σ_w² = 2, σ_b² = 0.1) is
timed in the same run twice: quiet, then while a separate `while True: pass` process keeps one
core busy (killed right after).  Printed: best-of-``--repeats`` times, the busy/quiet ratio,
and — when a Python with jax + neural-tangents is available (``--nt-python``, default
/work/venv-nt/bin/python, or the env var WIDENN_NT_PYTHON) — neural-tangents' `stax` kernel_fn
(jit) on the same inputs in a subprocess, quiet and busy, with the ratios NT/wideNN and the
largest relative difference between the two results, and NT/floor: neural-tangents' time over
half a Gram matrix x·xᵀ on the same BLAS (the least any kernel of these inputs costs), i.e. the
largest ratio NT/wideNN that any implementation could reach in that cell.  ``--baseline`` also times the previous
code path (the torch passes instead of the compiled tile layers) quiet and busy; ``--paths``
only compares the previous and the fused ReLU paths at several thread counts, interleaved.

    python benchmarks/bench_contention.py [--activations relu erf ...] [--depths 3 20]
        [--n 500 2000] [--dtypes float64 float32] [--repeats 3] [--device cpu] [--json out.json]

``--device cuda`` times on the GPU (the busy process still holds a CPU core: the launch thread
is what contention hits there).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import wideNN as wn  # noqa: E402
from wideNN import activations as _acts  # noqa: E402
from wideNN import _native  # noqa: E402
from wideNN.analytic import _Recursion, _relu_tiled  # noqa: E402
from bench_analytic import best_time  # noqa: E402  (the same timing rule in both scripts)

W, B, D_IN = 2.0, 0.1, 784
ACTIVATIONS = ["relu", "leaky_relu", "abs", "step", "erf", "gelu", "sin", "cos", "identity"]
NT_LAYER = {  # neural-tangents stax layer of each activation (leaky slope as wideNN's default)
    "relu": "stax.Relu()", "leaky_relu": "stax.LeakyRelu(0.01)", "abs": "stax.Abs()",
    "step": "stax.RectifiedMonomial(0)", "erf": "stax.Erf()", "gelu": "stax.Gelu(approximate=False)",
    "sin": "stax.Sin()", "cos": "stax.Cos()", "identity": "stax.Identity()",
}

NT_RUNNER = r"""
import sys, time, numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
x_path, act, depth, repeats, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
x = jax.numpy.asarray(np.load(x_path))
layers = []
for _ in range(depth):
    layers += [stax.Dense(1, W_std={w} ** 0.5, b_std={b} ** 0.5), eval(act)]
layers += [stax.Dense(1, W_std={w} ** 0.5, b_std={b} ** 0.5)]
kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
def run():
    k = kernel_fn(x, None, get=("nngp", "ntk"))
    jax.block_until_ready(k)
    return k
k = run()
np.save(out_path, np.stack([np.asarray(k[0][:256, :256]), np.asarray(k[1][:256, :256])]))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "time":
        break
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    print(min(times), flush=True)
""".replace("{w}", repr(W)).replace("{b}", repr(B))


class Busy:
    """One process spinning on one core for the duration of a ``with`` block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)  # let the scheduler see it
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def quiet_and_busy(fn, repeats, sync) -> tuple[float, float]:
    quiet = best_time(fn, repeats, sync)
    with Busy():
        busy = best_time(fn, repeats, sync)
    return quiet, busy


class NeuralTangents:
    """neural-tangents in a subprocess with its own Python (jax is not a wideNN dependency)."""

    def __init__(self, python: str | None) -> None:
        self.python = python if python and os.path.exists(python) else None
        if self.python:
            ok = subprocess.run([self.python, "-c", "import neural_tangents"], capture_output=True)
            self.python = self.python if ok.returncode == 0 else None

    def time(self, x: np.ndarray, act: str, depth: int, repeats: int):
        """(quiet s, busy s, its 256×256 corner of (K, Θ)) or None."""
        if not self.python:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            xp, outp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npy")
            np.save(xp, x)
            env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
            proc = subprocess.Popen([self.python, "-c", NT_RUNNER, xp, NT_LAYER[act], str(depth),
                                     str(repeats), outp], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            try:
                if proc.stdout.readline().strip() != "ready":
                    return None
                proc.stdin.write("time\n")
                proc.stdin.flush()
                quiet = float(proc.stdout.readline())
                with Busy():
                    proc.stdin.write("time\n")
                    proc.stdin.flush()
                    busy = float(proc.stdout.readline())
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                return quiet, busy, np.load(outp)
            except (ValueError, OSError):
                return None
            finally:
                proc.kill()
                proc.wait()


def baseline(arch, x):
    """The same call with the torch passes instead of the compiled tile layers
    (``wideNN._native``): the code path before those layers, and the path of machines without
    a C compiler."""
    def run():
        saved = dict(_native._state)
        _native._state.update(lib=None)
        try:
            arch.kernels(x)
        finally:
            _native._state.clear()
            _native._state.update(saved)
    return run


def compare_paths(repeats: int) -> None:
    """Depth-3 ReLU 500×500 (d = 784, float64) through the previous tile path (2 and 1 OpenMP
    threads) and the fused path (automatic, 2 and 1 workers), interleaved, as is and with one
    busy core: min / median / max ms."""
    import statistics
    import wideNN._fused as fused
    x = torch.randn(500, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    relu = _acts.get("relu")

    def threads(n, fn, workers=None):
        def run():
            real, before = fused._other_runnable, torch.get_num_threads()
            if workers is not None:
                fused._other_runnable = lambda: 0  # as on a quiet machine
            torch.set_num_threads(n)
            try:
                fn()
            finally:
                fused._other_runnable = real
                torch.set_num_threads(before)
        return run

    old = lambda: _relu_tiled(_Recursion(relu, 3, W, B), x, None, None, False)  # noqa: E731
    new = lambda: fused.fused_kernels(x, None, relu, 3, W, B, True, True)  # noqa: E731
    n = torch.get_num_threads()
    cases = {"previous, all threads": old, "previous, 1 thread": threads(1, old),
             "fused, automatic": new, f"fused, {n} workers": threads(n, new, n),
             "fused, 1 worker": threads(1, new, 1), "Gram x·xᵀ": lambda: x @ x.T}

    def measure():
        times = {k: [] for k in cases}
        for _ in range(repeats):
            for k, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        return {k: f"{min(v) * 1e3:7.1f} {statistics.median(v) * 1e3:7.1f} {max(v) * 1e3:7.1f}"
                for k, v in times.items()}

    for fn in cases.values():
        fn()
    quiet = measure()
    with Busy():
        busy = measure()
    print(f"{'path':>24} | as is min/med/max ms     | + busy core min/med/max ms")
    for k in cases:
        print(f"{k:>24} | {quiet[k]} | {busy[k]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", nargs="+", default=["relu", "erf", "gelu", "sin", "abs"],
                        choices=ACTIVATIONS)
    parser.add_argument("--depths", nargs="+", type=int, default=[3, 20])
    parser.add_argument("--n", nargs="+", type=int, default=[500, 2000])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--baseline", action="store_true", help="also time the torch passes (the path without the compiled tile layers)")
    parser.add_argument("--nt-python", default=os.environ.get("WIDENN_NT_PYTHON", "/work/venv-nt/bin/python"))
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--paths", action="store_true",
                        help="only compare the previous and the fused ReLU paths (depth 3, N = 500)")
    args = parser.parse_args()
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.paths:
        compare_paths(max(args.repeats, 5))
        return
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nt = NeuralTangents(args.nt_python if device.type == "cpu" else None)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {platform.processor() or platform.machine()} {device}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, load average {load:.1f}, "
          f"neural-tangents: {'yes' if nt.python else 'not available (column skipped)'}")
    print(f"{'act':>10} {'L':>3} {'N':>5} {'dtype':>7} | {'quiet ms':>9} {'busy ms':>9} {'busy/q':>6} | "
          f"{'NT q ms':>9} {'NT busy':>9} {'NT/ours q':>9} {'NT/ours b':>9} {'max rel':>8} {'NT/floor':>8}"
          + (" | before q ms  before busy" if args.baseline else ""))
    rows = []
    for dtype_name in args.dtypes:
        for n in args.n:
            x_np = np.random.default_rng(0).standard_normal((n, D_IN)).astype(dtype_name)
            x = torch.from_numpy(x_np).to(device)
            # the floor of any kernel of these inputs: half a Gram matrix x·xᵀ (its upper triangle)
            # through the same BLAS; NT/floor is the largest speed-up over NT that is possible
            args.floor_s = 0.5 * quiet_and_busy(lambda: x @ x.T, max(args.repeats, 5), sync)[0]
            for depth in args.depths:
                for act in args.activations:
                    rows.append(_case(x, x_np, act, depth, n, dtype_name, args, nt, sync))
                    if args.json:
                        _write_json(args.json, rows)


def _case(x, x_np, act, depth, n, dtype_name, args, nt, sync) -> dict:
    arch = wn.Architecture(depth, act, W, B)
    quiet, busy = quiet_and_busy(lambda: arch.kernels(x), args.repeats, sync)
    row = dict(activation=act, depth=depth, n=n, dtype=dtype_name, quiet_s=quiet, busy_s=busy,
               load=os.getloadavg()[0])
    line = (f"{act:>10} {depth:>3} {n:>5} {dtype_name:>7} | {quiet * 1e3:9.1f} {busy * 1e3:9.1f} "
            f"{busy / quiet:6.2f} | ")
    ref = nt.time(x_np, act, depth, args.repeats)
    if ref is None:
        line += f"{'—':>9} {'—':>9} {'—':>9} {'—':>9} {'—':>8}"
    else:
        nt_q, nt_b, corner = ref
        k, t = arch.kernels(x[:256])
        diff = max(float(np.abs(k.cpu().numpy() - corner[0]).max() / np.abs(corner[0]).max()),
                   float(np.abs(t.cpu().numpy() - corner[1]).max() / np.abs(corner[1]).max()))
        row.update(nt_quiet_s=nt_q, nt_busy_s=nt_b, max_rel_diff=diff, half_gram_s=args.floor_s)
        line += (f"{nt_q * 1e3:9.1f} {nt_b * 1e3:9.1f} {nt_q / quiet:9.2f} {nt_b / busy:9.2f} "
                 f"{diff:8.1e} {nt_q / args.floor_s:8.2f}")
    if args.baseline:
        bq, bb = quiet_and_busy(baseline(arch, x), args.repeats, sync)
        row.update(before_quiet_s=bq, before_busy_s=bb)
        line += f" | {bq * 1e3:11.1f} {bb * 1e3:11.1f}"
    print(line, flush=True)
    return row


def _write_json(path: str, rows: list) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
