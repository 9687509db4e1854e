"""Cross pairs of identical inputs (a row of x2 equal to a row of x1) equal the diagonal of the
kernel of x1 with itself, on every path and at every input scale (wideNN._equal_rows)."""
import pytest
import torch

import wideNN as wn
from wideNN._equal_rows import equal_rows, identical_pairs

F64 = torch.float64


def _inputs(scale, dtype=F64):
    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(6, 9, generator=g, dtype=dtype) * scale
    x1[4] = x1[1]  # a repeated row of x1: both copies pair with its match in x2
    x2 = torch.cat([torch.randn(2, 9, generator=g, dtype=dtype) * scale, x1[1:2], x1[3:4]])
    x2[3, 0] = -0.0 if float(x1[3, 0]) == 0.0 else x2[3, 0]
    return x1, x2


@pytest.mark.parametrize("act", ["erf", "gelu", "sin", "cos", "relu", "abs", "identity"])
@pytest.mark.parametrize("scale", [1.0, 1e5, 1e7])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_identical_cross_pairs_equal_the_diagonal(act, scale, param):
    """erf's NTK at |x| ~ 1e7 was 2 % off at such entries (sin 4e-6 at 1e5): the tile's k12
    differs from the row sums' k11 by rounding, and these duals' coincident form rests on
    k11 k22 − k12²."""
    x1, x2 = _inputs(scale)
    kw = dict(depth=3, activation=act, weight_variance=1.5, bias_variance=0.1, parameterization=param)
    if param == "standard":
        kw["widths"] = [64, 64, 64]
    k, th = wn.analytic.kernels(x1, x2, **kw)
    kd, thd = wn.analytic.kernels(x1, **kw)
    for i, j in ((1, 2), (4, 2), (3, 3)):
        torch.testing.assert_close(k[i, j], kd[i, i], rtol=1e-13, atol=0)
        torch.testing.assert_close(th[i, j], thd[i, i], rtol=1e-13, atol=0)


def test_pairs_are_found_exactly_and_only_where_rows_are_equal():
    x1, x2 = _inputs(1.0)
    i, j = identical_pairs(x1, x2)
    assert sorted(zip(i.tolist(), j.tolist())) == [(1, 2), (3, 3), (4, 2)]
    neg = x1.clone()
    neg[0, 0] = 0.0
    other = neg[:1].clone()
    other[0, 0] = -0.0  # equal as numbers: the same input
    assert equal_rows(neg, other) is not None
    nudged = x1[:1].clone()
    nudged[0, 5] = torch.nextafter(nudged[0, 5], torch.tensor(10.0, dtype=F64))
    assert equal_rows(x1, nudged) is None
    assert equal_rows(x1.float(), x1[2:3].float()) is not None


@pytest.mark.parametrize("act", ["erf", "sin", "gelu", "relu"])
@pytest.mark.parametrize("readout", ["pool", "flatten"])
def test_layered_identical_cross_pairs_equal_the_diagonal(act, readout):
    """A convolutional description: an example of x2 equal to one of x1 (|x| ~ 1e7, where erf's
    pooled NTK was 0.7 % off at that entry) gives the diagonal of K(x1, x1)."""
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 2, 5, 4, generator=g, dtype=F64)
    x1[1] *= 1e7
    x2 = torch.cat([torch.randn(1, 2, 5, 4, generator=g, dtype=F64), x1[1:2]])
    head = [wn.GlobalAvgPool()] if readout == "pool" else [wn.Flatten()]
    desc = wn.Serial(wn.Conv(3), act, wn.Conv(3), act, *head, wn.Dense(),
                     weight_variance=3.0, bias_variance=0.0)
    k, th = desc.kernels(x1, x2)
    kd, thd = desc.kernels(x1)
    torch.testing.assert_close(k[1, 1], kd[1, 1], rtol=1e-13, atol=0)
    torch.testing.assert_close(th[1, 1], thd[1, 1], rtol=1e-13, atol=0)
