"""Monte Carlo over wide random finite networks built by ``.build``: their output covariance
approaches the analytic NNGP (the NTK: tests/test_layers_empirical_ntk.py).

Tolerances: the estimate is a mean over independent networks, so its standard error (SE) is
the spread of the per-network values / √nets, measured in the test; on top of sampling error
the finite-width bias of both kernels is O(depth/width) relative (Jensen gaps of the duals,
e.g. Yaida 2020 "Non-Gaussian processes and neural networks at finite widths"), allowed as
``BIAS · activations / width · max|K|``.  4 SE + that bias; the tests' seeds are fixed.
"""

import pytest
import torch

import wideNN as wn
from _layers_reference import mc_nngp

BIAS = 2.0

NNGP_CASES = {
    # every layer type, 1-D and 2-D, all three paddings, strides, even kernels
    "conv-same-even-stride-erf-flatten": (
        wn.Serial(wn.Conv(2), "relu", wn.Conv(3, stride=2, padding="valid"), "erf", wn.Flatten(), wn.Dense(),
                  bias_variance=0.1), (2, 6)),
    "residual-avgpool-gap": (
        wn.Serial(wn.Conv(3), "relu", wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
                  wn.AvgPool(2, padding="same"), wn.GlobalAvgPool(), wn.Dense(), weight_variance=1.5,
                  bias_variance=0.1), (2, 5)),
    "circular-2d-pool-flatten": (
        wn.Serial(wn.Conv((2, 3), padding="circular"), "relu", wn.AvgPool(2, stride=1, padding="circular"),
                  wn.Conv(2, stride=2), "tanh", wn.Flatten(), wn.Dense(), bias_variance=0.2), (2, 4, 4)),
    "dense-mixed-activations": (
        wn.Serial(wn.Dense(), "relu", wn.Dense(weight_variance=1.0), "erf", wn.Residual(wn.Dense()), wn.Dense(),
                  bias_variance=0.1), (5,)),
}


def n_activations(arch):
    return arch.plan(NNGP_CASES_SHAPE[id(arch)]).n_activations


NNGP_CASES_SHAPE = {id(a): s for a, s in NNGP_CASES.values()}


def inputs(shape, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.8 * torch.randn(n, *shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(NNGP_CASES))
def test_nngp_is_the_output_covariance_of_wide_networks(name):
    arch, shape = NNGP_CASES[name]
    x = inputs(shape)
    width = 256
    k = arch.nngp(x)
    est, se = mc_nngp(arch, x, width=width, out_features=1024, nets=64)
    allowed = 4 * se + BIAS * n_activations(arch) / width * k.abs().max()
    err = (est - k).abs()
    assert bool((err <= allowed).all()), f"{name}: max err/allowed {float((err / allowed).max()):.2f}"
    # precise enough to see a wrong kernel (the test can fail): an error of 10% of the kernel's
    # scale in any entry is rejected
    assert float(allowed.max() / k.abs().max()) < 0.1
