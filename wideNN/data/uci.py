"""UCI regression sets (``data.txt`` + column-index files), split 90/10 by seed and
standardized with training statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._checks import check_float_dtype, check_int, real_number
from ._files import PathLike, as_path
from .preprocessing import Standardization
from .split import Split


def _read_int_list(path: Path) -> list[int]:
    if not path.is_file():
        raise FileNotFoundError(f"missing UCI metadata file: {path}")
    return [int(float(t)) for t in path.read_text().split()]


def load_uci(
    root: PathLike,
    name: str,
    split: int = 0,
    dtype: torch.dtype = torch.float64,
    test_fraction: float = 0.1,
) -> Split:
    """A UCI regression set from ``root/uci/<name>/`` or ``root/<name>/``, split 90/10.

    The folder holds ``data.txt`` (whitespace table), ``index_features.txt`` and
    ``index_target.txt`` (0-based column indices) and ``n_splits.txt``. Split ``split``
    (``0 <= split < n_splits``) is a permutation drawn by ``numpy.random.default_rng(split)``:
    its first ``N - round(test_fraction * N)`` rows train, the rest test; the same ``split``
    always gives the same partition. ``x`` and ``y`` are standardized with *training*
    statistics (:class:`Standardization`, zero-std features centred only); ``y`` is ``(N, 1)``.
    ``meta`` holds ``x_stats``, ``y_stats`` (use ``y_stats.invert`` to report errors in
    original units), ``train_index``, ``test_index`` and ``n_splits``. Labels are ``None``.
    """
    check_float_dtype(dtype)
    # the arguments first: a bad one is reported even where the files are missing
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a dataset folder name such as 'boston', got {name!r:.40}")
    check_int("split", split, minimum=0)
    fraction = real_number("test_fraction", test_fraction)
    if not 0 < fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    root = as_path("root", root)
    if not root.exists():
        raise FileNotFoundError(f"UCI root does not exist: {root}")
    folder = next((c for c in (root / "uci" / name, root / name) if (c / "data.txt").is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"no UCI dataset {name!r} (data.txt) in {root / 'uci' / name} or {root / name}")
    features = _read_int_list(folder / "index_features.txt")
    target = _read_int_list(folder / "index_target.txt")
    n_splits = _read_int_list(folder / "n_splits.txt")
    if len(target) != 1 or len(n_splits) != 1 or not features:
        raise ValueError(f"{folder}: expected one target column, one split count and some features")
    n_splits = n_splits[0]
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or not 0 <= split < n_splits:
        raise ValueError(f"split must be an integer in [0, {n_splits}) for {name}, got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    table = np.loadtxt(folder / "data.txt", dtype=np.float64, ndmin=2)
    if max(features + target) >= table.shape[1]:
        raise ValueError(f"{folder}: column index out of range for a table with {table.shape[1]} columns")
    if not np.isfinite(table).all():
        raise ValueError(f"{folder / 'data.txt'}: contains NaN or infinite values")
    n = table.shape[0]
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(f"{folder}: {n} rows cannot be split with test_fraction={test_fraction}")
    perm = np.random.default_rng(split).permutation(n)
    tr, te = perm[: n - n_test], perm[n - n_test:]

    x = torch.from_numpy(table[:, features])
    y = torch.from_numpy(table[:, target[0]: target[0] + 1])
    x_stats = Standardization.fit(x[tr])
    y_stats = Standardization.fit(y[tr])
    cast = lambda s: Standardization(s.mean.to(dtype), s.std.to(dtype))  # noqa: E731
    return Split(
        x_train=x_stats.apply(x[tr]).to(dtype),
        y_train=y_stats.apply(y[tr]).to(dtype),
        x_test=x_stats.apply(x[te]).to(dtype),
        y_test=y_stats.apply(y[te]).to(dtype),
        meta={"dataset": name, "source": str(folder), "split": split, "n_splits": n_splits,
              "train_index": tr, "test_index": te, "x_stats": cast(x_stats), "y_stats": cast(y_stats)},
    )
