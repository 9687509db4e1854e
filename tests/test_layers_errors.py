"""Bad descriptions and bad inputs give clear errors naming the layer and the shapes."""
import pytest
import torch
from torch import nn

import wideNN as wn
from wideNN.layers import LayerError

X1D = torch.randn(3, 2, 5, dtype=torch.float64)
X2D = torch.randn(3, 2, 4, 4, dtype=torch.float64)


def test_layer_errors_are_value_errors():
    assert issubclass(LayerError, ValueError)


@pytest.mark.parametrize("arch, x, match", [
    # a kernel larger than the input with "valid" padding, also nested (the path is named)
    (wn.Serial(wn.Conv(7, padding="valid"), wn.Flatten(), wn.Dense()), X1D,
     r"layer 0 \(Conv\): Conv kernel_size \(7,\) is larger than the input's spatial shape \(5,\) with padding='valid'"),
    (wn.Serial(wn.Conv(3), "relu", wn.Serial(wn.Conv(2), wn.Conv((5, 2), padding="valid")), wn.Flatten(), wn.Dense()), X2D,
     r"layer 2 \(Serial\) > layer 1 \(Conv\): Conv kernel_size \(5, 2\) is larger than the input's spatial shape \(4, 4\)"),
    # strides and pooling windows that do not fit
    (wn.Serial(wn.Conv(3, stride=6), wn.Flatten(), wn.Dense()), X1D,
     r"layer 0 \(Conv\): Conv stride \(6,\) is larger than the input's spatial shape \(5,\)"),
    (wn.Serial(wn.Conv(3), wn.AvgPool(3), wn.AvgPool(2), wn.Flatten(), wn.Dense()), X1D,
     r"layer 2 \(AvgPool\): AvgPool kernel_size \(2,\) is larger than the input's spatial shape \(1,\)"),
    (wn.Serial(wn.Conv(3), wn.AvgPool(4, stride=8, padding="same"), wn.Flatten(), wn.Dense()), X2D,
     r"layer 1 \(AvgPool\): AvgPool stride \(8, 8\) is larger than the input's spatial shape \(4, 4\)"),
    (wn.Serial(wn.Conv(13, padding="circular"), wn.Flatten(), wn.Dense()), X1D,
     r"layer 0 \(Conv\): Conv kernel_size \(13,\) wraps more than once around the input's spatial shape \(5,\)"),
    # window tuples of the wrong length (wrong ndim)
    (wn.Serial(wn.Conv((3, 3)), wn.Flatten(), wn.Dense()), X1D,
     r"layer 0 \(Conv\): kernel_size \(3, 3\) has 2 entries but the input has 1 spatial dimension"),
    (wn.Serial(wn.Conv(3), wn.Dense()), X1D,
     r"layer 1 \(Dense\): Dense needs flat inputs \(C,\) per example, got shape \((\?|4), 5\); put Flatten\(\)"),
    (wn.Serial(wn.Dense(), wn.Conv(3)), torch.randn(3, 4, dtype=torch.float64),
     r"layer 1 \(Conv\): Conv needs inputs \(C, L\) or \(C, H, W\) per example, got shape \((\?|4),\)"),
    (wn.Serial(wn.GlobalAvgPool(), wn.Dense()), torch.randn(3, 4, dtype=torch.float64),
     r"layer 0 \(GlobalAvgPool\): GlobalAvgPool needs spatial inputs"),
    # a residual block whose output shape differs, or that does not end in a linear layer
    (wn.Serial(wn.Conv(3), wn.Residual(wn.Serial("relu", wn.Conv(3, padding="valid"))), wn.Flatten(), wn.Dense()), X1D,
     r"layer 1 \(Residual\): the residual block maps shape \((\?|4), 5\) to \((\?|4), 3\); x \+ block\(x\) needs the same shape"),
    (wn.Serial(wn.Conv(3), wn.Residual(wn.Serial(wn.Conv(3), "relu")), wn.Flatten(), wn.Dense()), X1D,
     r"layer 1 \(Residual\): a residual block must end in a Dense or Conv"),
    (wn.Serial(wn.Conv(3), wn.Residual(wn.Serial(wn.Conv(3), wn.AvgPool(2))), wn.Flatten(), wn.Dense()), X1D,
     r"layer 1 \(Residual\): a residual block must end in a Dense or Conv"),
    # activations need Gaussian inputs
    (wn.Serial("relu", wn.Dense()), torch.randn(3, 4, dtype=torch.float64),
     r"layer 0 \(ReLU\): the dual kernel of an activation is exact for Gaussian pre-activations only"),
    (wn.Serial(wn.Conv(3), "relu", wn.activations.Erf(), wn.Flatten(), wn.Dense()), X1D,
     r"layer 2 \(Erf\): the dual kernel of an activation"),
])
def test_description_errors_name_the_layer_and_shapes(arch, x, match):
    with pytest.raises(LayerError, match=match):
        arch.kernels(x)
    with pytest.raises(LayerError, match=match):
        arch.build(tuple(x.shape[1:]), width=4, out_features=2)


def test_residual_channel_mismatch_at_build():
    arch = wn.Serial(wn.Conv(3), wn.Residual(wn.Serial("relu", wn.Conv(3, channels=7))), wn.GlobalAvgPool(), wn.Dense())
    arch.kernels(X1D)  # the kernel does not depend on channel counts
    with pytest.raises(LayerError, match=r"layer 1 \(Residual\): the residual block maps shape \(16, 5\) to \(7, 5\)"):
        arch.build((2, 5), width=16, out_features=3)


def test_built_network_checks_its_input_shape():
    net = wn.Serial(wn.Conv(3), "relu", wn.GlobalAvgPool(), wn.Dense()).build((3, 8, 8), width=4, out_features=2)
    with pytest.raises(ValueError, match=r"inputs have shape \(5, 1, 8, 8\) but the network was built for in_shape=\(3, 8, 8\)"):
        net(torch.randn(5, 1, 8, 8))


@pytest.mark.parametrize("x1, x2, match", [
    (torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(3, 2, 6, dtype=torch.float64), "different feature sizes"),
    (torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(3, 3, 5, dtype=torch.float64), r"different per-example shapes: \(2, 5\) vs \(3, 5\)"),
    (torch.randn(3, 2, 2, 2, 5, dtype=torch.float64), None, r"x1 must be \(N, C\), \(N, C, L\) or \(N, C, H, W\)"),
    (torch.randn(5, dtype=torch.float64), None, "x1 must have shape"),
    (torch.full((3, 2, 5), float("nan"), dtype=torch.float64), None, "NaN"),
])
def test_bad_inputs(x1, x2, match):
    arch = wn.Serial(wn.Conv(3), "relu", wn.Flatten(), wn.Dense())
    with pytest.raises(ValueError, match=match):
        arch.kernels(x1, x2)


def test_bad_arguments():
    with pytest.raises(TypeError, match="x1 must be a floating-point tensor"):
        wn.Serial(wn.Conv(3), wn.Flatten(), wn.Dense()).kernels(torch.ones(3, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="diag=True needs x1 and x2 of the same shape"):
        wn.Serial(wn.Conv(3), wn.Flatten(), wn.Dense()).kernels(X1D, X1D[:2], diag=True)
    with pytest.raises(TypeError, match=r"layer 1: expected a wideNN layer"):
        wn.Serial(wn.Dense(), nn.ReLU(), wn.Dense())
    with pytest.raises(ValueError, match=r"layer 1: unknown activation 'rleu'"):
        wn.Serial(wn.Dense(), "rleu", wn.Dense())
    with pytest.raises(ValueError, match="Serial needs at least one layer"):
        wn.Serial()
    with pytest.raises(ValueError, match="Conv padding must be one of"):
        wn.Conv(3, padding="full")
    with pytest.raises(ValueError, match="AvgPool padding must be one of"):
        wn.AvgPool(2, padding=1)
    with pytest.raises(ValueError, match="Conv kernel_size must be a positive integer"):
        wn.Conv(0)
    with pytest.raises(TypeError, match="Conv stride must be an integer"):
        wn.Conv(3, stride=1.5)
    with pytest.raises(ValueError, match="Dense weight_variance must be non-negative"):
        wn.Dense(weight_variance=-1.0)
    with pytest.raises(TypeError, match="Conv bias_variance must be a number"):
        wn.Conv(3, bias_variance="0.1")
    with pytest.raises(ValueError, match="Serial parameterization must be 'ntk' or 'standard'"):
        wn.Serial(wn.Dense(), parameterization="mup")
    with pytest.raises(ValueError, match=r"in_shape must be \(C,\), \(C, L\) or \(C, H, W\)"):
        wn.Serial(wn.Dense()).build((1, 2, 3, 4), width=3, out_features=1)
    with pytest.raises(TypeError, match="width must be an integer"):
        wn.Serial(wn.Dense()).build(3, width=2.5, out_features=1)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        wn.Serial(wn.Dense()).kernels(torch.randn(3, 2), block_size=0)


def test_standard_ntk_needs_the_width():
    arch = wn.Serial(wn.Conv(3), "relu", wn.Flatten(), wn.Dense(), parameterization="standard")
    arch.nngp(X1D)  # the NNGP does not depend on the widths
    with pytest.raises(ValueError, match=r"layer 3 \(Dense\): the standard-parameterization NTK depends on the channel counts: pass width="):
        arch.ntk(X1D)
    assert arch.ntk(X1D, width=8).shape == (3, 3)
    # the shorthand's keyword: one width for every hidden layer
    assert torch.equal(arch.ntk(X1D, widths=[8, 8]), arch.ntk(X1D, width=8))
    assert torch.equal(arch.kernels(X1D, widths=8)[1], arch.ntk(X1D, width=8))
    with pytest.raises(ValueError, match="one hidden width for every layer"):
        arch.ntk(X1D, widths=[8, 9])
