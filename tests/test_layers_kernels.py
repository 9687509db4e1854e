"""Analytic kernels of composed layers against hand-written cases and an independent
dense-matrix reference (tests/_layers_reference.py), plus their invariances and numerics."""
import math

import pytest
import torch

import wideNN as wn
from _layers_reference import dense_reference

W, B = 1.7, 0.3


def xy():
    """Two 1-D examples with one channel over 3 positions: x = (x0, x1, x2), y = (y0, y1, y2)."""
    x = torch.tensor([[[0.5, -1.2, 2.0]]], dtype=torch.float64)
    y = torch.tensor([[[1.5, 0.4, -0.7]]], dtype=torch.float64)
    return x, y


def conv_flatten(padding, stride=1):
    return wn.Serial(wn.Conv(3, stride=stride, padding=padding), wn.Flatten(), wn.Dense(),
                     weight_variance=W, bias_variance=B)


# ----------------------------------------------------------------------------- written out by hand
@pytest.mark.parametrize("padding", ["same", "valid", "circular"])
def test_conv_over_three_positions_by_hand(padding):
    x, y = xy()
    p = (x * y)[0, 0]  # products x_i y_i: the only entries a "flatten" readout needs
    if padding == "same":      # zero padded: the end positions see two of the three products
        per_pos = [p[0] + p[1], p[0] + p[1] + p[2], p[1] + p[2]]
    else:                      # valid: one position sees all three; circular: all three see all
        per_pos = [p.sum()] * (1 if padding == "valid" else 3)
    k1 = [B + W / 3 * s for s in per_pos]            # conv: σ_b² + σ_w²/k Σ_i K0[p+i, p+i]
    nngp = B + W * sum(k1) / len(k1)                 # flatten + dense: mean over positions
    ntk = nngp + W * sum(k1) / len(k1)               # Θ = K + σ_w² · mean_p Θ1[p, p], Θ1 = K1
    k, t = conv_flatten(padding).kernels(x, y)
    assert k.item() == pytest.approx(float(nngp), rel=1e-14)
    assert t.item() == pytest.approx(float(ntk), rel=1e-14)


def test_strided_same_conv_by_hand():
    x, y = xy()
    p = (x * y)[0, 0]
    # L = 3, stride 2: 2 outputs, total padding (2-1)·2 + 3 - 3 = 2 → one zero each side;
    # output 0 reads positions {-1, 0, 1}, output 1 reads {1, 2, 3}
    k1 = [B + W / 3 * (p[0] + p[1]), B + W / 3 * (p[1] + p[2])]
    nngp = B + W * (k1[0] + k1[1]) / 2
    assert conv_flatten("same", stride=2).nngp(x, y).item() == pytest.approx(float(nngp), rel=1e-14)


def test_pooling_and_gap_by_hand():
    """GAP sums every position pair; AvgPool(2) averages 2×2 blocks of the position covariance."""
    x, y = xy()
    k0 = x[0, 0][:, None] * y[0, 0][None, :]                  # K0[p, p'] = x_p y_p'
    gap = wn.Serial(wn.GlobalAvgPool(), wn.Dense(), weight_variance=W, bias_variance=B)
    assert gap.nngp(x, y).item() == pytest.approx(float(B + W * k0.sum() / 9), rel=1e-14)
    # valid pooling with window 2, stride 1: outputs (0, 1), each the mean of two positions
    pool = wn.Serial(wn.AvgPool(2, stride=1), wn.GlobalAvgPool(), wn.Dense(), weight_variance=W,
                     bias_variance=B)
    a = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    pooled = a @ k0 @ a.T
    assert pool.nngp(x, y).item() == pytest.approx(float(B + W * pooled.mean()), rel=1e-14)
    flat = wn.Serial(wn.AvgPool(2, stride=1), wn.Flatten(), wn.Dense(), weight_variance=W,
                     bias_variance=B)
    assert flat.nngp(x, y).item() == pytest.approx(float(B + W * pooled.diagonal().mean()), rel=1e-14)


def test_relu_after_conv_by_hand():
    """ReLU between two convolutions: arc-cosine kernel of each position pair, with the
    per-position variances of each example; a final GAP needs every pair."""
    x, y = xy()
    arch = wn.Serial(wn.Conv(1), "relu", wn.GlobalAvgPool(), wn.Dense(), weight_variance=W, bias_variance=B)
    kxy = B + W * x[0, 0][:, None] * y[0, 0][None, :]
    vx, vy = B + W * x[0, 0] ** 2, B + W * y[0, 0] ** 2
    s = torch.sqrt(vx[:, None] * vy[None, :])
    c = (kxy / s).clamp(-1, 1)
    th = torch.arccos(c)
    t = s / (2 * math.pi) * (torch.sqrt(1 - c * c) + (math.pi - th) * c)
    td = (math.pi - th) / (2 * math.pi)
    nngp = B + W * t.mean()
    ntk = nngp + W * (td * kxy).mean()
    k, tt = arch.kernels(x, y)
    assert k.item() == pytest.approx(float(nngp), rel=1e-13)
    assert tt.item() == pytest.approx(float(ntk), rel=1e-13)


# ----------------------------------------------------------------------------- dense reference
ARCHS_1D = {
    "conv-relu-conv-erf-flatten": wn.Serial(wn.Conv(3), "relu", wn.Conv(3, stride=2, padding="valid"), "erf",
                                            wn.Flatten(), wn.Dense(), bias_variance=0.1),
    "residual-pool-gap": wn.Serial(
        wn.Conv(3), wn.activations.ReLU(), wn.Residual(wn.Serial(wn.Conv(3), "relu", wn.Conv(3))),
        wn.AvgPool(2, padding="same"), wn.GlobalAvgPool(), wn.Dense(), weight_variance=1.5, bias_variance=0.1),
    "preactivation-residual-tanh": wn.Serial(
        wn.Conv(3), wn.Residual(wn.Serial("relu", wn.Conv(3), "relu", wn.Conv(3))),
        wn.AvgPool(2, padding="same"), "tanh", wn.GlobalAvgPool(), wn.Dense(), bias_variance=0.1),
    "circular-pool-valid-gap": wn.Serial(wn.Conv(2, padding="circular"), "relu",
                                         wn.AvgPool(3, stride=1, padding="circular"),
                                         wn.Conv(3, padding="valid"), "relu", wn.GlobalAvgPool(), wn.Dense()),
    "per-layer-variances": wn.Serial(wn.Conv(3, weight_variance=0.7, bias_variance=0.4), "relu",
                                     wn.Serial(wn.Conv(2, padding="valid"), "leaky_relu", weight_variance=3.0),
                                     wn.Flatten(), wn.Dense(bias_variance=0.0), "erf", wn.Dense(),
                                     weight_variance=1.2, bias_variance=0.05),
}


def test_flat_residual_mlp_matches_dense_reference():
    """Residual blocks of Dense layers on flat inputs (not the MLP pattern: the generic path)."""
    torch.manual_seed(2)
    x = torch.randn(5, 3, dtype=torch.float64)
    arch = wn.Serial(wn.Dense(), wn.Residual(wn.Serial("relu", wn.Dense(), "erf", wn.Dense())),
                     wn.Residual(wn.Serial("relu", wn.Dense())), wn.Residual(wn.Serial(wn.Dense(), "relu", wn.Dense())),
                     "relu", wn.Dense(), bias_variance=0.1)
    k, t = arch.kernels(x)
    kr, tr = dense_reference(arch, x)
    torch.testing.assert_close(k, kr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(t, tr, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ARCHS_1D))
def test_matches_dense_reference_1d(name):
    torch.manual_seed(0)
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    k, t = ARCHS_1D[name].kernels(x)
    kr, tr = dense_reference(ARCHS_1D[name], x)
    # tanh's duals are quadratures whose node count follows the largest variance of each call,
    # and the two implementations group entries into calls differently: agreement to the
    # quadrature error (≲ 1e-10 at these variances), closed forms to rounding
    rtol = 1e-9 if "tanh" in name else 1e-12
    torch.testing.assert_close(k, kr, rtol=rtol, atol=1e-14)
    torch.testing.assert_close(t, tr, rtol=rtol, atol=1e-14)


def test_matches_dense_reference_2d():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    arch = wn.Serial(wn.Conv((2, 3), stride=(2, 1), padding="circular"), "relu",
                     wn.AvgPool((2, 2), stride=1, padding="same"), wn.Conv(3, stride=2),
                     wn.Residual(wn.Serial("relu", wn.Conv((1, 2)))), "relu", wn.GlobalAvgPool(), wn.Dense(),
                     bias_variance=0.2)
    k, t = arch.kernels(x)
    kr, tr = dense_reference(arch, x)
    torch.testing.assert_close(k, kr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(t, tr, rtol=1e-12, atol=1e-14)


def test_matches_dense_reference_2d_flatten_readout():
    """Diagonal layout throughout (a flatten readout), with strides and circular padding."""
    torch.manual_seed(3)
    x = torch.randn(3, 3, 5, 6, dtype=torch.float64)
    arch = wn.Serial(wn.Conv((3, 2), stride=(2, 1), padding="circular"), "relu", wn.Conv(2, stride=2, padding="valid"),
                     "erf", wn.Conv((1, 3)), wn.Flatten(), wn.Dense(), "relu", wn.Dense(), bias_variance=0.3)
    assert not arch.plan((3, 5, 6)).in_full
    k, t = arch.kernels(x)
    kr, tr = dense_reference(arch, x)
    torch.testing.assert_close(k, kr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(t, tr, rtol=1e-12, atol=1e-14)


def test_spatial_output_gives_per_position_kernels():
    """A description ending in a convolution returns the kernel of each output position;
    flattening averages them."""
    torch.manual_seed(4)
    x = torch.randn(4, 2, 3, 5, dtype=torch.float64)
    body = [wn.Conv(3), "relu", wn.Conv((2, 2), padding="valid")]
    k, t = wn.Serial(*body).kernels(x)
    assert k.shape == (4, 4, 2, 4) and t.shape == (4, 4, 2, 4)
    kf, tf = wn.Serial(*body, wn.Flatten()).kernels(x)
    torch.testing.assert_close(kf, k.mean((-2, -1)), rtol=1e-14, atol=0)
    torch.testing.assert_close(tf, t.mean((-2, -1)), rtol=1e-14, atol=0)
    kd, _ = wn.Serial(*body).kernels(x, diag=True)
    torch.testing.assert_close(kd, torch.stack([k[i, i] for i in range(4)]), rtol=1e-14, atol=0)
