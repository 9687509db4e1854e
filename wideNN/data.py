"""Datasets, target encodings and input preprocessing.

Everything here returns ``torch`` tensors and never touches the network: loaders read
files from a path the caller gives (nothing is downloaded, no directory is assumed to
exist), verify checksums *before* parsing, and hand back a :class:`Split`.

Conventions shared by the classification loaders (MNIST, CIFAR-10, bundled digits):

* inputs are flattened to ``(N, D)`` and scaled to ``[0, 1]``; CIFAR-10 is flattened in
  channel-major order (``C, H, W``, as in the original batch files and ``torch`` convs);
* ``y`` holds the regression targets of Lee et al. (2018): one-hot, zero-mean,
  ``0.9`` for the true class and ``-0.1`` elsewhere (:func:`one_hot`);
* ``labels`` holds the integer classes (``torch.long``).

The training subsets follow the protocol of Lee et al. (2018), "Deep neural networks as
Gaussian processes": the first images of the official training set form the pool (50k for
MNIST, 45k for CIFAR-10; the rest is validation) and a subset of size ``n`` takes the first
``n/10`` images of each class, in pool order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ._checks import check_float_dtype, check_int

__all__ = [
    "Split",
    "Standardization",
    "ChecksumError",
    "md5sum",
    "verify_md5",
    "load_digits",
    "train_test_split_digits",
    "load_mnist",
    "load_cifar10",
    "load_uci",
    "balanced_subset_indices",
    "one_hot",
    "preprocess",
    "accuracy",
]

PathLike = str | Path

NUM_CLASSES = 10
ONE_HOT_POSITIVE = 0.9
ONE_HOT_NEGATIVE = -0.1

# Checksums are facts about the published files, so they live in code rather than being
# read from next to the data: a checksum shipped alongside a corrupted file proves nothing.
DIGITS_MD5 = "9b335364a7bfd63947c7480a5bd51f2d"
_DIGITS_FILE = Path(__file__).resolve().parent / "datasets" / "digits.csv.gz"

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_POOL_SIZE = 50_000

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


# --------------------------------------------------------------------------- containers


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


@dataclass(frozen=True, eq=False)
class Standardization:
    """Per-feature affine statistics: ``apply(x) = (x - mean) / std``, ``invert(z) = z * std + mean``.

    ``std`` is the divisor actually used: features with zero spread carry ``std = 1`` so
    they are centred but left unscaled.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> "Standardization":
        """Statistics of the columns of a 2-D tensor (population std, ``ddof=0``)."""
        _check_matrix(x, "x")
        # Constant columns are detected exactly: their float mean can be off by an ulp,
        # which would leave tiny non-zero values instead of an exact zero column.
        constant = (x == x[:1]).all(dim=0)
        mean = torch.where(constant, x[0], x.mean(dim=0))
        std = torch.where(constant, torch.ones_like(mean), x.std(dim=0, correction=0))
        return cls(mean=mean, std=std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)


class ChecksumError(ValueError):
    """A file's md5 does not match the published one; the file was not parsed."""


# --------------------------------------------------------------------------- checksums


def md5sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: PathLike, expected: str) -> Path:
    """Return ``Path(path)`` if its md5 equals ``expected``.

    Raises ``FileNotFoundError`` (naming the path) if it is missing and
    :class:`ChecksumError` if the digest differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file: {path}")
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"md5 mismatch for {path}: expected {expected}, got {actual}; "
            "the file is corrupted or not the published version, refusing to parse it"
        )
    return path


# --------------------------------------------------------------------------- encodings


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
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
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


def preprocess(
    x: torch.Tensor,
    method: str,
    stats: Standardization | None = None,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Standardization | None]:
    """Preprocess a ``(N, d)`` floating tensor; returns a new tensor of the same dtype.

    Methods:

    * ``"none"``: ``x`` unchanged (a copy).
    * ``"center_norm"``: per example, ``x_i <- sqrt(d) * (x_i - mean(x_i)) / ||x_i - mean(x_i)||``,
      so every row has zero mean and norm ``sqrt(d)`` (``x_i . x_i / d = 1``, the scale at which
      the first-layer kernel ``sigma_b^2 + sigma_w^2 x.x'/d`` is order one). This is the
      preprocessing with which the Lee et al. (2018) MNIST accuracies are reproduced.
      Rows that are constant cannot be normalized and raise ``ValueError``.
    * ``"standardize"``: per feature, ``x[:, j] <- (x[:, j] - mean_j) / std_j`` with
      :class:`Standardization` statistics taken from ``stats`` if given (e.g. the training
      set's, to transform a test set) and otherwise fitted on ``x``; zero-std features are
      centred only.

    With ``return_stats=True`` returns ``(x_out, stats)`` where ``stats`` is the
    :class:`Standardization` used (``None`` for the other methods).
    Raises ``ValueError`` for an unknown method, a tensor that is not 2-D, NaN or infinite
    entries, or ``stats`` whose size does not match ``d``; ``TypeError`` for non-float input.
    """
    _check_matrix(x, "x")
    if method == "none":
        out, used = x.clone(), None
    elif method == "center_norm":
        centred = x - x.mean(dim=1, keepdim=True)
        norms = centred.norm(dim=1, keepdim=True)
        # A relative threshold: a row of float noise around a constant is still "constant".
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        bad = (norms <= 10 * torch.finfo(x.dtype).eps * scale * x.shape[1] ** 0.5).flatten()
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:10].tolist()
            raise ValueError(f"center_norm: rows {rows} are constant and cannot be normalized")
        out, used = centred * (x.shape[1] ** 0.5 / norms), None
    elif method == "standardize":
        if stats is None:
            used = Standardization.fit(x)
        else:
            if stats.mean.shape != (x.shape[1],) or stats.std.shape != (x.shape[1],):
                raise ValueError(
                    f"stats are for {tuple(stats.mean.shape)} features, x has {x.shape[1]}"
                )
            if not (bool(torch.isfinite(stats.mean).all()) and bool(torch.isfinite(stats.std).all())):
                raise ValueError("stats.mean and stats.std must be finite")
            if bool((stats.std <= 0).any()):
                raise ValueError(f"stats.std must be positive (the divisor; constant features carry 1), "
                                 f"got minimum {float(stats.std.min()):.3g}")
            used = stats
        out = used.apply(x)
    else:
        raise ValueError(
            f"unknown preprocessing method {method!r}; expected 'none', 'center_norm' or 'standardize'"
        )
    return (out, used) if return_stats else out


def _check_matrix(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")


# --------------------------------------------------------------------------- subsets


def balanced_subset_indices(labels: np.ndarray | torch.Tensor, n: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Indices of the first ``n / num_classes`` examples of each class, in order.

    The Lee et al. (2018) subset protocol. Returned indices are sorted (pool order).
    Raises ``ValueError`` if ``n`` is not a positive multiple of ``num_classes`` or some
    class has fewer than ``n / num_classes`` examples.
    """
    labels = np.asarray(labels)
    num_classes = check_int("num_classes", num_classes)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % num_classes:
        raise ValueError(f"subset size must be a positive multiple of {num_classes}, got {n!r}")
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


# --------------------------------------------------------------------------- digits


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
    check_float_dtype(dtype)
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


# --------------------------------------------------------------------------- MNIST


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
        "'mnist/' or 'MNIST/raw/' subfolder"
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
    folder = _find_mnist_dir(Path(root))
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


# --------------------------------------------------------------------------- CIFAR-10


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled dict of numpy arrays needs; anything else is refused."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        # Python 3 writes bytes in protocol <= 2 as _codecs.encode(str, "latin1").
        ("_codecs", "encode"),
    }
    # Containers and literals only: never eval/exec/getattr/__import__ and friends.
    _SAFE_BUILTINS = {
        "dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray",
        "str", "int", "float", "complex", "bool", "slice", "range",
    }

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in self._SAFE_BUILTINS:
            return super().find_class("builtins", name)
        if (module, name) in self._ALLOWED:
            # Old pickles name numpy.core, which numpy 2 only keeps as a deprecated alias.
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module[len("numpy.core."):]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data file")


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
    kind, path = _find_cifar(Path(root), source)
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


# --------------------------------------------------------------------------- UCI


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
    root = Path(root)
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
