"""Integer arguments are never silently truncated, and the remaining bad-input paths of the
data helpers, hyperparameter fitting and GPyTorch kernels name the offending argument."""
import numpy as np
import pytest
import torch

import wideNN as wn
from wideNN import data as wd
from wideNN._checks import check_int


@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), (np.int64(4), 4), (torch.tensor(5), 5)])
def test_check_int_accepts_integers(value, expected):
    assert check_int("n", value) == expected


@pytest.mark.parametrize("value", [2.5, "3", True, None, torch.tensor(2.0), float("nan"), float("inf")])
def test_check_int_rejects_non_integers(value):
    with pytest.raises(TypeError, match="n must be an integer"):
        check_int("n", value)


def test_check_int_bounds():
    assert check_int("seed", -7, minimum=None) == -7
    with pytest.raises(ValueError, match="n must be a positive integer"):
        check_int("n", 0)
    with pytest.raises(ValueError, match=">= 2"):
        check_int("q", 1, minimum=2)


def test_fractional_seed_width_and_blocks_are_rejected():
    arch = wn.Architecture(depth=1)
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="seed"):
        arch.build(3, 8, 1, seed=1.5)
    assert torch.equal(arch.build(3, 8, 1, seed=2.0)[0].weight, arch.build(3, 8, 1, seed=2)[0].weight)
    with pytest.raises(TypeError, match="block_size"):
        arch.nngp(x, block_size=2.5)
    with pytest.raises(TypeError, match="widths"):
        wn.Architecture(depth=1, parameterization="standard").ntk(x, widths=[10.5])
    with pytest.raises(TypeError, match="quadrature_degree"):
        wn.activations.get("tanh").__class__(quadrature_degree=7.5)
    y = torch.randn(5, dtype=torch.float64)
    with pytest.raises(TypeError, match="test_block_size"):
        wn.posterior(arch, x, y, x, kernel="nngp", test_block_size=1.5)
    with pytest.raises(TypeError, match="seed"):
        wn.empirical_nngp(arch, x, width=16, n_samples=2, seed=0.5)


def test_data_helpers_reject_degenerate_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        wd.balanced_subset_indices(np.arange(10) % 2, 4, num_classes=0)
    x = torch.randn(6, 3, dtype=torch.float64)
    stats = wd.Standardization.fit(x)
    for bad in (wd.Standardization(stats.mean, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)),
                wd.Standardization(stats.mean, -stats.std),
                wd.Standardization(torch.full((3,), float("nan"), dtype=torch.float64), stats.std)):
        with pytest.raises(ValueError, match="stats"):
            wd.preprocess(x, "standardize", stats=bad)
    # the valid statistics still round-trip
    assert torch.allclose(wd.preprocess(x, "standardize", stats=stats), stats.apply(x))


def test_fit_hyperparameters_rejects_negative_bounds():
    x = torch.randn(8, 2, dtype=torch.float64)
    y = torch.randn(8, dtype=torch.float64)
    with pytest.raises(ValueError, match="min_noise"):
        wn.fit_hyperparameters(wn.Architecture(depth=1), x, y, steps=1, min_noise=-1e-3, progress=False)


def test_gpytorch_kernel_names_integer_inputs():
    kern = wn.NNGPKernel(wn.Architecture(depth=2))
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor"):
        kern(torch.ones(3, 2, dtype=torch.long)).to_dense()
