"""The empirical NTK of wide random networks built by ``.build`` approaches the analytic NTK:
its mean over networks within Monte Carlo tolerance, its error shrinking like width^(-1/2).

Tolerances as in tests/test_layers_montecarlo.py: 4 standard errors of the mean over networks
plus a finite-width bias allowance O(activations/width).
"""
import math

import pytest
import torch

import wideNN as wn
from test_layers_montecarlo import BIAS, NNGP_CASES, inputs


def empirical_ntk_mean(arch, x, width, nets, **build):
    vals = []
    for s in range(nets):
        net = arch.build(tuple(x.shape[1:]), width=width, out_features=2, seed=100 + s, dtype=torch.float64, **build)
        vals.append(wn.empirical_ntk(net, x, mode="trace"))
    vals = torch.stack(vals)
    return vals.mean(0), vals.std(0) / math.sqrt(nets)


@pytest.mark.parametrize("name, param", [("residual-avgpool-gap", "ntk"), ("conv-same-even-stride-erf-flatten", "ntk"),
                                         ("conv-same-even-stride-erf-flatten", "standard")])
def test_ntk_is_the_mean_empirical_ntk_of_wide_networks(name, param):
    arch, shape = NNGP_CASES[name]
    arch = arch.replace(parameterization=param)
    x = inputs(shape, n=3)
    width = 256
    theta = arch.ntk(x, width=width)
    est, se = empirical_ntk_mean(arch, x, width, nets=24)
    allowed = 4 * se + BIAS * arch.plan(shape).n_activations / width * theta.abs().max()
    err = (est - theta).abs()
    assert bool((err <= allowed).all()), f"{name}/{param}: max err/allowed {float((err / allowed).max()):.2f}"
    assert float(allowed.max() / theta.abs().max()) < 0.1


@pytest.mark.slow
def test_empirical_ntk_error_shrinks_like_inverse_sqrt_width():
    """Relative Frobenius error of one network's empirical NTK (mean over seeds) against the
    CNTK for channels 32 … 512: log-log slope ≈ −1/2 (fluctuations O(width^(-1/2)))."""
    arch, shape = NNGP_CASES["residual-avgpool-gap"]
    x = inputs(shape, n=4)
    theta = arch.ntk(x)
    widths = [32, 64, 128, 256, 512]
    errs = []
    for width in widths:
        e = [float(torch.linalg.norm(wn.empirical_ntk(
            arch.build(shape, width=width, out_features=1, seed=s, dtype=torch.float64), x, mode="trace") - theta)
            / torch.linalg.norm(theta)) for s in range(8)]
        errs.append(sum(e) / len(e))
    lw, le = torch.tensor(widths, dtype=torch.float64).log(), torch.tensor(errs).log()
    slope = float(((lw - lw.mean()) * (le - le.mean())).sum() / ((lw - lw.mean()) ** 2).sum())
    assert -0.7 < slope < -0.3, (slope, errs)
