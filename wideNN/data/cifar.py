"""CIFAR-10 from the ``cifar-10-batches-py`` pickles or the partial npz, with the
Lee et al. (2018) 45k pool; inputs flattened channel-major (``C, H, W``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from .._checks import check_float_dtype
from ._files import PathLike, _RestrictedUnpickler, as_path, verify_md5
from .split import Split, _classification_split, _first_n, balanced_subset_indices

CIFAR10_PARTIAL_NAME = "cifar10_exact_partial.npz"
CIFAR10_PARTIAL_MD5 = "be0f6f0e15edaac8f75c49912ccc022b"
CIFAR10_BATCH_DIR = "cifar-10-batches-py"
# Published per-file md5s of the python version of CIFAR-10 (cs.toronto.edu/~kriz/cifar.html).
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_POOL_SIZE = 45_000
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def _load_cifar_batch(path: Path, md5: str) -> tuple[np.ndarray, np.ndarray]:
    verify_md5(path, md5)  # before anything touches the pickle
    with open(path, "rb") as f:
        obj = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: missing 'data' or 'labels'")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: unexpected shapes data {data.shape}, labels {labels.shape}")
    return data, labels


def _find_cifar(root: Path, source: str) -> tuple[str, Path]:
    if source not in ("auto", "full", "partial"):
        raise ValueError(f"source must be 'auto', 'full' or 'partial', got {source!r}")
    if not root.exists():
        raise FileNotFoundError(f"CIFAR-10 root does not exist: {root}")
    full = [root, root / CIFAR10_BATCH_DIR, root / "cifar10" / CIFAR10_BATCH_DIR]
    partial = [root, root / CIFAR10_PARTIAL_NAME, root / "cifar10" / CIFAR10_PARTIAL_NAME]
    if source in ("auto", "full"):
        for c in full:
            if (c / "data_batch_1").is_file():
                return "full", c
    if source in ("auto", "partial"):
        for c in partial:
            if c.is_file() and c.name == CIFAR10_PARTIAL_NAME:
                return "partial", c
    raise FileNotFoundError(
        f"no CIFAR-10 data ({CIFAR10_BATCH_DIR}/ or cifar10/{CIFAR10_PARTIAL_NAME}) under {root}"
    )


def load_cifar10(
    root: PathLike,
    n_train: int | None = None,
    n_test: int | None = None,
    dtype: torch.dtype = torch.float64,
    source: str = "auto",
    subset: str = "protocol",
) -> Split:
    """CIFAR-10 from a standard ``cifar-10-batches-py`` folder or the partial npz.

    ``root`` may be the batch folder itself, a folder containing it (directly or under
    ``cifar10/``), the npz file, or a folder containing ``cifar10/cifar10_exact_partial.npz``.
    ``source="auto"`` prefers the full batches; ``"full"``/``"partial"`` force one.
    Every file's md5 is verified before it is parsed; batch pickles are additionally read
    with an unpickler that resolves nothing but numpy arrays and plain containers.

    ``n_train=None``: the whole 45k pool (first 45k training images); otherwise the Lee et
    al. subset (first ``n_train/10`` of each class in pool order). The partial file holds
    only the first 1017 images of each training batch, so it serves exactly those subsets
    whose images it contains (``n_train <= 860``); larger ones raise ``ValueError`` rather
    than silently returning a different subset. ``subset="available"`` instead takes the
    first ``n_train/10`` of each class *among the images the source holds* (pool order):
    identical to the protocol with the full batches, and a same-size balanced subset of the
    partial file (e.g. CIFAR:1k), recorded in ``meta["subset"]``. ``n_test=None``: the whole test set the
    source holds (10k full, 1017 partial); otherwise the first ``n_test`` test images.
    ``x``: ``(N, 3072)`` pixel / 255, flattened channel-major (``C, H, W``) for both sources.
    """
    check_float_dtype(dtype)
    if subset not in ("protocol", "available"):
        raise ValueError(f"subset must be 'protocol' or 'available', got {subset!r}")
    kind, path = _find_cifar(as_path("root", root), source)
    if kind == "full":
        parts = [_load_cifar_batch(path / f"data_batch_{i}", CIFAR10_BATCH_MD5[f"data_batch_{i}"])
                 for i in range(1, 6)]
        x_all = np.concatenate([p[0] for p in parts])
        lab_all = np.concatenate([p[1] for p in parts])
        x_te, lab_te = _load_cifar_batch(path / "test_batch", CIFAR10_BATCH_MD5["test_batch"])
        have_train = np.arange(x_all.shape[0])
        rows_of = lambda idx: x_all[idx]  # noqa: E731
    else:
        verify_md5(path, CIFAR10_PARTIAL_MD5)
        with np.load(path, allow_pickle=False) as z:
            x_part = z["x_train"].transpose(0, 3, 1, 2).reshape(-1, 3072)  # HWC -> CHW
            lab_all = z["y_train_all"].astype(np.int64)
            have_train = z["train_index"].astype(np.int64)
            x_te = z["x_test"].transpose(0, 3, 1, 2).reshape(-1, 3072)
            lab_te = z["y_test"].astype(np.int64)
            test_index = z["test_index"].astype(np.int64)
            y_part = z["y_train"].astype(np.int64)
        if not (np.array_equal(lab_all[have_train], y_part)
                and np.array_equal(test_index, np.arange(test_index.size))):
            raise ValueError(f"{path}: inconsistent indices/labels inside the partial file")
        row = np.full(lab_all.shape[0], -1, dtype=np.int64)
        row[have_train] = np.arange(have_train.size)
        rows_of = lambda idx: x_part[row[idx]]  # noqa: E731

    pool = lab_all[:CIFAR10_POOL_SIZE]
    if n_train is None:
        train_index = np.arange(CIFAR10_POOL_SIZE)
    elif subset == "available":
        present = np.intersect1d(have_train, np.arange(CIFAR10_POOL_SIZE))
        train_index = present[balanced_subset_indices(pool[present], n_train)]
    else:
        # The subset is chosen from the labels of the *whole* pool, so the partial file
        # yields exactly the images the full dataset would.
        train_index = balanced_subset_indices(pool, n_train)
    missing = np.setdiff1d(train_index, have_train)
    if missing.size:
        raise ValueError(
            f"the partial CIFAR-10 file {path} lacks {missing.size} of the {train_index.size} "
            f"images of the n_train={n_train} subset (first missing: training index "
            f"{int(missing[0])}); it serves n_train <= 860. Use a full {CIFAR10_BATCH_DIR} folder."
        )
    k = _first_n(x_te.shape[0], n_test, "n_test")
    return _classification_split(
        rows_of(train_index), lab_all[train_index], x_te[:k], lab_te[:k], 255.0, dtype,
        {"dataset": "cifar10", "source": str(path), "kind": kind, "train_index": train_index,
         "test_index": np.arange(k), "pool_size": CIFAR10_POOL_SIZE, "classes": CIFAR10_CLASSES,
         "layout": "CHW", "subset": subset},
    )
