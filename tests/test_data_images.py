"""wd.to_images: rows back to (N, C, H, W), area downsampling, preprocessing, bad input."""
import pytest
import torch

from wideNN import data as wd


def test_reshape_downsample_and_preprocess():
    x = torch.rand(3, 2 * 6 * 6, dtype=torch.float64)
    img = wd.to_images(x, 2)
    assert img.shape == (3, 2, 6, 6) and torch.equal(img.flatten(1), x)   # channel-major rows
    small = wd.to_images(x, 2, side=3)
    # each output pixel is the mean of its 2×2 block
    torch.testing.assert_close(small[1, 1, 2, 0], x[1].view(2, 6, 6)[1, 4:6, 0:2].mean())
    odd = wd.to_images(x, 2, side=4)           # 6 → 4: windows [floor(6i/4), ceil(6(i+1)/4)) per axis
    torch.testing.assert_close(odd[0, 1, 1, 3], img[0, 1, 1:3, 4:6].mean())
    cn = wd.to_images(x, 2, side=3, preprocessing="center_norm")
    torch.testing.assert_close(cn.flatten(1).norm(dim=1), torch.full((3,), 18 ** 0.5, dtype=torch.float64))
    assert cn.flatten(1).mean(1).abs().max() < 1e-12


def test_bad_input():
    x = torch.rand(2, 50, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        wd.to_images(x, 3)
    with pytest.raises(ValueError, match="larger"):
        wd.to_images(x, 2, side=6)
    with pytest.raises(TypeError, match="channels"):
        wd.to_images(x, 2.5)
    with pytest.raises(ValueError):
        wd.to_images(torch.rand(2, 2, 5, 5), 2)
