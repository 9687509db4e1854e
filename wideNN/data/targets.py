"""Classification targets: the zero-mean one-hot encoding of Lee et al. (2018) and accuracy.

Classification is treated as regression on ``y = one_hot(labels)`` (``0.9`` for the true
class, ``-0.1`` elsewhere) for GP inference and MSE training; :func:`accuracy` reads the
class back as the ``argmax`` of a prediction.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .._checks import check_int

NUM_CLASSES = 10
ONE_HOT_POSITIVE = 0.9
ONE_HOT_NEGATIVE = -0.1


def one_hot(
    labels: torch.Tensor | Sequence[int],
    num_classes: int,
    positive: float = ONE_HOT_POSITIVE,
    negative: float = ONE_HOT_NEGATIVE,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Targets ``y[i, c] = positive if c == labels[i] else negative``, shape ``(N, num_classes)``.

    The defaults give the zero-mean encoding of Lee et al. (2018) for 10 classes
    (``0.9`` true class, ``-0.1`` elsewhere; each row sums to ``0.9 - 0.9 = 0``), which
    treats classification as regression for GP inference and MSE training.
    """
    from .._checks import real_number

    for name, v in (("positive", positive), ("negative", negative)):
        if not math.isfinite(real_number(name, v)):
            raise ValueError(f"{name} must be finite, got {v!r}")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"labels must be a tensor or a sequence of integer classes, got "
                        f"{type(labels).__name__}") from None
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    num_classes = check_int("num_classes", num_classes)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    y = torch.full((labels.shape[0], num_classes), float(negative), dtype=dtype, device=labels.device)
    y[torch.arange(labels.shape[0], device=labels.device), labels.long()] = float(positive)
    return y


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose ``argmax`` over the last dimension equals ``labels``.

    ``pred``: ``(N, C)`` scores (network outputs, GP means or one-hot targets);
    ``labels``: ``(N,)`` integer classes. Ties resolve to the lowest index.
    """
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
    if pred.ndim != 2:
        raise ValueError(f"pred must be (N, C), got shape {tuple(pred.shape)}")
    labels = torch.as_tensor(labels, device=pred.device)
    if labels.ndim != 1 or labels.shape[0] != pred.shape[0]:
        raise ValueError(
            f"labels must be ({pred.shape[0]},) to match pred, got shape {tuple(labels.shape)}"
        )
    if pred.shape[0] == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((pred.argmax(dim=-1) == labels.long()).double().mean())
