"""The :class:`Split` container and the Lee et al. (2018) subset protocol.

A training subset of size ``n`` takes the first ``n / num_classes`` examples of each
class, in pool order (:func:`balanced_subset_indices`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._checks import check_int
from .targets import NUM_CLASSES, ONE_HOT_NEGATIVE, ONE_HOT_POSITIVE, one_hot


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split.

    ``x_*``: ``(N, D)`` inputs. ``y_*``: ``(N, O)`` regression targets (one-hot targets for
    classification, ``(N, 1)`` for UCI regression). ``labels_*``: ``(N,)`` integer classes,
    or ``None`` for regression. ``meta``: provenance (source, indices, statistics, ...).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)


def balanced_subset_indices(labels: np.ndarray | torch.Tensor, n: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Indices of the first ``n / num_classes`` examples of each class, in order.

    The Lee et al. (2018) subset protocol. Returned indices are sorted (pool order).
    Raises ``ValueError`` if ``n`` is not a positive multiple of ``num_classes`` or some
    class has fewer than ``n / num_classes`` examples.
    """
    # labels may live on a GPU; numpy needs them on the host
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    num_classes = check_int("num_classes", num_classes)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise TypeError(f"labels must be a 1-D array of integer classes, got {labels.dtype} of shape "
                        f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % num_classes:
        raise ValueError(f"n (the subset size) must be a positive multiple of {num_classes}, got {n!r}")
    per_class = n // num_classes
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    short = [f"class {c} ({idx.size})" for c, idx in enumerate(by_class) if idx.size < per_class]
    if short:
        raise ValueError(
            f"n={n} needs {per_class} examples of each class; too few in the pool for "
            + ", ".join(short)
        )
    chosen = [idx[:per_class] for idx in by_class]
    return np.sort(np.concatenate(chosen))


def _first_n(total: int, n: int | None, what: str) -> int:
    if n is None:
        return total
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= total:
        raise ValueError(f"{what} must be an integer in [1, {total}] or None, got {n!r}")
    return int(n)


def _classification_split(
    x_pool: np.ndarray,
    labels_pool: np.ndarray,
    x_test: np.ndarray,
    labels_test: np.ndarray,
    scale: float,
    dtype: torch.dtype,
    meta: dict,
) -> Split:
    # Only the selected rows are converted, so a 1k subset of MNIST never builds a
    # 60k x 784 float64 array.
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float64) / scale).to(dtype)

    lab_tr = torch.from_numpy(labels_pool.astype(np.int64))
    lab_te = torch.from_numpy(labels_test.astype(np.int64))
    meta = dict(meta, encoding=(ONE_HOT_POSITIVE, ONE_HOT_NEGATIVE), num_classes=NUM_CLASSES)
    return Split(
        x_train=tensor(x_pool),
        y_train=one_hot(lab_tr, NUM_CLASSES, dtype=dtype),
        x_test=tensor(x_test),
        y_test=one_hot(lab_te, NUM_CLASSES, dtype=dtype),
        labels_train=lab_tr,
        labels_test=lab_te,
        meta=meta,
    )
