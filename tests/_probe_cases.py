"""The bad / edge inputs fed to every public entry point (see ``_probe_harness``).

Each entry point is a function of one argument (the probed value); the other arguments are
small valid defaults.  Valid edge values (non-contiguous, expanded, requiring grad, numpy
scalars) must give the same answer as the plain value.
"""
from __future__ import annotations

import math
import tempfile

import numpy as np
import torch

import wideNN as wn
from wideNN import data as wd
from wideNN import distributed as wdist
from wideNN import layers as wl

from _probe_harness import Case

F64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


X = torch.randn(6, 3, generator=_g(0), dtype=F64)
XT = torch.randn(4, 3, generator=_g(1), dtype=F64)
Y = torch.randn(6, generator=_g(2), dtype=F64)
Y2 = torch.randn(6, 2, generator=_g(3), dtype=F64)
ARCH = wn.Architecture(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
TMP = tempfile.mkdtemp(prefix="wideNN-probe-")


def net(out=1, seed=0):
    return ARCH.build(3, 16, out, seed=seed, dtype=F64)


def _close(a, b, tol=1e-9):
    ta, tb = [t for t in _flat(a)], [t for t in _flat(b)]
    return len(ta) == len(tb) and all(
        x.shape == y.shape and torch.allclose(x.detach().to(F64), y.detach().to(F64), rtol=tol, atol=tol)
        for x, y in zip(ta, tb))


def _flat(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _flat(o)
    elif isinstance(obj, (int, float)):
        yield torch.tensor(float(obj))
    elif hasattr(obj, "__dataclass_fields__"):
        for k in obj.__dataclass_fields__:
            v = getattr(obj, k)
            if isinstance(v, torch.Tensor) and k not in ("t",):
                yield v


# --------------------------------------------------------------- value families
def bad_numbers():
    """Values that must be rejected where a real number goes."""
    return {
        "bool": True, "str": "2.0", "none": None, "complex": 1 + 1j, "nan": math.nan,
        "inf": math.inf, "npbool": np.bool_(True), "vec": torch.tensor([1.0, 2.0], dtype=F64),
        "meta": torch.tensor(1.0, device="meta"), "list": [1.0],
    }


def bad_ints():
    return {"bool": True, "str": "3", "none": None, "frac": 2.5, "nan": math.nan, "huge": 10 ** 30,
            "neg": -1, "zero": 0, "complex": 2 + 0j, "ftensor": torch.tensor(2.5)}


def bad_inputs(x):
    """Bad values for an (N, d) input tensor shaped like x."""
    n, d = x.shape
    nan = x.clone()
    nan[0, 0] = math.nan
    inf = x.clone()
    inf[1, 1] = math.inf
    return {
        "list": x.tolist(), "0d": x[0, 0].clone(), "1d": x[:, 0].clone(), "empty": x[:0],
        "nofeat": x[:, :0], "feat": torch.randn(n, d + 1, dtype=x.dtype), "int": x.long(),
        "f16": x.half(), "bf16": x.bfloat16(), "complex": x.to(torch.complex128),
        "meta": x.to("meta"), "nan": nan, "inf": inf, "np": x.numpy(), "bool": x > 0,
    }


def same_inputs(x):
    """Valid variants of x that must give the same answer: (variant, reference input)."""
    base = x[:1].expand(*x.shape)
    return {
        "noncontig": (x.t().contiguous().t(), x),
        "grad": (x.clone().requires_grad_(), x),
        "expanded": (base, base.contiguous()),
    }


def bad_targets(y, n):
    nan = y.clone()
    nan.view(-1)[0] = math.nan
    return {"list": y.tolist(), "0d": torch.tensor(1.0, dtype=F64), "shortN": y[:-1],
            "3d": y.reshape(n, -1, 1, 1) if y.dim() > 1 else y.reshape(n, 1, 1), "nan": nan,
            "int": y.long(), "f16": y.half(), "complex": y.to(torch.complex128),
            "meta": y.to("meta"), "empty": y[:0], "bool": y > 0}


# --------------------------------------------------------------- helpers for families
def number_cases(prefix, fn, names, good=(("np", np.float64(2.0), 2.0),), extra=None):
    """Cases of ``fn(v)`` for every bad number; numpy / tensor scalars must equal the float."""
    out = []
    vals = dict(bad_numbers())
    vals.update(extra or {})
    for k, v in vals.items():
        out.append(Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names))
    for k, v, ref in good:
        out.append(Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names,
                        check=(lambda r, ref=ref: _close(r, fn(ref))), finite=True))
    return out


def int_cases(prefix, fn, names, skip=()):
    return [Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names)
            for k, v in bad_ints().items() if k not in skip]


def input_cases(prefix, fn, names, x=X, skip=(), tol=1e-9):
    out = [Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names)
           for k, v in bad_inputs(x).items() if k not in skip]
    for k, (v, ref) in same_inputs(x).items():
        if k in skip:
            continue
        out.append(Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names,
                        check=(lambda r, ref=ref: _close(r, fn(ref), tol))))
    return out


def target_cases(prefix, fn, names, y=Y, n=6, skip=()):
    return [Case(f"{prefix}[{k}]", (lambda v=v: fn(v)), names)
            for k, v in bad_targets(y, n).items() if k not in skip]


# --------------------------------------------------------------- the entry points
def architecture_cases():
    c = []
    for field in ("weight_variance", "bias_variance"):
        c += number_cases(f"Architecture.{field}",
                          lambda v, f=field: wn.Architecture(depth=2, **{f: v}).nngp(X), (field,),
                          extra={"neg": -1.0})
    c += int_cases("Architecture.depth", lambda v: wn.Architecture(depth=v).nngp(X), ("depth",),
                   skip=("zero",))
    c.append(Case("Architecture.depth[1e9]", lambda: wn.Architecture(depth=10 ** 9).nngp(X), ("depth",)))
    for name in ("nope", "", "RELU ", None, 3):
        c.append(Case(f"Architecture.activation[{name!r}]",
                      lambda n=name: wn.Architecture(depth=2, activation=n).nngp(X), ("activation",)))
    c.append(Case("Architecture.parameterization[bad]",
                  lambda: wn.Architecture(depth=2, parameterization="ntkk").nngp(X), ("parameterization",)))
    c += input_cases("Architecture.nngp.x1", lambda x: ARCH.nngp(x), ("x1", "x"))
    c += input_cases("Architecture.ntk.x2", lambda x: ARCH.ntk(X, x), ("x2", "x"))
    c.append(Case("Architecture.nngp[mixed dtype]", lambda: ARCH.nngp(X, XT.float()), ("dtype",)))
    c += int_cases("Architecture.nngp.block_size", lambda v: ARCH.nngp(X, block_size=v), ("block_size",))
    c += number_cases("Architecture.nngp.diag", lambda v: ARCH.nngp(X, diag=v), ("diag",),
                      good=((("bool", True, True),)))
    c += int_cases("Architecture.ntk.widths(std)", lambda v: wn.Architecture(
        depth=2, parameterization="standard").ntk(X, widths=v), ("widths",), skip=())
    c += input_cases("kernels.x1", lambda x: wn.kernels(x, depth=2, activation="erf", weight_variance=1.5,
                                                         bias_variance=0.1), ("x1", "x"))
    c += number_cases("kernels.weight_variance", lambda v: wn.kernels(
        X, depth=2, activation="erf", weight_variance=v, bias_variance=0.1), ("weight_variance",))
    c.append(Case("kernels.compute_ntk[str]", lambda: wn.kernels(
        X, depth=2, activation="relu", weight_variance=2.0, bias_variance=0.0, compute_ntk="no"),
        ("compute_ntk",)))
    return c


def build_cases():
    c = []
    c += int_cases("Architecture.build.in_features", lambda v: ARCH.build(v, 8, 1, seed=0), ("in_features",))
    c += int_cases("Architecture.build.width", lambda v: ARCH.build(3, v, 1, seed=0), ("width",))
    c += int_cases("Architecture.build.out_features", lambda v: ARCH.build(3, 8, v, seed=0), ("out_features",))
    c.append(Case("Architecture.build.seed[2**64]", lambda: ARCH.build(3, 8, 1, seed=2 ** 64), ("seed",)))
    c.append(Case("Architecture.build.seed[str]", lambda: ARCH.build(3, 8, 1, seed="0"), ("seed",)))
    c.append(Case("Architecture.build.width[1e12]", lambda: ARCH.build(3, 10 ** 12, 1), ("width", "memory")))
    c.append(Case("Architecture.build.width[list0]", lambda: ARCH.build(3, [], 1, seed=0), ("width",)))
    c.append(Case("Architecture.build.width[wronglen]", lambda: ARCH.build(3, [8, 8, 8], 1, seed=0), ("width",)))
    c.append(Case("Architecture.build.dtype[int]", lambda: ARCH.build(3, 8, 1, dtype=torch.int64), ("dtype",)))
    c.append(Case("Architecture.build.dtype[str]", lambda: ARCH.build(3, 8, 1, dtype="float64"), ("dtype",)))
    c.append(Case("Architecture.build.device[bad]", lambda: ARCH.build(3, 8, 1, device="nodevice"), ("device",)))
    c.append(Case("Architecture.build.bias_variance[vector]", lambda: wn.Architecture(
        depth=2, bias_variance=torch.tensor([0.1, 0.2])).build(3, 8, 1), ("bias_variance",)))
    c += input_cases("Network.forward.x", lambda x: net()(x), ("x", "input", "features"),
                     skip=("list", "np", "bf16", "f16", "int", "complex", "bool", "nan", "inf", "0d", "1d"))
    return c


def layer_cases():
    c = []
    c += number_cases("Dense.weight_variance", lambda v: wl.Serial(wl.Dense(weight_variance=v), "relu",
                                                                   wl.Dense()).nngp(X), ("weight_variance",),
                      extra={"neg": -1.0})
    c += int_cases("Dense.out_features", lambda v: wl.Serial(wl.Dense(v), "relu", wl.Dense()).build(
        3, 8, 1, seed=0), ("out_features",), skip=())
    c += int_cases("Conv.kernel_size", lambda v: wl.Serial(wl.Conv(v), "relu", wl.Flatten(), wl.Dense()).nngp(
        torch.randn(2, 1, 4, 4, dtype=F64)), ("kernel_size",))
    c += int_cases("Conv.stride", lambda v: wl.Serial(wl.Conv(3, stride=v), "relu", wl.Flatten(), wl.Dense()).nngp(
        torch.randn(2, 1, 4, 4, dtype=F64)), ("stride",))
    x4 = torch.randn(2, 1, 4, 4, dtype=F64)
    c.append(Case("Conv.kernel_size[1e9 same]", lambda: wl.Serial(wl.Conv(10 ** 9), "relu", wl.Flatten(),
                                                                 wl.Dense()).nngp(x4), ("kernel_size",)))
    c.append(Case("Conv.stride[1e9]", lambda: wl.Serial(wl.Conv(3, stride=10 ** 9), wl.Flatten(), wl.Dense()).nngp(x4),
                  ("stride",)))
    c.append(Case("Serial.build.kernel_size[1e9]", lambda: wl.Serial(wl.Conv(10 ** 9), wl.Flatten(), wl.Dense()).build(
        (1, 4, 4), 4, 1), ("kernel_size", "memory")))
    c.append(Case("Conv same kernel 7 on 4 still works", lambda: wl.Serial(wl.Conv(7), wl.Flatten(), wl.Dense()).nngp(x4),
                  check=lambda r: r.shape == (2, 2)))
    c.append(Case("Conv.padding[bad]", lambda: wl.Conv(3, padding="circ"), ("padding",)))
    c.append(Case("Conv.kernel_size[tuple3 on 2d]", lambda: wl.Serial(wl.Conv((3, 3, 3)), wl.Flatten(),
                                                                        wl.Dense()).nngp(torch.randn(2, 1, 4, 4, dtype=F64)),
                  ("kernel_size", "spatial", "dimension")))
    c += int_cases("AvgPool.kernel_size", lambda v: wl.Serial(wl.Conv(3), wl.AvgPool(v), wl.Flatten(), wl.Dense()).nngp(
        torch.randn(2, 1, 4, 4, dtype=F64)), ("kernel_size",))
    c.append(Case("AvgPool.kernel_size[too big]", lambda: wl.Serial(wl.Conv(3), wl.AvgPool(9), wl.Flatten(),
                                                                     wl.Dense()).nngp(torch.randn(2, 1, 4, 4, dtype=F64)),
                  ("kernel_size", "AvgPool", "pool")))
    c.append(Case("Residual.block[str]", lambda: wl.Residual("relu"), ("block",)))
    c.append(Case("Residual.block[int]", lambda: wl.Residual(3), ("block",)))
    c.append(Case("Serial.layers[int]", lambda: wl.Serial(3, wl.Dense()), ("layer", "3")))
    c.append(Case("Serial.layers[none]", lambda: wl.Serial(None), ("layer", "None")))
    c.append(Case("Serial.layers[unknown act]", lambda: wl.Serial(wl.Dense(), "nope", wl.Dense()), ("activation", "nope")))
    c.append(Case("Serial.layers[empty]", lambda: wl.Serial().nngp(X), ("layer", "Serial", "empty")))
    s = wl.Serial(wl.Dense(), "relu", wl.Dense(), weight_variance=2.0, bias_variance=0.1)
    c += input_cases("Serial.nngp.x1", lambda x: s.nngp(x), ("x1", "x"))
    c += int_cases("Serial.build.width", lambda v: s.build(3, v, 1, seed=0), ("width",))
    c += int_cases("Serial.build.out_features", lambda v: s.build(3, 8, v, seed=0), ("out_features",))
    c += int_cases("Serial.build.in_shape", lambda v: s.build(v, 8, 1, seed=0), ("in_shape",))
    c.append(Case("Serial.build.in_shape[list]", lambda: s.build([3, -1], 8, 1, seed=0), ("in_shape",)))
    c.append(Case("Serial.build.in_shape[str]", lambda: s.build("3", 8, 1, seed=0), ("in_shape",)))
    c.append(Case("Serial.build.seed[2**64]", lambda: s.build(3, 8, 1, seed=2 ** 64), ("seed",)))
    c.append(Case("Serial.build.seed[-1]", lambda: s.build(3, 8, 1, seed=-1), ("seed",), check=lambda r: True))
    c.append(Case("Serial.build.dtype[int]", lambda: s.build(3, 8, 1, dtype=torch.int32), ("dtype",)))
    c += number_cases("Serial.weight_variance", lambda v: wl.Serial(wl.Dense(), "relu", wl.Dense(),
                                                                    weight_variance=v).nngp(X), ("weight_variance",),
                      extra={"neg": -1.0})
    c.append(Case("Serial.kernels.width[str]", lambda: s.kernels(X, width="8"), ("width",)))
    c.append(Case("Serial.nngp[conv on 2d x]", lambda: wl.Serial(wl.Conv(3), wl.Flatten(), wl.Dense()).nngp(X),
                  ("x1", "x", "Conv", "shape", "spatial")))
    return c


def empirical_cases():
    c = []
    model = net(2)
    for method in ("auto", "jacobian", "ntk_vp", "structured"):
        for mode in ("trace", "full"):
            ref = wn.empirical_ntk(model, X, mode=mode, method="jacobian")
            c.append(Case(f"empirical_ntk[{method},{mode}] correct",
                          lambda m=method, md=mode: wn.empirical_ntk(model, X, mode=md, method=m),
                          check=lambda r, ref=ref: _close(r, ref)))
        c += input_cases(f"empirical_ntk.x1[{method}]",
                         lambda x, m=method: wn.empirical_ntk(model, x, method=m), ("x1", "x"), tol=1e-9)
        c.append(Case(f"empirical_ntk.x2[feat,{method}]",
                      lambda m=method: wn.empirical_ntk(model, X, torch.randn(2, 4, dtype=F64), method=m),
                      ("x2", "feature", "features")))
        c.append(Case(f"empirical_ntk.x2[dtype,{method}]",
                      lambda m=method: wn.empirical_ntk(model, X, XT.float(), method=m), ("x2", "dtype")))
        c += int_cases(f"empirical_ntk.chunk_size[{method}]",
                       lambda v, m=method: wn.empirical_ntk(model, X, method=m, chunk_size=v), ("chunk_size",))
    c.append(Case("empirical_ntk.mode[bad]", lambda: wn.empirical_ntk(model, X, mode="tr"), ("mode",)))
    c.append(Case("empirical_ntk.method[bad]", lambda: wn.empirical_ntk(model, X, method="jac"), ("method",)))
    c.append(Case("empirical_ntk.model[fn]", lambda: wn.empirical_ntk(lambda x: x, X), ("model",)))
    c.append(Case("empirical_ntk.model[float32 vs f64 x]", lambda: wn.empirical_ntk(ARCH.build(3, 8, 1, seed=0), X),
                  ("dtype", "model", "x1")))
    c.append(Case("empirical_ntk.model[dropout]",
                  lambda: wn.empirical_ntk(torch.nn.Sequential(torch.nn.Linear(3, 4).double(), torch.nn.Dropout(0.5)), X),
                  ("Dropout", "eval")))
    c.append(Case("empirical_ntk.model[aggregating]",
                  lambda: wn.empirical_ntk(_Sum(), X), ("batch", "example", "per-example")))
    c += input_cases("empirical_nngp.x1", lambda x: wn.empirical_nngp(ARCH, x, width=8, n_samples=2, seed=0),
                     ("x1", "x"))
    c += int_cases("empirical_nngp.width", lambda v: wn.empirical_nngp(ARCH, X, width=v, n_samples=2), ("width",))
    c += int_cases("empirical_nngp.n_samples", lambda v: wn.empirical_nngp(ARCH, X, width=8, n_samples=v), ("n_samples",))
    c += int_cases("empirical_nngp.out_features", lambda v: wn.empirical_nngp(ARCH, X, width=8, n_samples=2,
                                                                              out_features=v), ("out_features",))
    c.append(Case("empirical_nngp.seed[2**64]", lambda: wn.empirical_nngp(ARCH, X, width=8, n_samples=2, seed=2 ** 64),
                  ("seed",)))
    c.append(Case("empirical_nngp.model correct", lambda: wn.empirical_nngp(model, X),
                  check=lambda r: _close(r, (model(X) @ model(X).T) / 2)))
    return c


class _Sum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1).double()

    def forward(self, x):
        return self.lin(x).sum(0, keepdim=True)


def mc_cases():
    c = []
    c += input_cases("monte_carlo_kernels.x1", lambda x: wn.monte_carlo_kernels(
        ARCH, x, n_samples=2, batch_size=2, width=8, in_features=3, out_features=1), ("x1", "x"), skip=("grad", "expanded", "noncontig"))
    c += int_cases("monte_carlo_kernels.n_samples", lambda v: wn.monte_carlo_kernels(
        ARCH, X, n_samples=v, batch_size=2, width=8, in_features=3, out_features=1), ("n_samples",))
    c += int_cases("monte_carlo_kernels.batch_size", lambda v: wn.monte_carlo_kernels(
        ARCH, X, n_samples=2, batch_size=v, width=8, in_features=3, out_features=1), ("batch_size",))
    c.append(Case("monte_carlo_kernels.seed[2**64]", lambda: wn.monte_carlo_kernels(
        ARCH, X, n_samples=2, batch_size=2, seed=2 ** 64, width=8, in_features=3, out_features=1), ("seed",)))
    c.append(Case("monte_carlo_kernels.compute[bad]", lambda: wn.monte_carlo_kernels(
        ARCH, X, n_samples=2, compute=("ntkk",), width=8, in_features=3, out_features=1), ("compute",)))
    c.append(Case("monte_carlo_kernels.compute[str]", lambda: wn.monte_carlo_kernels(
        ARCH, X, n_samples=2, compute="nngp", width=8, in_features=3, out_features=1), ("compute",)))
    c.append(Case("monte_carlo_kernels.build[int]", lambda: wn.monte_carlo_kernels(3, X, n_samples=2), ("build",)))
    c.append(Case("monte_carlo_kernels.width[missing]", lambda: wn.monte_carlo_kernels(ARCH, X, n_samples=2),
                  ("width", "in_features")))
    c.append(Case("monte_carlo_kernels.n_samples=1", lambda: wn.monte_carlo_kernels(
        ARCH, X, n_samples=1, batch_size=1, width=8, in_features=3, out_features=1), ("n_samples",), finite=False,
        check=lambda r: r.nngp is not None and bool(torch.isfinite(r.nngp).all())))
    return c


def gp_kernel_cases():
    c = []
    for cls in (wn.NNGPKernel, wn.NTKKernel):
        k = cls(ARCH)
        c += input_cases(f"{cls.__name__}.x1", lambda x, k=k: k(x).to_dense(), ("x1", "x"),
                         skip=("list", "np", "0d", "1d"))
        c.append(Case(f"{cls.__name__}.architecture[str]", lambda cls=cls: cls("relu"), ("architecture",)))
        c.append(Case(f"{cls.__name__}.architecture[None]", lambda cls=cls: cls(None), ("architecture",)))
        c += int_cases(f"{cls.__name__}.block_size", lambda v, cls=cls: cls(ARCH, block_size=v)(X).to_dense(),
                       ("block_size",))
        c.append(Case(f"{cls.__name__}.in_shape[bad]", lambda cls=cls: cls(ARCH, in_shape=(0,)), ("in_shape",)))
        c.append(Case(f"{cls.__name__}.weight_variance setter[neg]",
                      lambda cls=cls: setattr(cls(ARCH), "weight_variance", -1.0), ("weight_variance",)))
        c.append(Case(f"{cls.__name__}.weight_variance setter[str]",
                      lambda cls=cls: setattr(cls(ARCH), "weight_variance", "2"), ("weight_variance",)))
        c.append(Case(f"{cls.__name__}.double matches arch",
                      lambda cls=cls: cls(wn.Architecture(depth=2, weight_variance=1.3)).double()(X).to_dense(),
                      check=lambda r, cls=cls: _close(r, getattr(wn.Architecture(depth=2, weight_variance=1.3),
                                                                "nngp" if cls is wn.NNGPKernel else "ntk")(X), 1e-13)))
    return c


def posterior_cases():
    c = []
    post = lambda **kw: wn.posterior(ARCH, X, Y, XT, **{"kernel": "nngp", **kw})  # noqa: E731
    c += input_cases("posterior.x_train", lambda x: wn.posterior(ARCH, x, Y, XT, kernel="nngp"),
                     ("x_train",), skip=("expanded",))
    c += input_cases("posterior.x_test", lambda x: wn.posterior(ARCH, X, Y, x, kernel="nngp"), ("x_test",), x=XT)
    c += target_cases("posterior.y_train", lambda y: wn.posterior(ARCH, X, y, XT, kernel="nngp"), ("y_train",))
    c += number_cases("posterior.t", lambda v: wn.posterior(ARCH, X, Y, XT, kernel="ntk", t=v), ("t", "time"),
                      extra={"neg": -1.0, "negtensor": torch.tensor([1.0, -1.0]), "2d": torch.ones(2, 2),
                             "inttensor": torch.tensor([1, 2])},
                      good=(("np", np.float64(2.0), 2.0), ("int", 2, 2.0), ("0dtensor", torch.tensor(2.0), 2.0)))
    c.append(Case("posterior.t[nan]", lambda: post(kernel="ntk", t=float("nan")), ("t",)))
    c += number_cases("posterior.learning_rate", lambda v: wn.posterior(ARCH, X, Y, XT, kernel="ntk", t=1.0,
                                                                         learning_rate=v), ("learning_rate",),
                      extra={"neg": -1.0, "zero": 0.0})
    c += number_cases("posterior.noise_variance", lambda v: post(noise_variance=v), ("noise_variance",),
                      extra={"neg": -1.0})
    c.append(Case("posterior.kernel[bad]", lambda: post(kernel="gp"), ("kernel",)))
    c.append(Case("posterior.kernel[None]", lambda: post(kernel=None), ("kernel",)))
    c += number_cases("posterior.full_covariance", lambda v: post(full_covariance=v), ("full_covariance",),
                      good=(("true", True, True),))
    c.append(Case("posterior.dtype[f16]", lambda: post(dtype=torch.float16), ("dtype",)))
    c.append(Case("posterior.dtype[int]", lambda: post(dtype=torch.int64), ("dtype",)))
    c.append(Case("posterior.dtype[str]", lambda: post(dtype="float64"), ("dtype",)))
    c += int_cases("posterior.test_block_size", lambda v: post(test_block_size=v), ("test_block_size",))
    c += int_cases("posterior.kernel_block_size", lambda v: post(kernel_block_size=v), ("kernel_block_size", "block_size"))
    c.append(Case("posterior.jitters[neg]", lambda: post(jitters=(-1.0,)), ("jitters",)))
    c.append(Case("posterior.jitters[str]", lambda: post(jitters="0"), ("jitters",)))
    c.append(Case("posterior.jitters[empty]", lambda: post(jitters=()), ("jitters",)))
    c.append(Case("posterior.jitters[nan]", lambda: post(jitters=(math.nan,)), ("jitters",)))
    c.append(Case("posterior.noise_convention[bad]", lambda: post(noise_convention="x"), ("noise_convention",)))
    c.append(Case("posterior.widths[str]", lambda: post(kernel="ntk", widths="8"), ("widths",)))
    c.append(Case("posterior.arch[str]", lambda: wn.posterior("relu", X, Y, XT), ("arch",)))
    c.append(Case("posterior.arch[module]", lambda: wn.posterior(net(), X, Y, XT), ("arch",)))
    # duplicate inputs, zero noise: every t gives a finite mean; t=∞ interpolates the average
    xd = torch.cat([X[:3], X[:1]])
    yd = torch.tensor([1.0, 2.0, 3.0, -1.0], dtype=F64)
    for t in (1.0, 1e6, 1e14, 1e20, math.inf):
        c.append(Case(f"posterior[dup, t={t:g}]", lambda t=t: wn.posterior(ARCH, xd, yd, X[:1], kernel="ntk", t=t),
                      ("t",), check=lambda r, t=t: t < 1e6 or abs(float(r.mean[0]) - 0.0) < 1e-4))
    return c


def _psd(n=6, seed=0):
    a = torch.randn(n, n, generator=_g(seed), dtype=F64)
    return a @ a.T + n * torch.eye(n, dtype=F64)


def predictor_cases():
    c = []
    K = _psd()
    bad_mats = {"asym": K + torch.triu(torch.ones(6, 6, dtype=F64), 1), "indef": K - 30 * torch.eye(6, dtype=F64),
                "nan": K.masked_fill(torch.eye(6, dtype=torch.bool), math.nan), "rect": K[:, :5],
                "int": K.long(), "f16": K.half(), "list": K.tolist(), "1d": K[0], "meta": K.to("meta"),
                "complex": K.to(torch.complex128), "3d": K[None], "empty": K[:0, :0],
                "inf": K.masked_fill(torch.eye(6, dtype=torch.bool), math.inf), "zero": torch.zeros(6, 6, dtype=F64)}
    for k, m in bad_mats.items():
        for reg in ("nngp", "ntk"):
            kw = {f"{reg}_train": m}
            c.append(Case(f"Predictor.from_matrices.{reg}_train[{k}]",
                          lambda kw=kw, reg=reg: Predictor_fm(kw, reg), (f"{reg}_train", "training kernel", "kernel")))
    c += target_cases("Predictor.from_matrices.y_train", lambda y: wn.Predictor.from_matrices(
        y, ntk_train=K, kernel="ntk").predict(wn.QueryKernels(ntk_test_train=K[:2]), 1.0), ("y_train",))
    p = wn.Predictor.from_matrices(Y, ntk_train=K, nngp_train=K, kernel="ntk")
    q = wn.QueryKernels(ntk_test_train=K[:2], nngp_test_train=K[:2], nngp_test=K[:2, :2])
    c += number_cases("Predictor.predict.t", lambda v: p.predict(q, v), ("t", "time"),
                      extra={"neg": -1.0, "negtensor": torch.tensor([1.0, -1.0])},
                      good=(("np", np.float64(2.0), 2.0),))
    c += number_cases("Predictor.train_mean.t", lambda v: p.train_mean(v), ("t", "time"), extra={"neg": -1.0})
    for k, m in {"wrongN": K[:2, :5], "nan": K[:2].clone().fill_(math.nan), "int": K[:2].long(),
                 "list": K[:2].tolist(), "f32": K[:2].float(), "meta": K[:2].to("meta")}.items():
        c.append(Case(f"QueryKernels.ntk_test_train[{k}]", lambda m=m: p.predict(
            wn.QueryKernels(ntk_test_train=m, nngp_test_train=K[:2], nngp_test=K[:2, :2]), 1.0),
            ("ntk_test_train",)))
    c.append(Case("Predictor.predict.x_test[tensor on matrices]", lambda: p.predict(XT), ("x_test", "QueryKernels")))
    c.append(Case("Predictor.predict.full_covariance[str]", lambda: p.predict(q, 1.0, full_covariance="yes"),
                  ("full_covariance",)))
    pa = wn.Predictor(ARCH, X, Y, "nngp")
    c += input_cases("Predictor(arch).predict.x_test", lambda x: pa.predict(x), ("x_test",), x=XT)
    c += input_cases("Predictor(arch).x_train", lambda x: wn.Predictor(ARCH, x, Y, "nngp").predict(XT),
                     ("x_train",), skip=("expanded",))
    c += number_cases("Predictor.noise_variance", lambda v: wn.Predictor(ARCH, X, Y, "nngp", noise_variance=v).predict(XT),
                      ("noise_variance",), extra={"neg": -1.0})
    c.append(Case("Predictor.kernels[str]", lambda: wn.Predictor("relu", X, Y), ("kernels",)))
    c.append(Case("Predictor.kernels[None]", lambda: wn.Predictor(None, X, Y), ("kernels",)))
    c.append(Case("Predictor.kernels[fn returns nan]", lambda: wn.Predictor(
        lambda a, b: torch.full((a.shape[0], (a if b is None else b).shape[0]), math.nan, dtype=F64), X, Y, "nngp").predict(XT),
        ("kernel", "NaN")))
    c.append(Case("Predictor.kernels[fn wrong shape]", lambda: wn.Predictor(
        lambda a, b: torch.ones(2, 2, dtype=F64), X, Y, "nngp").predict(XT), ("kernel", "shape")))
    c.append(Case("Predictor.dynamics[str]", lambda: wn.Predictor(ARCH, X, Y, dynamics="gf"), ("dynamics",)))
    c.append(Case("Predictor.options[dict]", lambda: wn.Predictor(ARCH, X, Y, options={}), ("options",)))
    c.append(Case("Predictor.factorization[bad]", lambda: wn.Predictor(ARCH, X, Y, factorization="lu"),
                  ("factorization",)))
    c.append(Case("Predictor.cholesky finite t", lambda: wn.Predictor(ARCH, X, Y, factorization="cholesky").predict(XT, 1.0),
                  ("cholesky", "t")))
    c.append(Case("Predictor.from_matrices.num_examples[0]", lambda: wn.Predictor.from_matrices(
        Y, ntk_train=K, num_examples=0, compute_variance=False), ("num_examples",)))
    c.append(Case("Predictor.from_matrices[none]", lambda: wn.Predictor.from_matrices(Y), ("nngp_train", "ntk_train")))
    c.append(Case("Predictor.from_matrices[mismatched N]", lambda: wn.Predictor.from_matrices(
        Y, ntk_train=K, nngp_train=_psd(5)), ("nngp_train", "ntk_train")))
    c.append(Case("Predictor.from_matrices[mixed dtype]", lambda: wn.Predictor.from_matrices(
        Y.float(), ntk_train=K).predict(wn.QueryKernels(ntk_test_train=K[:2]), 1.0),
        check=lambda r: _close(r.mean, wn.Predictor.from_matrices(Y.float().double(), ntk_train=K).predict(
            wn.QueryKernels(ntk_test_train=K[:2]), 1.0).mean)))
    for name, dyn in (("GradientFlow", wn.GradientFlow), ("GradientDescent", wn.GradientDescent)):
        c += number_cases(f"{name}.learning_rate", lambda v, d=dyn: d(v), ("learning_rate",),
                          extra={"neg": -1.0, "zero": 0.0}, good=())
    c += number_cases("Momentum.momentum", lambda v: wn.Momentum(0.5, v), ("momentum",),
                      extra={"neg": -0.5, "one": 1.0, "big": 2.0}, good=())
    c.append(Case("GradientDescent.t[frac]", lambda: wn.Predictor.from_matrices(
        Y, ntk_train=K, dynamics=wn.GradientDescent(0.1)).predict(wn.QueryKernels(ntk_test_train=K[:2]), 2.5), ("t",)))
    return c


def Predictor_fm(kw, reg):
    p = wn.Predictor.from_matrices(Y, kernel=reg, compute_variance=False, **kw)
    q = wn.QueryKernels(**{f"{reg}_test_train": _psd()[:2]})
    return p.predict(q, None if reg == "nngp" else 1.0, compute_variance=False)


def posterior_object_cases():
    c = []
    post = wn.posterior(ARCH, X, Y, XT, kernel="nngp", full_covariance=True)
    c += int_cases("Posterior.sample.num_samples", lambda v: post.sample(v), ("num_samples",))
    c.append(Case("Posterior.sample.generator[int]", lambda: post.sample(2, generator=0), ("generator",)))
    c.append(Case("Posterior.sample.jitters[neg]", lambda: post.sample(2, jitters=(-1.0,)), ("jitters",)))
    pv = wn.posterior(ARCH, X, Y, XT, kernel="nngp")
    c.append(Case("Posterior.sample[variance only]", lambda: pv.sample(2), check=lambda r: r.shape[-1] == 4))
    yt = torch.randn(4, dtype=F64)
    c += target_cases("Posterior.log_likelihood.y", lambda y: post.log_likelihood(y), ("y",), y=yt, n=4)
    c += number_cases("Posterior.log_likelihood.noise_variance", lambda v: post.log_likelihood(yt, v),
                      ("noise_variance",), extra={"neg": -1.0})
    c.append(Case("Posterior.log_likelihood.reduction[bad]", lambda: post.log_likelihood(yt, reduction="avg"),
                  ("reduction",)))
    ref = torch.distributions.Normal(post.mean, post.variance.sqrt()).log_prob(yt).mean()
    c.append(Case("Posterior.log_likelihood correct", lambda: post.log_likelihood(yt), check=lambda r: _close(r, ref)))
    c.append(Case("prior.x[nan]", lambda: wn.prior(ARCH, bad_inputs(X)["nan"]), ("x",)))
    c += input_cases("prior.x", lambda x: wn.prior(ARCH, x).covariance, ("x",))
    c.append(Case("prior.kernel[bad]", lambda: wn.prior(ARCH, X, "gp"), ("kernel",)))
    c += input_cases("log_marginal_likelihood.x", lambda x: wn.log_marginal_likelihood(ARCH, x, Y, 0.1), ("x",),
                     skip=("expanded",))
    c += target_cases("log_marginal_likelihood.y", lambda y: wn.log_marginal_likelihood(ARCH, X, y, 0.1), ("y",))
    c += number_cases("log_marginal_likelihood.noise_variance", lambda v: wn.log_marginal_likelihood(ARCH, X, Y, v),
                      ("noise_variance",), extra={"neg": -1.0})
    mvn = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=F64), ARCH.nngp(X) + 0.1 * torch.eye(6, dtype=F64))
    c.append(Case("log_marginal_likelihood correct", lambda: wn.log_marginal_likelihood(ARCH, X, Y, 0.1),
                  check=lambda r: _close(r, mvn.log_prob(Y))))
    c.append(Case("log_marginal_likelihood[dup, zero noise]", lambda: wn.log_marginal_likelihood(
        ARCH, torch.cat([X, X[:1]]), torch.cat([Y, Y[:1] + 1]), 0.0), ("kernel", "noise", "jitter")))
    return c


def metric_cases():
    c = []
    c += target_cases("mse_loss.y", lambda y: wn.mse_loss(Y, y), ("y", "f"))
    c += target_cases("mse_loss.f", lambda y: wn.mse_loss(y, Y), ("f", "y"))
    v = torch.ones(6, dtype=F64)
    c += target_cases("gaussian_log_likelihood.variance", lambda y: wn.gaussian_log_likelihood(Y, Y, y),
                      ("variance",))
    c.append(Case("gaussian_log_likelihood.variance[neg]", lambda: wn.gaussian_log_likelihood(Y, Y, -v), ("variance",)))
    c.append(Case("gaussian_log_likelihood.reduction[bad]", lambda: wn.gaussian_log_likelihood(Y, Y, v, "avg"),
                  ("reduction",)))
    c += number_cases("gaussian_log_likelihood.min_variance", lambda m: wn.gaussian_log_likelihood(
        Y, Y, v, min_variance=m), ("min_variance",), extra={"neg": -1.0})
    return c


def trajectory_cases():
    c = []
    model = net(2)
    th = wn.empirical_ntk(model, X, mode="trace", method="jacobian")
    f0 = model(X).detach()
    yy = Y2
    c += target_cases("NetworkTrajectory.y_train", lambda y: wn.NetworkTrajectory(th, f0, y).train_outputs(1.0),
                      ("y_train",), y=Y2)
    c += target_cases("NetworkTrajectory.f0_train", lambda y: wn.NetworkTrajectory(th, y, yy).train_outputs(1.0),
                      ("f0_train",), y=f0)
    K = _psd()
    for k, m in {"asym": K + torch.triu(torch.ones(6, 6, dtype=F64), 1), "nan": K.clone().fill_(math.nan),
                 "rect": K[:, :5], "int": K.long(), "list": K.tolist(), "3d": K[None]}.items():
        c.append(Case(f"NetworkTrajectory.ntk_train[{k}]", lambda m=m: wn.NetworkTrajectory(m, f0, yy).train_outputs(1.0),
                      ("ntk_train",)))
    traj = wn.NetworkTrajectory(th, f0, yy)
    c += number_cases("NetworkTrajectory.train_outputs.t", lambda v: traj.train_outputs(v), ("t", "time"),
                      extra={"neg": -1.0})
    c.append(Case("NetworkTrajectory.noise_variance[neg]", lambda: wn.NetworkTrajectory(th, f0, yy, noise_variance=-1.0),
                  ("noise_variance",)))
    c.append(Case("NetworkTrajectory.outputs[wrong N]", lambda: traj.outputs(th[:2, :5], f0[:2], 1.0),
                  ("ntk_test_train",)))
    c.append(Case("NetworkTrajectory.outputs[f0 wrong O]", lambda: traj.outputs(th[:2], f0[:2, :1], 1.0),
                  ("f0_test",)))
    c.append(Case("NetworkTrajectory.dtype[int]", lambda: wn.NetworkTrajectory(th, f0, yy, dtype=torch.int64),
                  ("dtype",)))
    c.append(Case("NetworkTrajectory.dynamics[str]", lambda: wn.NetworkTrajectory(th, f0, yy, dynamics="gd"),
                  ("dynamics",)))
    # gradient flow on a linear model: f(t) = y + e^{-tΘ/N}(f0 - y)
    ev, evec = torch.linalg.eigh(th)
    ref = yy + evec @ torch.diag(torch.exp(-2.0 * ev / 6)) @ evec.T @ (f0 - yy)
    c.append(Case("NetworkTrajectory correct", lambda: traj.train_outputs(2.0), check=lambda r: _close(r, ref, 1e-8)))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    xe = wn.CrossEntropyTrajectory(th, f0, labels)
    c += number_cases("CrossEntropyTrajectory.t", lambda v: xe.train_outputs(v), ("t", "time"),
                      extra={"neg": -1.0, "huge": 1e300})
    for k, lab in {"float": labels.double(), "out": torch.tensor([0, 1, 2, 0, 1, 0]), "neg": -labels,
                   "shortN": labels[:5], "list": labels.tolist(), "probs_bad": torch.full((6, 2), 0.7, dtype=F64),
                   "nan": torch.full((6, 2), math.nan, dtype=F64), "bool": labels.bool()}.items():
        c.append(Case(f"CrossEntropyTrajectory.y_train[{k}]", lambda lab=lab: wn.CrossEntropyTrajectory(
            th, f0, lab).train_outputs(1.0), ("y_train",)))
    for name, dyn in (("GradientDescent", wn.GradientDescent(0.5)), ("Momentum", wn.Momentum(0.5, 0.9))):
        c.append(Case(f"CrossEntropyTrajectory[{name}].t[1e300]", lambda d=dyn: wn.CrossEntropyTrajectory(
            th, f0, labels, dynamics=d).train_outputs(1e300), ("t",)))
    # the logits of separable data grow like log t: equal steps per decade of time
    c.append(Case("CrossEntropyTrajectory[t=1e30,1e60,1e90] log-linear", lambda: wn.CrossEntropyTrajectory(
        th, f0, labels).train_outputs(torch.tensor([1e30, 1e60, 1e90])),
        check=lambda r: _close(r[2] - r[1], r[1] - r[0], 1e-6)))
    c += number_cases("CrossEntropyTrajectory.rtol", lambda v: wn.CrossEntropyTrajectory(th, f0, labels, rtol=v),
                      ("rtol",), extra={"neg": -1.0, "zero": 0.0}, good=())
    c.append(Case("CrossEntropyTrajectory.ntk_train[nan]", lambda: wn.CrossEntropyTrajectory(
        th.clone().fill_(math.nan), f0, labels).train_outputs(1.0), ("ntk_train",)))
    c.append(Case("CrossEntropyTrajectory.f0[1 class]", lambda: wn.CrossEntropyTrajectory(th, f0[:, :1], labels),
                  ("f0_train",)))
    c += input_cases("network_kernels.x_train", lambda x: wn.network_kernels(model, x)[0], ("x_train", "x"))
    c.append(Case("network_kernels.mode[bad]", lambda: wn.network_kernels(model, X, mode="x"), ("mode",)))
    return c


def training_cases():
    c = []
    tr = lambda v=None, **kw: wn.train(net(), X, Y[:, None], **{"steps": 2, "progress": False, **kw})  # noqa: E731
    c += input_cases("train.x", lambda x: wn.train(net(), x, Y[:, None], steps=2, progress=False).loss, ("x",),
                     skip=("grad", "expanded", "noncontig"))
    c += target_cases("train.y", lambda y: wn.train(net(), X, y, steps=2, progress=False), ("y",), y=Y[:, None])
    c += int_cases("train.steps", lambda v: tr(steps=v), ("steps",), skip=("zero",))
    c += number_cases("train.learning_rate", lambda v: tr(learning_rate=v), ("learning_rate",),
                      extra={"neg": -1.0, "zero": 0.0}, good=())
    c.append(Case("train.steps[1e12]", lambda: tr(steps=10 ** 12), ("steps",)))
    c.append(Case("train.optimizer[bad]", lambda: tr(optimizer="sgdd"), ("optimizer",)))
    c.append(Case("train.loss[bad]", lambda: tr(loss="l1"), ("loss",)))
    c += int_cases("train.batch_size", lambda v: tr(batch_size=v), ("batch_size",))
    c.append(Case("train.seed[2**64]", lambda: tr(seed=2 ** 64), ("seed",)))
    c.append(Case("train.betas[len3]", lambda: tr(optimizer="adam", betas=(0.9, 0.99, 0.1)), ("betas",)))
    c.append(Case("train.betas[str]", lambda: tr(optimizer="adam", betas="ab"), ("betas",)))
    c += number_cases("train.momentum", lambda v: tr(optimizer="momentum", momentum=v), ("momentum",),
                      extra={"neg": -1.0}, good=())
    c += number_cases("train.eps", lambda v: tr(optimizer="adam", eps=v), ("eps",), extra={"neg": -1.0}, good=())
    c.append(Case("train.eval_data[list]", lambda: tr(eval_data=[X, Y[:, None]], eval_every=1), ("eval_data",)))
    c.append(Case("train.eval_data[bad shape]", lambda: tr(eval_data=(X, Y), eval_every=1), ("eval_data",)))
    c.append(Case("train.ntk_at[str]", lambda: tr(ntk_at=["a"]), ("ntk_at",)))
    c.append(Case("train.ntk_at[neg]", lambda: tr(ntk_at=[-1]), ("ntk_at",)))
    c.append(Case("train.ntk_x[bad]", lambda: tr(ntk_at=[0], ntk_x=torch.ones(2, 5, dtype=F64)), ("ntk_x",)))
    c.append(Case("train.trainable[bad]", lambda: tr(trainable="some"), ("trainable",)))
    c.append(Case("train.trainable[empty]", lambda: tr(trainable=[]), ("trainable",)))
    c.append(Case("train.unknown kw", lambda: tr(bogus=1), ("bogus",)))
    c.append(Case("train.model[fn]", lambda: wn.train(lambda x: x, X, Y[:, None], steps=1), ("model",)))
    c.append(Case("train.eval_every[0]", lambda: tr(eval_every=0), ("eval_every",)))
    c.append(Case("train.check_every[0]", lambda: tr(check_every=0), ("check_every",)))
    c.append(Case("train.checkpoint_every[0]", lambda: tr(checkpoint_every=0), ("checkpoint_every",)))
    c.append(Case("train.checkpoint[a file's child]", lambda: tr(checkpoint=__file__ + "/x.pt"), ("checkpoint",)))
    c.append(Case("train.f32 model, f64 x", lambda: wn.train(ARCH.build(3, 8, 1, seed=0), X, Y[:, None], steps=2,
                                                                progress=False), ("dtype", "x"), check=lambda r: True))
    c.append(Case("train.diverges", lambda: tr(learning_rate=1e6, steps=30), ("learning_rate",),
                  finite=False, check=lambda r: r.diverged))
    c.append(Case("max_learning_rate[asym]", lambda: wn.max_learning_rate(torch.tensor([[1.0, 2.0], [0.0, 1.0]])),
                  ("kernel",)))
    c.append(Case("max_learning_rate[indef]", lambda: wn.max_learning_rate(torch.tensor([[-1.0, 0.0], [0.0, -2.0]])),
                  ("kernel",)))
    c.append(Case("max_learning_rate[nan]", lambda: wn.max_learning_rate(torch.full((2, 2), math.nan)), ("kernel",)))
    c.append(Case("max_learning_rate[zero]", lambda: wn.max_learning_rate(torch.zeros(2, 2)), ("kernel",)))
    c.append(Case("max_learning_rate[int]", lambda: wn.max_learning_rate(torch.eye(2, dtype=torch.long)), ("kernel",)))
    c.append(Case("max_learning_rate[1d]", lambda: wn.max_learning_rate(torch.ones(3)), ("kernel",)))
    c.append(Case("max_learning_rate[list]", lambda: wn.max_learning_rate([[1.0, 0.0], [0.0, 1.0]]), ("kernel",)))
    c.append(Case("max_learning_rate[empty]", lambda: wn.max_learning_rate(torch.zeros(0, 0)), ("kernel",)))
    c.append(Case("max_learning_rate[meta]", lambda: wn.max_learning_rate(torch.eye(2, device="meta")), ("kernel",)))
    c += input_cases("max_learning_rate(arch).x", lambda x: wn.max_learning_rate(ARCH, x), ("x",))
    c.append(Case("max_learning_rate correct", lambda: wn.max_learning_rate(ARCH, X),
                  check=lambda r: abs(r - 12 / float(torch.linalg.eigvalsh(ARCH.ntk(X))[-1])) < 1e-9 * r))
    return c


def linearize_cases():
    c = []
    model = net()
    lin = wn.linearize(model)
    c += input_cases("linearize.forward.x", lambda x: lin(x), ("x", "input"),
                     skip=("list", "np", "int", "f16", "bf16", "complex", "bool", "nan", "inf", "0d", "1d"))
    c.append(Case("linearize.model[fn]", lambda: wn.linearize(lambda x: x), ("model",)))
    c.append(Case("linearize.model[no params]", lambda: wn.linearize(torch.nn.ReLU()), ("model", "parameters")))
    c += int_cases("taylor.order", lambda v: wn.taylor(model, v), ("order",))
    c.append(Case("taylor.order[50]", lambda: wn.taylor(model, 50), ("order",)))
    c.append(Case("taylor.order[1e9]", lambda: wn.taylor(model, 10 ** 9), ("order",)))
    c.append(Case("linearize at theta0 equals model", lambda: lin(XT), check=lambda r: _close(r, model(XT))))
    return c


def ensemble_cases():
    c = []
    ens = lambda **kw: wn.Ensemble(ARCH, **{"width": 8, "in_features": 3, "out_features": 1, "size": 2,  # noqa: E731
                                            "dtype": F64, **kw})
    for field in ("width", "in_features", "out_features", "size"):
        c += int_cases(f"Ensemble.{field}", lambda v, f=field: ens(**{f: v}), (field,))
    c.append(Case("Ensemble.size[1e12]", lambda: ens(size=10 ** 12), ("size",)))
    c.append(Case("Ensemble.seed[2**64]", lambda: ens(seed=2 ** 64), ("seed",)))
    c.append(Case("Ensemble.seed[near 2**64]", lambda: ens(seed=2 ** 64 - 1), ("seed",)))
    c.append(Case("Ensemble.seed[str]", lambda: ens(seed="1"), ("seed",)))
    c.append(Case("Ensemble.arch[str]", lambda: wn.Ensemble("relu", 8, 3, 1, 2), ("arch",)))
    c.append(Case("Ensemble.dtype[int]", lambda: ens(dtype=torch.int64), ("dtype",)))
    c.append(Case("Ensemble.in_shape and in_features", lambda: ens(in_shape=(3,)), ("in_shape", "in_features")))
    e = ens()
    c += input_cases("Ensemble.mean.x", lambda x: e.mean(x), ("x", "input"),
                     skip=("list", "np", "int", "f16", "bf16", "complex", "bool", "nan", "inf", "0d"))
    c.append(Case("Ensemble.member[5]", lambda: e.member(5), ("member", "index", "i")))
    c.append(Case("Ensemble.member[str]", lambda: e.member("0"), ("member", "index", "i")))
    c.append(Case("Ensemble.variance size 1", lambda: ens(size=1).variance(X), ("size", "member")))
    tr = lambda **kw: ens().train(X, Y[:, None], **{"steps": 2, "progress": False, **kw})  # noqa: E731
    c += input_cases("Ensemble.train.x", lambda x: ens().train(x, Y[:, None], steps=2, progress=False).loss, ("x",),
                     skip=("grad", "expanded", "noncontig"))
    c += target_cases("Ensemble.train.y", lambda y: ens().train(X, y, steps=2, progress=False), ("y",), y=Y[:, None])
    c += int_cases("Ensemble.train.steps", lambda v: tr(steps=v), ("steps",), skip=("zero",))
    c += number_cases("Ensemble.train.learning_rate", lambda v: tr(learning_rate=v), ("learning_rate",),
                      extra={"neg": -1.0, "zero": 0.0}, good=())
    c.append(Case("Ensemble.train.optimizer[bad]", lambda: tr(optimizer="x"), ("optimizer",)))
    c.append(Case("Ensemble.train.seed[2**64]", lambda: tr(seed=2 ** 64, batch_size=2, optimizer="sgd"), ("seed",)))
    c.append(Case("Ensemble.train.betas[len1]", lambda: tr(optimizer="adam", betas=(0.9,)), ("betas",)))
    c.append(Case("Ensemble.train.eval_data[list]", lambda: tr(eval_data=[X, Y[:, None]], eval_every=1), ("eval_data",)))
    c.append(Case("Ensemble.train.ntk_at[str]", lambda: tr(ntk_at=["a"]), ("ntk_at",)))
    c.append(Case("Ensemble.train.y without x", lambda: ens().train(True, Y[:, None]), ("x", "y")))
    c.append(Case("Ensemble.train(False) mode", lambda: ens().train(False), check=lambda r: not r.training))
    c.append(Case("Ensemble.train.trainable[bad]", lambda: tr(trainable="none"), ("trainable",)))
    return c


def fit_cases():
    c = []
    fit = lambda **kw: wn.fit_hyperparameters(ARCH, X, Y, **{"steps": 1, "progress": False, **kw})  # noqa: E731
    c += input_cases("fit_hyperparameters.x", lambda x: wn.fit_hyperparameters(
        ARCH, x, Y, steps=0, progress=False).noise_variance, ("x",), skip=("grad", "expanded", "noncontig"))
    c += target_cases("fit_hyperparameters.y", lambda y: wn.fit_hyperparameters(ARCH, X, y, steps=0, progress=False),
                      ("y",))
    c += int_cases("fit_hyperparameters.steps", lambda v: fit(steps=v), ("steps",), skip=("zero",))
    c += number_cases("fit_hyperparameters.lr", lambda v: fit(lr=v), ("lr",), extra={"neg": -1.0, "zero": 0.0}, good=())
    c += number_cases("fit_hyperparameters.noise_variance", lambda v: fit(noise_variance=v), ("noise_variance",),
                      extra={"neg": -1.0}, good=())
    c.append(Case("fit_hyperparameters.learn[bad]", lambda: fit(learn=("depth",)), ("learn",)))
    c.append(Case("fit_hyperparameters.learn[str]", lambda: fit(learn="weight_variance"), ("learn",)))
    c.append(Case("fit_hyperparameters.nothing to learn", lambda: fit(learn=(), learn_noise=False), ("learn",)))
    c.append(Case("fit_hyperparameters.optimizer[bad]", lambda: fit(optimizer="sgdd"), ("optimizer",)))
    c.append(Case("fit_hyperparameters.kernel[bad]", lambda: fit(kernel="rbf"), ("kernel",)))
    c.append(Case("fit_hyperparameters.dtype[f16]", lambda: fit(dtype=torch.float16), ("dtype",)))
    c.append(Case("fit_hyperparameters.arch[str]", lambda: wn.fit_hyperparameters("relu", X, Y, steps=1), ("arch",)))
    c.append(Case("fit_hyperparameters.learn_noise[str]", lambda: fit(learn_noise="yes"), ("learn_noise",)))
    c.append(Case("fit_hyperparameters.min_init[neg]", lambda: fit(min_init=-1.0), ("min_init",)))
    c.append(Case("fit_hyperparameters.checkpoint_every[0]", lambda: fit(checkpoint_every=0), ("checkpoint_every",)))
    c.append(Case("fit_hyperparameters.options[dict]", lambda: wn.fit_hyperparameters(ARCH, X, Y, options={}),
                  ("options",)))
    c.append(Case("fit_hyperparameters.steps=0 exact", lambda: fit(steps=0, noise_variance=0.3),
                  check=lambda r: r.noise_variance == 0.3 and float(r.architecture.weight_variance) == 2.0
                  and abs(float(r.architecture.bias_variance) - 0.1) < 1e-15))
    c.append(Case("fit_hyperparameters[tensor variance arch]", lambda: wn.fit_hyperparameters(
        wn.Architecture(depth=2, weight_variance=torch.tensor(2.0, dtype=F64)), X, Y, steps=1, progress=False),
        check=lambda r: True))
    return c


def dist_cases():
    c = []
    c += int_cases("TilePlan.tile_size", lambda v: wdist.TilePlan(6, 6, v, True), ("tile_size",))
    c += int_cases("TilePlan.n_rows", lambda v: wdist.TilePlan(v, 6, 2, False), ("n_rows",), skip=("zero",))
    A = _psd()
    b = torch.randn(6, dtype=F64)
    c.append(Case("pcg correct", lambda: wdist.pcg(lambda v: A @ v, b, None)[0],
                  check=lambda r: _close(r, torch.linalg.solve(A, b), 1e-8)))
    c += number_cases("pcg.tol", lambda v: wdist.pcg(lambda v_: A @ v_, b, None, tol=v), ("tol",),
                      extra={"neg": -1.0, "zero": 0.0}, good=())
    c += int_cases("pcg.max_iterations", lambda v: wdist.pcg(lambda v_: A @ v_, b, None, max_iterations=v),
                   ("max_iterations",), skip=("zero",))
    c.append(Case("pcg.b[nan]", lambda: wdist.pcg(lambda v: A @ v, b.clone().fill_(math.nan), None), ("b",)))
    c.append(Case("pcg.b[int]", lambda: wdist.pcg(lambda v: A @ v, b.long(), None), ("b",)))
    c.append(Case("pcg.b[list]", lambda: wdist.pcg(lambda v: A @ v, b.tolist(), None), ("b",)))
    c.append(Case("pcg.matvec[str]", lambda: wdist.pcg("A", b, None), ("matvec",)))
    c.append(Case("pcg.matvec[indef]", lambda: wdist.pcg(lambda v: -A @ v, b, None), ("matvec", "positive", "definite")))
    c.append(Case("pcg.b[zero]", lambda: wdist.pcg(lambda v: A @ v, torch.zeros(6, dtype=F64), None)[0],
                  check=lambda r: bool((r == 0).all())))
    diag = A.diagonal().clone()
    row = lambda i: A[i]  # noqa: E731
    c += int_cases("pivoted_cholesky.rank", lambda v: wdist.pivoted_cholesky(diag, row, v), ("rank",),
                   skip=("zero", "huge"))
    c.append(Case("pivoted_cholesky.diag[neg]", lambda: wdist.pivoted_cholesky(-diag, row, 2), ("diag",)))
    c.append(Case("pivoted_cholesky.diag[nan]", lambda: wdist.pivoted_cholesky(diag.clone().fill_(math.nan), row, 2),
                  ("diag",)))
    c.append(Case("pivoted_cholesky.diag[2d]", lambda: wdist.pivoted_cholesky(A, row, 2), ("diag",)))
    c.append(Case("pivoted_cholesky.rtol[neg]", lambda: wdist.pivoted_cholesky(diag, row, 2, rtol=-1.0), ("rtol",)))
    c.append(Case("pivoted_cholesky correct", lambda: wdist.pivoted_cholesky(diag, row, 6)[0],
                  check=lambda r: _close(r @ r.T, A, 1e-8)))
    c.append(Case("LowRankPlusDiagonal.d[neg]", lambda: wdist.LowRankPlusDiagonal(torch.ones(6, 1, dtype=F64),
                                                                                   -torch.ones(6, dtype=F64)), ("d",)))
    c.append(Case("LowRankPlusDiagonal.L[shape]", lambda: wdist.LowRankPlusDiagonal(torch.ones(5, 1, dtype=F64),
                                                                                     torch.ones(6, dtype=F64)), ("L", "d")))
    for field, vals in {"tol": (-1.0, "1", math.nan), "max_iterations": (0, 2.5, True), "rank": (-1, "3"),
                        "preconditioner": ("chol", 3), "storage_dtype": (torch.int64, "float"),
                        "jitters": ((-1.0,), "0")}.items():
        for v in vals:
            c.append(Case(f"SolveOptions.{field}[{v!r}]", lambda f=field, v=v: wdist.SolveOptions(**{f: v}), (field,)))
    for field, v in {"noise_convention": "x", "test_block_size": 0, "full_covariance": "yes"}.items():
        c.append(Case(f"VarianceOptions.{field}[{v!r}]", lambda f=field, v=v: wdist.VarianceOptions(**{f: v}), (field,)))
    c += input_cases("distributed.kernel.x1", lambda x: wdist.kernel(ARCH, x, store=tempfile.mkdtemp(dir=TMP))
                     .computed_total, ("x1",), skip=("grad", "expanded", "noncontig"))
    c.append(Case("distributed.kernel.components[bad]", lambda: wdist.kernel(
        ARCH, X, store=tempfile.mkdtemp(dir=TMP), components=("rbf",)), ("components",)))
    c.append(Case("distributed.kernel.tile_size[0]", lambda: wdist.kernel(
        ARCH, X, store=tempfile.mkdtemp(dir=TMP), tile_size=0), ("tile_size",)))
    c.append(Case("distributed.kernel.store[file]", lambda: wdist.kernel(ARCH, X, store=__file__), ("store",)))
    c.append(Case("distributed.kernel.kern[str]", lambda: wdist.kernel("relu", X, store=tempfile.mkdtemp(dir=TMP)),
                  ("kern",)))
    c.append(Case("distributed.posterior correct", lambda: wdist.posterior(
        ARCH, X, Y, XT, store=tempfile.mkdtemp(dir=TMP), noise_variance=0.1).mean,
        check=lambda r: _close(r, wn.posterior(ARCH, X, Y, XT, kernel="nngp", noise_variance=0.1).mean, 1e-8)))
    c += target_cases("distributed.posterior.y_train", lambda y: wdist.posterior(
        ARCH, X, y, XT, store=tempfile.mkdtemp(dir=TMP)), ("y_train", "y"))
    c += number_cases("distributed.posterior.noise_variance", lambda v: wdist.posterior(
        ARCH, X, Y, XT, store=tempfile.mkdtemp(dir=TMP), noise_variance=v), ("noise_variance",),
        extra={"neg": -1.0}, good=())
    c.append(Case("distributed.posterior.method[bad]", lambda: wdist.posterior(
        ARCH, X, Y, XT, store=tempfile.mkdtemp(dir=TMP), method="lu"), ("method",)))
    c.append(Case("distributed.posterior.component[bad]", lambda: wdist.posterior(
        ARCH, X, Y, XT, store=tempfile.mkdtemp(dir=TMP), component="rbf"), ("component",)))
    c.append(Case("distributed.predict.alpha[wrongN]", lambda: wdist.predict(ARCH, XT, X, torch.ones(5, dtype=F64)),
                  ("alpha",)))
    c.append(Case("distributed.predict.alpha[nan]", lambda: wdist.predict(ARCH, XT, X, torch.full((6,), math.nan,
                                                                                                  dtype=F64)), ("alpha",)))
    c.append(Case("distributed.solve.store[missing]", lambda: wdist.solve(TMP + "/nothing", Y), ("store",)))
    c.append(Case("distributed.spawn.world_size[0]", lambda: wdist.spawn(print, 0), ("world_size",)))
    c.append(Case("distributed.spawn.fn[str]", lambda: wdist.spawn("f", 1), ("fn",)))
    c.append(Case("distributed.current_group.device[bad]", lambda: wdist.current_group("nodevice"), ("device",)))
    return c


def data_cases():
    c = []
    for k, lab in {"neg": torch.tensor([0, -1, 2]), "big": torch.tensor([0, 10]), "float": torch.tensor([0.5]),
                   "list_str": ["a"], "2d": torch.zeros(2, 2, dtype=torch.long), "nan": torch.tensor([math.nan]),
                   "bool": torch.tensor([True])}.items():
        c.append(Case(f"one_hot.labels[{k}]", lambda lab=lab: wd.one_hot(lab, 10), ("labels",)))
    c += int_cases("one_hot.num_classes", lambda v: wd.one_hot(torch.tensor([0, 1]), v), ("num_classes",))
    c += number_cases("one_hot.positive", lambda v: wd.one_hot(torch.tensor([0, 1]), 3, positive=v), ("positive",),
                      good=())
    c.append(Case("one_hot.dtype[int]", lambda: wd.one_hot(torch.tensor([0, 1]), 3, dtype=torch.int64), ("dtype",)))
    c.append(Case("one_hot correct", lambda: wd.one_hot([2, 0], 3),
                  check=lambda r: r.tolist() == [[-0.1, -0.1, 0.9], [0.9, -0.1, -0.1]]))
    c += input_cases("preprocess.x", lambda x: wd.preprocess(x, "standardize"), ("x",))
    c.append(Case("preprocess.method[bad]", lambda: wd.preprocess(X, "zscore"), ("method",)))
    c.append(Case("preprocess.stats[wrong d]", lambda: wd.preprocess(X, "standardize",
                                                                      stats=wd.Standardization.fit(torch.randn(5, 4, dtype=F64))),
                  ("stats",)))
    c.append(Case("preprocess.stats[dict]", lambda: wd.preprocess(X, "standardize", stats={}), ("stats",)))
    c += input_cases("Standardization.fit.x", lambda x: wd.Standardization.fit(x).mean, ("x",))
    img = torch.rand(2, 3 * 4 * 4, dtype=F64)
    c += int_cases("to_images.channels", lambda v: wd.to_images(img, v), ("channels",))
    c += int_cases("to_images.side", lambda v: wd.to_images(img, 3, v), ("side",))
    c += input_cases("to_images.x", lambda x: wd.to_images(x, 3), ("x",), x=img)
    c.append(Case("to_images.x[not square]", lambda: wd.to_images(torch.rand(2, 3 * 12, dtype=F64), 3), ("x", "side")))
    c.append(Case("to_images.preprocessing[bad]", lambda: wd.to_images(img, 3, preprocessing="x"), ("preprocessing",)))
    for k, (p, l) in {"shape": (torch.zeros(3, 2), torch.tensor([0, 1])), "empty": (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)),
                      "float labels": (torch.zeros(2, 2), torch.tensor([0.0, 1.0])), "list": ([[0, 1]], [1]),
                      "nan": (torch.full((2, 2), math.nan), torch.tensor([0, 1]))}.items():
        c.append(Case(f"accuracy[{k}]", lambda p=p, l=l: wd.accuracy(p, l), ("pred", "labels", "empty")))
    c.append(Case("accuracy correct", lambda: wd.accuracy(torch.eye(3), torch.tensor([0, 1, 0])),
                  check=lambda r: abs(r - 2 / 3) < 1e-12))
    c.append(Case("accuracy[1d pred]", lambda: wd.accuracy(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])), ("pred",)))
    labs = np.arange(20) % 2
    c += int_cases("balanced_subset_indices.n", lambda v: wd.balanced_subset_indices(labs, v, 2), ("n",))
    c.append(Case("balanced_subset_indices.n[too many]", lambda: wd.balanced_subset_indices(labs, 30, 2), ("n",)))
    c.append(Case("balanced_subset_indices.n[odd]", lambda: wd.balanced_subset_indices(labs, 3, 2), ("n",)))
    c.append(Case("balanced_subset_indices.labels[float]", lambda: wd.balanced_subset_indices(labs + 0.5, 4, 2),
                  ("labels",)))
    c.append(Case("balanced_subset_indices.labels[out of range]", lambda: wd.balanced_subset_indices(labs + 5, 4, 2),
                  ("labels",)))
    c.append(Case("balanced_subset_indices.labels[2d]", lambda: wd.balanced_subset_indices(labs.reshape(2, 10), 4, 2),
                  ("labels",)))
    c += int_cases("train_test_split_digits.n_train", lambda v: wd.train_test_split_digits(v, 10), ("n_train",))
    c.append(Case("train_test_split_digits.n_train[too big]", lambda: wd.train_test_split_digits(10 ** 6, 10),
                  ("n_train",)))
    c.append(Case("train_test_split_digits.seed[2**64]", lambda: wd.train_test_split_digits(10, 10, seed=2 ** 64),
                  ("seed",)))
    c.append(Case("train_test_split_digits.dtype[int]", lambda: wd.train_test_split_digits(10, 10, dtype=torch.int64),
                  ("dtype",)))
    c.append(Case("load_digits.dtype[str]", lambda: wd.load_digits("float64"), ("dtype",)))
    c.append(Case("load_mnist.root[missing]", lambda: wd.load_mnist(TMP + "/none"), ("root", "mnist", "MNIST")))
    c.append(Case("load_mnist.root[None]", lambda: wd.load_mnist(None), ("root",)))
    c.append(Case("load_mnist.root[int]", lambda: wd.load_mnist(3), ("root",)))
    c.append(Case("load_mnist.n_train[neg]", lambda: wd.load_mnist(TMP, n_train=-1), ("n_train",)))
    c.append(Case("load_cifar10.root[missing]", lambda: wd.load_cifar10(TMP + "/none"), ("root", "CIFAR", "cifar")))
    c.append(Case("load_cifar10.source[bad]", lambda: wd.load_cifar10(TMP, source="web"), ("source",)))
    c.append(Case("load_cifar10.subset[bad]", lambda: wd.load_cifar10(TMP, subset="x"), ("subset",)))
    c.append(Case("load_uci.name[bad]", lambda: wd.load_uci(TMP, "nope"), ("name", "UCI dataset 'nope'")))
    c.append(Case("load_uci.name[None]", lambda: wd.load_uci(TMP, None), ("name",)))
    c.append(Case("load_uci.root[missing]", lambda: wd.load_uci(TMP + "/none", "boston"), ("root", "boston", "housing")))
    c += number_cases("load_uci.test_fraction", lambda v: wd.load_uci(TMP, "boston", test_fraction=v),
                      ("test_fraction",), extra={"neg": -0.1, "one": 1.0, "zero": 0.0}, good=())
    c.append(Case("load_uci.split[-1]", lambda: wd.load_uci(TMP, "boston", split=-1), ("split",)))
    c.append(Case("md5sum.path[missing]", lambda: wd.md5sum(TMP + "/none"), ("none", "path")))
    c.append(Case("md5sum.chunk_size[0]", lambda: wd.md5sum(__file__, chunk_size=0), ("chunk_size",)))
    c.append(Case("verify_md5.expected[int]", lambda: wd.verify_md5(__file__, 3), ("expected",)))
    c.append(Case("activations.get[unknown]", lambda: wn.activations.get("swishh"), ("activation", "swishh")))
    c.append(Case("activations.get[int]", lambda: wn.activations.get(3), ("activation",)))
    return c


def all_cases():
    out = []
    for f in (architecture_cases, build_cases, layer_cases, empirical_cases, mc_cases, gp_kernel_cases,
              posterior_cases, predictor_cases, posterior_object_cases, metric_cases, trajectory_cases,
              training_cases, linearize_cases, ensemble_cases, fit_cases, dist_cases, data_cases):
        out += f()
    return out
