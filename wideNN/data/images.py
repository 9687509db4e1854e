"""Flattened image rows back to channel-first images, optionally downsampled.

The classification loaders return ``(N, D)`` rows (MNIST ``28·28``, CIFAR-10 ``3·32·32``
channel-major); convolutional descriptions take ``(N, C, H, W)``.  ``to_images`` reshapes and,
for cheap experiments, shrinks the side by averaging (``torch.nn.functional.interpolate(mode="area")``,
i.e. adaptive average pooling: output pixel i along an axis of S → s is the mean of input pixels
floor(S·i/s) … ceil(S·(i+1)/s) − 1, exact block means when s divides S), then applies the same
per-example preprocessing as the flat inputs (``preprocess``, e.g. ``"center_norm"`` over all
C·H·W values of an image).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_int
from .preprocessing import _check_matrix, preprocess

__all__ = ["to_images"]


def to_images(x: torch.Tensor, channels: int, side: int | None = None,
              preprocessing: str = "none") -> torch.Tensor:
    """``(N, C·S·S)`` rows → ``(N, C, side, side)`` images (``side=None``: S, unchanged).

    Raises ``ValueError`` when D is not C times a square, or ``side`` is not in [1, S].
    """
    _check_matrix(x, "x")
    channels = check_int("channels", channels)
    n, d = x.shape
    s = math.isqrt(d // channels) if d % channels == 0 else 0
    if s == 0 or channels * s * s != d:
        raise ValueError(f"x has rows of {d} values are not {channels} channels of a square image")
    img = x.reshape(n, channels, s, s)
    if side is not None:
        side = check_int("side", side)
        if side > s:
            raise ValueError(f"side={side} is larger than the images' side {s}; only downsampling is supported")
        if side != s:
            img = F.interpolate(img, size=(side, side), mode="area")
    if preprocessing != "none":
        img = preprocess(img.reshape(n, -1), preprocessing).reshape(img.shape)
    return img.contiguous()
