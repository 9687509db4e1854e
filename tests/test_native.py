"""The compiled tile layers (wideNN._native, wideNN/csrc/fused_layers.c): their elementwise
functions against mpmath, the fused kernels with and without them, and the fall-backs (no
compiler, a broken cache entry, a failed self-test)."""
import ctypes

import numpy as np
import pytest
import torch

import wideNN as wn
from wideNN import _native
from wideNN import activations as A
from wideNN._fused import fused_kernels

mp = pytest.importorskip("mpmath")

LIB = _native.library()
needs_lib = pytest.mark.skipif(LIB is None, reason="no C compiler: the torch passes are used")


@pytest.fixture
def torch_passes(monkeypatch):
    """The fused path without the compiled layers (as on a machine without a compiler)."""
    monkeypatch.setattr(_native, "_state", {"lib": None})


def _points(rng):
    u = rng.uniform(-1.0, 1.0, 2000)
    near = 10.0 ** rng.uniform(-16, 0, 500)
    return {
        "wn_acos_array": (mp.acos, np.concatenate([u, 1 - near, -1 + near, [1.0, -1.0, 0.5, -0.5, 0.0]])),
        "wn_asin_array": (mp.asin, np.concatenate([u, 1 - near, 10.0 ** rng.uniform(-300, 0, 300)])),
        "wn_atan_array": (mp.atan, np.concatenate([3 * u, 10.0 ** rng.uniform(-300, 300, 500),
                                                   -(10.0 ** rng.uniform(-20, 20, 300))])),
        "wn_expm1_array": (mp.expm1, np.concatenate([2 * u, 10.0 ** rng.uniform(-300, 0, 300),
                                                     -(10.0 ** rng.uniform(-300, 0, 300)),
                                                     rng.uniform(-320, 320, 500)])),
    }


@needs_lib
def test_elementwise_functions_within_two_ulps_of_mpmath():
    mp.mp.dps = 30
    for name, (ref_fn, x) in _points(np.random.default_rng(0)).items():
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        getattr(LIB, name)(x.ctypes.data, y.ctypes.data, x.size)
        ref = np.array([float(ref_fn(mp.mpf(float(v)))) for v in x])
        ulps = np.abs(y - ref) / np.spacing(np.abs(ref))
        # the polynomial fits are good to ~1e-17; the argument reductions add at most one
        # rounding each (measured: acos 1, asin/atan/expm1 2)
        assert ulps.max() <= 2.0, (name, ulps.max(), x[ulps.argmax()])


CLOSED = ["relu", "leaky_relu", "abs", "step", "erf", "gelu", "sin", "cos", "identity"]


def _inputs():
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(70, 11, dtype=torch.float64, generator=g)
    x2 = torch.randn(45, 11, dtype=torch.float64, generator=g)
    x1[9] = x1[2]  # coincident, off the diagonal
    x2[4] = x1[7]  # coincident across the sets
    return x1, x2


def _kernels(x1, x2, activation, dtype, depth=4, block=32):
    out = fused_kernels(x1.to(dtype), None if x2 is None else x2.to(dtype), A.get(activation),
                        depth, 1.7, 0.1, True, True, block)
    assert out is not None
    return out


@needs_lib
@pytest.mark.parametrize("activation", CLOSED)
def test_compiled_layers_equal_the_torch_passes(activation, monkeypatch):
    x1, x2 = _inputs()
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 2e-6)):
        for other in (None, x2):
            with_lib = _kernels(x1, other, activation, dtype)
            with monkeypatch.context() as m:
                m.setattr(_native, "_state", {"lib": None})
                without = _kernels(x1, other, activation, dtype)
            for a, b in zip(with_lib, without):
                assert a.dtype == dtype
                # relative to the largest entry: identity kernels have entries near zero
                err = float((a.double() - b.double()).abs().max() / b.double().abs().max())
                assert err < tol, (activation, dtype, other is None, err)
                if other is None:
                    assert torch.equal(a, a.T)


@needs_lib
def test_relu_coincident_points_stay_exact_with_the_compiled_layers():
    """Coincident rows (within and across the sets) give exactly the diagonal value at depth 20
    (the near-one correction must still run on the tiles that need it)."""
    x1, x2 = _inputs()
    k, t = _kernels(x1, x2, "relu", torch.float64, depth=20, block=16)
    kd, td = _kernels(x1, None, "relu", torch.float64, depth=20, block=16)
    assert float(k[7, 4]) == pytest.approx(float(kd[7, 7]), rel=4e-16)
    assert float(t[7, 4]) == pytest.approx(float(td[7, 7]), rel=4e-16)
    assert float(kd[2, 9]) == pytest.approx(float(kd[2, 2]), rel=4e-16)


@needs_lib
def test_public_relu_kernels_route_to_the_tiles_and_match_the_recursion(torch_passes):
    """Without the library small ReLU kernels take the recursion; the compiled tiles must give
    the same numbers (the public entry point, both paths)."""
    x1, x2 = _inputs()
    arch = wn.Architecture(3, "relu", 2.0, 0.1)
    ref = arch.kernels(x1, x2)
    _native._state["lib"] = LIB
    got = arch.kernels(x1, x2)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_without_a_compiler_the_library_is_none(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("WIDENN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert _native.library() is None
    x1, x2 = _inputs()
    # the kernels still come (torch passes)
    k, t = wn.Architecture(3, "relu", 2.0, 0.1).kernels(x1, x2)
    assert torch.isfinite(k).all() and torch.isfinite(t).all()


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("WIDENN_NATIVE", "0")
    assert _native.library() is None


@needs_lib
def test_a_damaged_cache_entry_is_rebuilt_and_a_failed_self_test_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WIDENN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_native, "_state", {})
    path = _native._library_path()
    path.write_bytes(b"not a shared library")  # e.g. a disk that filled up mid-write
    assert _native.library() is not None
    assert path.stat().st_size > 1000 and len(list(tmp_path.iterdir())) == 1  # no temporaries left
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setattr(_native, "_self_test", lambda lib: False)
    assert _native.library() is None


@needs_lib
def test_row_sums_of_squares_and_their_finiteness_flag():
    x = torch.randn(37, 19, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        xs = x.to(dtype).clone()
        out = torch.empty(37, dtype=dtype)
        fn = LIB.row_sumsq_f64 if dtype == torch.float64 else LIB.row_sumsq_f32
        assert fn(ctypes.c_void_p(xs.data_ptr()), 37, 19, 19, ctypes.c_void_p(out.data_ptr())) == 1
        torch.testing.assert_close(out.double(), (x * x).sum(-1), rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
        xs[5, 3] = float("nan")
        assert fn(ctypes.c_void_p(xs.data_ptr()), 37, 19, 19, ctypes.c_void_p(out.data_ptr())) == 0


@needs_lib
@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
def test_inputs_whose_squared_norm_is_extreme_but_kernel_moderate(activation):
    """σ_w² = 1e-200 with |x| ~ 1e100: |x|² is far outside the moderate range (the compiled
    path must not multiply the raw inputs), the kernel is not; equal to the generic path."""
    from wideNN.analytic import _Recursion, _generic_tiled
    x1, x2 = _inputs()
    x1, x2 = x1 * 1e100, x2 * 1e100
    out = fused_kernels(x1, x2, A.get(activation), 3, 1e-200, 0.1, True, True, 32)
    assert out is not None
    ref = _generic_tiled(_Recursion(A.get(activation), 3, 1e-200, 0.1), x1, x2, 16)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
