"""The bundled UCI optical-recognition digits (``wideNN/datasets/digits.csv.gz``).

Small enough to ship with the package, so tests and quick experiments run offline.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .._checks import check_float_dtype, check_int
from ._files import verify_md5
from .split import Split, _first_n
from .targets import NUM_CLASSES, ONE_HOT_NEGATIVE, ONE_HOT_POSITIVE, one_hot

# Checksums are facts about the published files, so they live in code rather than being
# read from next to the data: a checksum shipped alongside a corrupted file proves nothing.
DIGITS_MD5 = "9b335364a7bfd63947c7480a5bd51f2d"
_DIGITS_FILE = Path(__file__).resolve().parent.parent / "datasets" / "digits.csv.gz"


def load_digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled UCI optical-recognition digits: ``x`` ``(1797, 64)`` in ``[0, 1]``, labels ``(1797,)``.

    Pixels are the original 0..16 block counts divided by 16, row-major 8x8. Labels are
    ``torch.long`` in 0..9. The file's md5 is verified before parsing (:class:`ChecksumError`).
    """
    check_float_dtype(dtype)
    path = verify_md5(_DIGITS_FILE, DIGITS_MD5)
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    if table.shape != (1797, 65):
        raise ValueError(f"{path}: expected a 1797 x 65 table, got {table.shape}")
    x = torch.from_numpy(table[:, :64] / 16.0).to(dtype)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return x, labels


def _balanced_quota(available: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes as evenly as their ``available`` counts allow.

    Water-filling: every class gets ``floor(n / k)`` (one more for the lowest classes while
    the remainder lasts), capped by what it has; the shortfall is re-spread over the rest.
    """
    quota = np.zeros_like(available)
    remaining = n
    while remaining > 0:
        open_ = np.flatnonzero(quota < available)
        share, extra = divmod(remaining, open_.size)
        for rank, c in enumerate(open_):
            take = min(share + (rank < extra), available[c] - quota[c])
            quota[c] += take
            remaining -= take
    return quota


def train_test_split_digits(
    n_train: int,
    n_test: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Split:
    """A random, class-balanced split of the bundled digits.

    Each class contributes ``n_train // 10`` training examples (the remainder going to
    the lowest classes, and any shortfall of a small class to the others), drawn without
    replacement with ``numpy.random.default_rng(seed)``; the test set is drawn the same
    way from the examples not used for training (``n_test=None``: all of them). Rows keep
    the file's order. ``n_train + n_test`` must not exceed 1797.
    """
    seed = check_int("seed", seed, minimum=0)
    check_int("n_train", n_train)  # a number is required (None would mean "all but one")
    x, labels = load_digits(dtype=dtype)
    total = labels.shape[0]
    n_train = _first_n(total - 1, n_train, "n_train")
    n_test = _first_n(total - n_train, n_test, "n_test")
    rng = np.random.default_rng(seed)
    lab = labels.numpy()
    # One permutation per class, shared by train and test, so the two never overlap.
    perms = [rng.permutation(np.flatnonzero(lab == c)) for c in range(NUM_CLASSES)]
    counts = np.array([p.size for p in perms])
    q_train = _balanced_quota(counts, n_train)
    q_test = _balanced_quota(counts - q_train, n_test)
    tr = np.sort(np.concatenate([p[:q] for p, q in zip(perms, q_train)]))
    te = np.sort(np.concatenate([p[a:a + b] for p, a, b in zip(perms, q_train, q_test)]))
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return Split(
        x_train=x[tr_t],
        y_train=one_hot(labels[tr_t], NUM_CLASSES, dtype=dtype),
        x_test=x[te_t],
        y_test=one_hot(labels[te_t], NUM_CLASSES, dtype=dtype),
        labels_train=labels[tr_t],
        labels_test=labels[te_t],
        meta={
            "dataset": "digits", "seed": seed, "train_index": tr, "test_index": te,
            "encoding": (ONE_HOT_POSITIVE, ONE_HOT_NEGATIVE), "num_classes": NUM_CLASSES,
        },
    )
