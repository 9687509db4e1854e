"""Regressions from the differential fuzzers (tests/_diff_fuzz.py against neural-tangents,
tests/_diff_fuzz_predict.py against 40-digit mpmath): edge-but-valid inputs that gave silently
wrong answers."""
import numpy as np
import pytest
import torch

import wideNN as wn
from wideNN.linalg import cholesky

D64 = torch.float64


def _duplicated(seed, d=3, n=5, outputs=2):
    """Training inputs with x[3] = x[1] (conflicting targets), test inputs containing x[1]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[3] = x[1]
    y = rng.standard_normal((n, outputs))
    xt = np.concatenate([x[[1, 2]], rng.standard_normal((2, d))])
    return torch.tensor(x), torch.tensor(y), torch.tensor(xt)


def _merged_reference(kern, x, y, xt):
    """The t → ∞ gradient-flow mean: least squares fits the duplicated pair at the mean of its
    two targets, so it is the mean of the de-duplicated, non-singular problem."""
    keep = [0, 1, 2, 4]
    ym = y[keep].clone()
    ym[1] = 0.5 * (y[1] + y[3])
    k = kern(x[keep], None).numpy()
    kx = kern(xt, x[keep]).numpy()
    return kx @ np.linalg.solve(k, ym.numpy())


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flow_limit_with_duplicated_inputs_and_no_noise_is_the_large_t_limit(act, seed):
    # was: a Cholesky accepted at zero jitter (erf, up to 35 % off) or a jitter of 1e-10
    # (ReLU, ~1e-6 off), while every large finite t gave the pseudo-inverse answer
    arch = wn.Architecture(depth=2, activation=act, weight_variance=1.7, bias_variance=0.1)
    x, y, xt = _duplicated(seed)
    for kernel, kern in (("ntk", arch.ntk), ("nngp", arch.nngp)):
        ref = _merged_reference(kern, x, y, xt)
        for t in (float("inf"), 1e30):
            mean = wn.posterior(arch, x, y, xt, kernel=kernel, t=t).mean.numpy()
            np.testing.assert_allclose(mean, ref, rtol=0, atol=1e-11 * np.abs(y.numpy()).max(),
                                       err_msg=f"{kernel} t={t}")
    mean = wn.posterior(arch, x, y, xt, kernel="ntk").mean.numpy()       # t=None is t → ∞
    np.testing.assert_allclose(mean, _merged_reference(arch.ntk, x, y, xt), rtol=0, atol=1e-11)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_cholesky_refuses_a_factor_of_a_numerically_singular_matrix(seed):
    # LAPACK factors the NTK of duplicated inputs at zero jitter with a smallest pivot² of a few
    # n·ε (above the pivot test alone); solves with that factor are rounding noise
    arch = wn.Architecture(depth=2, activation="erf", weight_variance=1.7, bias_variance=0.1)
    x, y, xt = _duplicated(seed)
    th = arch.ntk(x)
    _, jitter = cholesky(th)
    assert jitter > 0
    # so the Bayesian posterior with this matrix is the documented jittered one, not noise
    pred = wn.Predictor.from_matrices(y, nngp_train=th, kernel="nngp", factorization="cholesky")
    mean = pred.predict(wn.QueryKernels(nngp_test_train=arch.ntk(xt, x), nngp_test_diag=arch.ntk(xt, diag=True))).mean
    ref = _merged_reference(arch.ntk, x, y, xt)
    np.testing.assert_allclose(mean.numpy(), ref, rtol=0, atol=1e-4)


def test_well_conditioned_kernels_keep_zero_jitter():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g, dtype=D64)
    arch = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
    for m in (arch.nngp(x), arch.ntk(x), arch.nngp(x) + 1e-8 * torch.eye(40, dtype=D64)):
        assert cholesky(m)[1] == 0.0


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs"])
@pytest.mark.parametrize("bias", [0.0, 1e-300, 0.1])
def test_exactly_negated_inputs_have_the_exact_arc_cosine_kernels(act, bias):
    # x' = −x has correlation exactly −1 (θ = π); the fused tiles left −1 + ulps, which arccos
    # turns into θ = π − 1.5e-8: ReLU's NTK was −5e-3 instead of 0 at σ_w² = 1000 (4e-9 of the
    # diagonal).  The generic path (a tensor weight variance) snaps ±1 and is the reference.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=D64)
    x2 = torch.cat([-x[:3], torch.randn(2, 5, generator=g, dtype=D64)])
    for w, depth in ((1000.0, 1), (2.0, 3)):
        fused = wn.Architecture(depth=depth, activation=act, weight_variance=w, bias_variance=bias)
        generic = wn.Architecture(depth=depth, activation=act, weight_variance=torch.tensor(w, dtype=D64),
                                  bias_variance=bias)
        scale = (fused.ntk(x, diag=True)[:, None] * fused.ntk(x2, diag=True)[None]).sqrt()
        for a, b in zip(fused.kernels(x, x2), generic.kernels(x, x2)):
            assert float(((a - b).abs() / scale).max()) < 1e-13
    if act == "relu" and bias == 0.0:    # x, −x: both ReLU kernels vanish exactly at depth 1
        k, th = wn.Architecture(depth=1, activation="relu", weight_variance=1000.0,
                                bias_variance=0.0).kernels(x[:3], -x[:3], diag=True)
        assert float(k.abs().max()) == 0.0 and float(th.abs().max()) == 0.0


@pytest.mark.parametrize("act", ["erf", "sin", "gelu"])
@pytest.mark.parametrize("readout", ["pool", "flatten"])
def test_layered_self_kernel_does_not_depend_on_the_batch_at_large_inputs(act, readout):
    """The coincident entries of a diagonal tile take the self pass's variances bitwise (erf and
    sin were 0.9–1.1 % off at |x| ~ 1e7, the tile's k12 differing from k11 by rounding)."""
    from _layers_reference import dense_reference
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 5, 4, generator=g, dtype=D64)
    x[1] *= 1e7
    head = [wn.GlobalAvgPool()] if readout == "pool" else [wn.Flatten()]
    desc = wn.Serial(wn.Conv(3, padding="same"), act, wn.Conv(3, padding="same"), act, *head,
                     wn.Dense(), weight_variance=3.0, bias_variance=0.0)
    alone = desc.ntk(x[1:])[0, 0]
    ref = dense_reference(desc, x)[1][1, 1]          # independent: agrees with the single example
    torch.testing.assert_close(alone, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(desc.ntk(x, diag=True)[1], ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(desc.ntk(x)[1, 1], ref, rtol=1e-10, atol=0)
