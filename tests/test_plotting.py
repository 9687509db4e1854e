"""wideNN.plotting: inputs may be lists, arrays or tensors (CUDA ones included)."""
import numpy as np
import pytest
import torch

from wideNN import plotting as wp


class _DeviceScalar:
    """Stands in for a 0-d CUDA tensor: numpy's own conversion (``__array__``) fails, as
    ``Tensor.__array__`` does for CUDA tensors; ``.detach().cpu()`` works."""

    def __init__(self, v):
        self.v = v

    def detach(self):
        return self

    def cpu(self):
        return torch.tensor(self.v)

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


def test_to_numpy_of_tensors_and_lists_of_tensors():
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(wp.to_numpy(t), [1.0, 2.0])
    np.testing.assert_array_equal(wp.to_numpy([1, 2.5]), [1.0, 2.5])
    np.testing.assert_array_equal(wp.to_numpy([torch.tensor(1.0), torch.tensor(3.0)]), [1.0, 3.0])
    # a list of device scalars (e.g. losses collected on the GPU) goes through .cpu()
    np.testing.assert_array_equal(wp.to_numpy([_DeviceScalar(1.0), _DeviceScalar(4.0)]), [1.0, 4.0])
    np.testing.assert_array_equal(wp.to_numpy([[_DeviceScalar(1.0)], [2.0]]), [[1.0], [2.0]])


def test_loglog_fit_accepts_lists_of_device_scalars():
    fig, ax = wp.figure()
    xs = [_DeviceScalar(float(w)) for w in (1, 2, 4, 8)]
    ys = [_DeviceScalar(float(w) ** -0.5) for w in (1, 2, 4, 8)]
    assert wp.loglog_fit(ax, xs, ys) == pytest.approx(-0.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_plotting_accepts_cuda_tensors():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0], device="cuda")
    y = x ** -0.5
    fig, ax = wp.figure()
    assert wp.loglog_fit(ax, x, y) == pytest.approx(-0.5, abs=1e-6)
    assert wp.loglog_fit(ax, list(x), list(y)) == pytest.approx(-0.5, abs=1e-6)  # lists of 0-d CUDA tensors
    wp.band(ax, x, y, 0.1 * y)
    wp.heatmap(ax, torch.ones(2, 4, device="cuda"), x, x[:2])
