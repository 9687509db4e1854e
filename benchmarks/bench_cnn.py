"""Benchmark: analytic kernels of convolutional networks against neural-tangents' stax, on the CPU.

Cases (σ_w² = 2, σ_b² = 0.01, 3×3 "same" convolutions with ReLU, NTK parameterization, the same
random inputs (N, 1, 28, 28) for both libraries, x against itself):

* ``cnn_gp``: CNN-GP with a flatten readout, ``depth`` conv layers → Flatten → Dense, NNGP only
  (only the per-position variances are needed: Novak et al. 2019);
* ``cntk_gap``: CNTK with global average pooling, ``depth`` conv layers → GlobalAvgPool → Dense,
  NNGP + NTK (the full position×position covariance: Arora et al. 2019);
* ``mlp``: the MLP shorthand, depth-3 ReLU NNGP + NTK, 2000×2000, d = 784 (σ_b² = 0.1);
* ``myrtle5`` (``--myrtle``): the Myrtle-5 kernel (Shankar et al. 2020) on (N, 3, 32, 32), for the
  per-pair throughput behind the 60k CIFAR-10 projection in RESULTS.md.

Each library runs in its own fresh subprocess (this script with ``--worker``): the reference in
the Python of a separate virtual environment that has neural-tangents (so the project's
environment stays free of JAX), ours with this checkout on the path.  Both are timed the same
way: one warm-up call on a 2-example input (JIT start-up for JAX), then the first full-size call
(for JAX it includes compiling for that shape; reported separately) and the best of
``--repeats`` further calls, in wall time and in process CPU time (all threads: on a machine
shared with other jobs the CPU seconds compare the work done, the wall time what one waits);
peak memory is the growth of the process's max RSS over the first
full-size call (for JAX this includes the compilation).  The two kernels are compared entry by
entry, and the ratio reference/ours is printed for time, CPU time and memory.  Then our cost alone as N
and the image side grow, with the fitted exponents.

Reference environment (skipped with a note when absent):

    python -m venv /work/venv-nt
    /work/venv-nt/bin/pip install "jax[cpu]==0.4.30" neural-tangents==0.6.5 tf2jax==0.3.6
    WIDENN_NT_PYTHON=/work/venv-nt/bin/python python benchmarks/bench_cnn.py

(neural-tangents 0.6.5 imports ``jax.core.Jaxpr``, gone from current JAX, hence the pins.)

    python benchmarks/bench_cnn.py [--device cpu|cuda] [--nt-python PATH] [--depth 3]
        [--n-flatten 128] [--n-gap 8] [--repeats 1] [--scaling/--no-scaling] [--mlp/--no-mlp] [--myrtle]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
W_VAR, B_VAR, MLP_B_VAR = 2.0, 0.01, 0.1


# ----------------------------------------------------------------------------- the architectures
def _ours(case: str, depth: int):
    """(description, what) in wideNN: a composed Serial, or the MLP shorthand."""
    import wideNN as wn

    if case == "mlp":
        return wn.Architecture(depth=3, activation="relu", weight_variance=W_VAR, bias_variance=MLP_B_VAR), "both"
    if case == "myrtle5":
        conv = lambda: [wn.Conv(3, padding="same"), "relu"]  # noqa: E731
        pool = wn.AvgPool(2)
        layers = [*conv(), *conv(), pool, *conv(), pool, *conv(), pool, pool, pool, wn.Flatten(), wn.Dense()]
        return wn.Serial(*layers, weight_variance=W_VAR, bias_variance=B_VAR), "both"
    body = [layer for _ in range(depth) for layer in (wn.Conv(3, padding="same"), "relu")]
    head = [wn.Flatten(), wn.Dense()] if case == "cnn_gp" else [wn.GlobalAvgPool(), wn.Dense()]
    return wn.Serial(*body, *head, weight_variance=W_VAR, bias_variance=B_VAR), \
        "nngp" if case == "cnn_gp" else "both"


def _reference(case: str, depth: int):
    """The same architecture in neural-tangents' stax (NHWC), and what to compute."""
    from neural_tangents import stax

    ws, bs = math.sqrt(W_VAR), math.sqrt(B_VAR)
    if case == "mlp":
        layers = []
        for _ in range(3):
            layers += [stax.Dense(512, W_std=ws, b_std=math.sqrt(MLP_B_VAR)), stax.Relu()]
        return stax.serial(*layers, stax.Dense(1, W_std=ws, b_std=math.sqrt(MLP_B_VAR)))[2], ("nngp", "ntk")
    conv = lambda: [stax.Conv(1, (3, 3), padding="SAME", W_std=ws, b_std=bs), stax.Relu()]  # noqa: E731
    if case == "myrtle5":
        pool = stax.AvgPool((2, 2), strides=(2, 2))
        layers = [*conv(), *conv(), pool, *conv(), pool, *conv(), pool, pool, pool, stax.Flatten(),
                  stax.Dense(1, W_std=ws, b_std=bs)]
        return stax.serial(*layers)[2], ("nngp", "ntk")
    body = [layer for _ in range(depth) for layer in conv()]
    head = [stax.Flatten()] if case == "cnn_gp" else [stax.GlobalAvgPool()]
    get = ("nngp",) if case == "cnn_gp" else ("nngp", "ntk")
    return stax.serial(*body, *head, stax.Dense(1, W_std=ws, b_std=bs))[2], get


# ----------------------------------------------------------------------------- workers
def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time_calls(call, sync, warm, x, repeats: int) -> dict:
    """Wall time and process CPU time (all threads): on a machine shared with other jobs the
    CPU seconds say how much work each library does, the wall time how long one waits."""
    sync(call(warm))
    before = _maxrss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    out = sync(call(x))
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _maxrss_mib() - before
    best, best_cpu = first, first_cpu
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        sync(call(x))
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return {"first_s": first, "best_s": best, "first_cpu_s": first_cpu, "cpu_s": best_cpu, "peak_mib": peak,
            "out": out}


def worker(spec: dict) -> dict:
    """Run one case in this process; returns timings and writes the kernels to spec['out']."""
    import numpy as np

    x = np.load(spec["x"])
    if spec["lib"] == "nt":
        import jax

        jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
        kernel_fn, get = _reference(spec["case"], spec["depth"])
        fn = jax.jit(kernel_fn, static_argnames="get")
        xs = x.reshape(x.shape[0], -1) if spec["case"] == "mlp" else x.transpose(0, 2, 3, 1)  # NCHW → NHWC
        xs = jax.numpy.asarray(xs.astype(spec["dtype"]))

        def call(inp):
            k = fn(inp, None, get=get)
            return [getattr(k, g) for g in get] if isinstance(k, tuple) and hasattr(k, "nngp") else \
                (list(k) if isinstance(k, tuple) else [k])

        def sync(out):
            return [jax.block_until_ready(o) for o in out]
        res = _time_calls(call, sync, xs[:2], xs, spec["repeats"])
        outs = [np.asarray(o) for o in res.pop("out")]
    else:
        import torch
        torch_dtype = getattr(torch, spec["dtype"])
        arch, what = _ours(spec["case"], spec["depth"])
        xt = torch.from_numpy(x).to(dtype=torch_dtype, device=spec["device"])
        if spec["case"] == "mlp":
            xt = xt.reshape(xt.shape[0], -1)

        def call(inp):
            return list(arch.kernels(inp)) if what == "both" else [arch.nngp(inp)]

        def sync(out):
            if xt.is_cuda:
                torch.cuda.synchronize()
            return out
        res = _time_calls(call, sync, xt[:2], xt, spec["repeats"])
        outs = [o.detach().cpu().double().numpy() for o in res.pop("out")]
    np.save(spec["out"], np.stack(outs))
    return res


def _run_worker(python: str, spec: dict, tmp: str) -> dict | None:
    path = os.path.join(tmp, f"spec_{spec['lib']}_{spec['case']}_{spec['n']}_{spec['side']}.json")
    spec = dict(spec, out=path.replace(".json", ".npy"))
    with open(path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", path], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        print(f"  [{spec['lib']} {spec['case']} failed: {proc.stderr.strip().splitlines()[-1:]}]")
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np
    res["kernels"] = np.load(spec["out"])
    return res


# ----------------------------------------------------------------------------- the comparison
def _inputs(n: int, channels: int, side: int, tmp: str, seed: int = 0) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, side, side))
    path = os.path.join(tmp, f"x_{n}_{channels}_{side}.npy")
    np.save(path, x)
    return path


def _nt_python(arg: str | None) -> str | None:
    """The reference interpreter: --nt-python, $WIDENN_NT_PYTHON, or this one if it has neural_tangents."""
    for cand in (arg, os.environ.get("WIDENN_NT_PYTHON")):
        if cand:
            return cand if os.path.exists(cand) else None
    probe = subprocess.run([sys.executable, "-c", "import neural_tangents"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def compare(args, case: str, n: int, side: int, channels: int, dtype: str, tmp: str, nt: str | None) -> dict:
    spec = {"case": case, "depth": args.depth, "n": n, "side": side, "dtype": dtype, "repeats": args.repeats,
            "device": args.device, "x": _inputs(n, channels, side, tmp)}
    ours = _run_worker(sys.executable, dict(spec, lib="wideNN"), tmp)
    ref = _run_worker(nt, dict(spec, lib="nt", device="cpu"), tmp) if nt and args.device == "cpu" else None
    label = {"cnn_gp": "CNN-GP, flatten readout (NNGP)", "cntk_gap": "CNTK, global avg pool (NNGP+NTK)",
             "mlp": "MLP depth 3 ReLU (NNGP+NTK)", "myrtle5": "Myrtle-5 (NNGP+NTK)"}[case]
    shape = f"{n}x{n}, d=784" if case == "mlp" else f"N={n}, {channels}x{side}x{side}, depth {args.depth}"
    print(f"{label}: {shape}, {dtype}")
    if ours is None:
        return {}
    print(f"  wideNN           best {ours['best_s'] * 1e3:9.1f} ms  first {ours['first_s'] * 1e3:9.1f} ms  "
          f"CPU {ours['cpu_s']:8.2f} s  peak RSS +{ours['peak_mib']:7.1f} MiB")
    row = {"case": case, "n": n, "side": side, "dtype": dtype, "ours_s": ours["best_s"], "ours_mib": ours["peak_mib"]}
    if ref is None:
        print("  neural-tangents  skipped (no reference interpreter: pass --nt-python or set WIDENN_NT_PYTHON)"
              if not nt else "  neural-tangents  not run")
        return row
    a, b = ours["kernels"], ref["kernels"]
    err = float(abs(a - b).max() / abs(b).max())
    print(f"  neural-tangents  best {ref['best_s'] * 1e3:9.1f} ms  first {ref['first_s'] * 1e3:9.1f} ms (incl. JIT)  "
          f"CPU {ref['cpu_s']:8.2f} s  peak RSS +{ref['peak_mib']:7.1f} MiB")
    print(f"  ratio reference/wideNN: time {ref['best_s'] / ours['best_s']:5.2f}x (first calls "
          f"{ref['first_s'] / ours['first_s']:5.2f}x), CPU time {ref['cpu_s'] / max(ours['cpu_s'], 1e-9):5.2f}x, "
          f"memory {ref['peak_mib'] / max(ours['peak_mib'], 1e-3):5.2f}x; "
          f"max relative difference of the kernels {err:.1e}")
    row.update(ref_s=ref["best_s"], ref_first_s=ref["first_s"], ref_mib=ref["peak_mib"], max_rel_diff=err)
    return row


def scaling(args, tmp: str) -> None:
    """Our cost as N and the image side grow (the reference is not rerun here)."""
    import numpy as np

    for case, ns, sides in (("cnn_gp", [args.n_flatten // 2, args.n_flatten, 2 * args.n_flatten], [14, 28]),
                            ("cntk_gap", [max(2, args.n_gap // 2), args.n_gap], [14, 28])):
        times = {}
        for side in sides:
            for n in ns if side == 28 else [ns[1]]:
                spec = {"case": case, "depth": args.depth, "n": n, "side": side, "dtype": "float64",
                        "repeats": 1, "device": args.device, "x": _inputs(n, 1, side, tmp), "lib": "wideNN"}
                res = _run_worker(sys.executable, spec, tmp)
                if res is not None:
                    times[(n, side)] = res["best_s"]
                    print(f"  {case:9s} N={n:4d} side={side:3d}: {res['best_s'] * 1e3:9.1f} ms, "
                          f"peak RSS +{res['peak_mib']:7.1f} MiB")
        in_n = [(n, times[(n, 28)]) for n in ns if (n, 28) in times]
        if len(in_n) >= 2:
            e_n = np.polyfit(np.log([a for a, _ in in_n]), np.log([b for _, b in in_n]), 1)[0]
            print(f"  {case}: time ∝ N^{e_n:.2f} (pairs: N^2)")
        if (ns[1], 14) in times and (ns[1], 28) in times:
            e_s = math.log(times[(ns[1], 28)] / times[(ns[1], 14)]) / math.log(2.0)
            print(f"  {case}: time ∝ side^{e_s:.2f} (positions P = side^2; flatten ~P, pooling ~P^2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (the comparison) or cuda[:N] (ours only)")
    parser.add_argument("--nt-python", default=None, help="Python of an environment with neural-tangents")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--n-flatten", type=int, default=128)
    parser.add_argument("--n-gap", type=int, default=8)
    parser.add_argument("--n-mlp", type=int, default=2000)
    parser.add_argument("--n-myrtle", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--myrtle", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with open(args.worker) as f:
            res = worker(json.load(f))
        print(json.dumps(res))
        return
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    nt = _nt_python(args.nt_python)
    print(f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}; reference: {nt or 'absent'}")
    with tempfile.TemporaryDirectory() as tmp:
        compare(args, "cnn_gp", args.n_flatten, 28, 1, args.dtype, tmp, nt)
        compare(args, "cntk_gap", args.n_gap, 28, 1, args.dtype, tmp, nt)
        if args.mlp:
            compare(args, "mlp", args.n_mlp, 28, 1, "float64", tmp, nt)
        if args.myrtle:
            row = compare(args, "myrtle5", args.n_myrtle, 32, 3, args.dtype, tmp, nt)
            if row:
                pairs = args.n_myrtle * (args.n_myrtle + 1) / 2
                per_pair = row["ours_s"] / pairs
                total = 60000 * 60001 / 2
                print(f"  per pair (upper triangle) {per_pair * 1e3:.2f} ms → 60k CIFAR-10 "
                      f"({total:.2e} pairs): {per_pair * total / 3600:.0f} hours on this device")
        if args.scaling:
            print("scaling (wideNN only, float64):")
            scaling(args, tmp)


if __name__ == "__main__":
    main()
