"""MNIST from the four original idx gzip files, with the Lee et al. (2018) 50k pool."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .._checks import check_float_dtype, check_int
from ._files import PathLike, as_path, verify_md5
from .split import Split, _classification_split, _first_n, balanced_subset_indices

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_POOL_SIZE = 50_000


def _read_idx_gz(path: Path, expected_ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    # idx header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    # then one big-endian uint32 per dimension.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_ndim:
        raise ValueError(f"{path}: not a uint8 idx file with {expected_ndim} dimensions")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=expected_ndim, offset=4))
    offset = 4 + 4 * expected_ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, payload has {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _find_mnist_dir(root: Path) -> Path:
    if not root.exists():
        raise FileNotFoundError(f"MNIST root does not exist: {root}")
    candidates = [root, root / "mnist", root / "MNIST" / "raw", root / "MNIST"]
    for c in candidates:
        if (c / "train-images-idx3-ubyte.gz").is_file():
            return c
    raise FileNotFoundError(
        f"no MNIST idx files (train-images-idx3-ubyte.gz, ...) in {root} or its "
        "'mnist/', 'MNIST/raw/' or 'MNIST/' subfolder"
    )


def load_mnist(
    root: PathLike,
    n_train: int | None = None,
    n_test: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Split:
    """MNIST from the four original idx gzip files in ``root`` (or ``root/mnist``, ``root/MNIST/raw``).

    All four md5s are verified against the published values before parsing.
    ``n_train=None``: the whole 50k pool (the first 50k training images, not class-balanced);
    otherwise the Lee et al. subset (first ``n_train/10`` of each class in the pool;
    ``n_train`` a multiple of 10, at most 45,060: class 5 has 4,506 pool images).
    ``n_test=None``: all 10k test images; otherwise the first ``n_test``.
    ``x``: ``(N, 784)`` pixel / 255 in ``[0, 1]``. ``meta["train_index"]``: indices into the
    60k training set.
    """
    check_float_dtype(dtype)
    for arg, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None:
            check_int(arg, v)
    folder = _find_mnist_dir(as_path("root", root))
    for name, md5 in MNIST_MD5.items():
        verify_md5(folder / name, md5)
    x_all = _read_idx_gz(folder / "train-images-idx3-ubyte.gz", 3)
    lab_all = _read_idx_gz(folder / "train-labels-idx1-ubyte.gz", 1)
    x_te = _read_idx_gz(folder / "t10k-images-idx3-ubyte.gz", 3)
    lab_te = _read_idx_gz(folder / "t10k-labels-idx1-ubyte.gz", 1)
    if x_all.shape[0] != lab_all.shape[0] or x_te.shape[0] != lab_te.shape[0]:
        raise ValueError(f"{folder}: image and label counts differ")

    pool = lab_all[:MNIST_POOL_SIZE]
    train_index = np.arange(MNIST_POOL_SIZE) if n_train is None else balanced_subset_indices(pool, n_train)
    k = _first_n(x_te.shape[0], n_test, "n_test")
    return _classification_split(
        x_all[train_index], lab_all[train_index], x_te[:k], lab_te[:k], 255.0, dtype,
        {"dataset": "mnist", "source": str(folder), "train_index": train_index,
         "test_index": np.arange(k), "pool_size": MNIST_POOL_SIZE},
    )
