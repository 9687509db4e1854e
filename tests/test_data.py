"""Tests for wideNN.data: checksums, subset protocols, encodings, preprocessing, loaders.

Tests that read real MNIST / CIFAR-10 / UCI files use ../shared/data relative to the
repository root and are skipped where that folder is absent.
"""

from __future__ import annotations

import gzip
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wideNN import data as wd
from wideNN.data import cifar as wd_cifar, digits as wd_digits

from _data import DATA as SHARED, missing
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _need(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(missing(sub))
    return path


def _corrupt_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` with one byte flipped in the middle."""
    blob = bytearray(src.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    dst.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def mnist_1k() -> wd.Split:
    return wd.load_mnist(_need("mnist"), n_train=1000, n_test=500)


# --------------------------------------------------------------------------- checksums


def test_verify_md5_accepts_and_rejects(tmp_path):
    good = tmp_path / "digits.csv.gz"
    shutil.copyfile(wd._DIGITS_FILE, good)
    assert wd.verify_md5(good, wd.DIGITS_MD5) == good
    bad = tmp_path / "bad.csv.gz"
    _corrupt_copy(wd._DIGITS_FILE, bad)
    with pytest.raises(wd.ChecksumError, match="md5 mismatch"):
        wd.verify_md5(bad, wd.DIGITS_MD5)
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        wd.verify_md5(tmp_path / "nope.gz", wd.DIGITS_MD5)


def test_load_digits_rejects_corrupted_bundle(tmp_path, monkeypatch):
    bad = tmp_path / "digits.csv.gz"
    _corrupt_copy(wd._DIGITS_FILE, bad)
    monkeypatch.setattr(wd_digits, "_DIGITS_FILE", bad)  # the module load_digits reads it from
    with pytest.raises(wd.ChecksumError):
        wd.load_digits()


def test_mnist_rejects_corrupted_file(tmp_path):
    src = _need("mnist")
    for name in wd.MNIST_MD5:
        shutil.copyfile(src / name, tmp_path / name)
    _corrupt_copy(src / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(wd.ChecksumError, match="t10k-labels"):
        wd.load_mnist(tmp_path, n_train=10)


def test_cifar_partial_rejects_corrupted_file(tmp_path):
    _need("cifar10")
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / wd.CIFAR10_PARTIAL_NAME).write_bytes(b"PK\x03\x04 not the real file")
    with pytest.raises(wd.ChecksumError):
        wd.load_cifar10(tmp_path, n_train=10)


# --------------------------------------------------------------------------- bundled digits


def test_load_digits_shapes_and_values():
    x, labels = wd.load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float64
    assert labels.shape == (1797,) and labels.dtype == torch.long
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # 0..16 counts divided by 16 stay on the 1/16 grid
    assert torch.equal(x * 16, (x * 16).round())
    x32, _ = wd.load_digits(dtype=torch.float32)
    assert x32.dtype == torch.float32


def test_digits_split_balanced_disjoint_deterministic():
    s = wd.train_test_split_digits(100, 50, seed=3)
    assert s.x_train.shape == (100, 64) and s.x_test.shape == (50, 64)
    assert s.y_train.shape == (100, 10)
    assert torch.bincount(s.labels_train, minlength=10).tolist() == [10] * 10
    assert torch.bincount(s.labels_test, minlength=10).tolist() == [5] * 10
    assert not set(s.meta["train_index"]) & set(s.meta["test_index"])
    again = wd.train_test_split_digits(100, 50, seed=3)
    other = wd.train_test_split_digits(100, 50, seed=4)
    assert np.array_equal(s.meta["train_index"], again.meta["train_index"])
    assert not np.array_equal(s.meta["train_index"], other.meta["train_index"])
    assert torch.equal(s.y_train, wd.one_hot(s.labels_train, 10))
    # uneven n: counts differ by at most one
    counts = torch.bincount(wd.train_test_split_digits(95, 7, seed=0).labels_train, minlength=10)
    assert counts.sum() == 95 and int(counts.max() - counts.min()) == 1


def test_digits_split_near_exhaustion_and_errors():
    s = wd.train_test_split_digits(1780, None, seed=0)
    assert s.x_train.shape[0] + s.x_test.shape[0] == 1797
    # class 8 has 174 examples: it gives all it has, the others make up the shortfall
    counts = torch.bincount(s.labels_train, minlength=10)
    assert counts[8] == 174 and int(counts.max()) <= 179
    with pytest.raises(ValueError, match="n_test"):
        wd.train_test_split_digits(1000, 900)
    with pytest.raises(ValueError, match="n_train"):
        wd.train_test_split_digits(0)
    with pytest.raises(ValueError, match="seed"):
        wd.train_test_split_digits(100, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        wd.train_test_split_digits(100, seed=1.5)


# --------------------------------------------------------------------------- encodings


def test_one_hot_values():
    y = wd.one_hot(torch.tensor([2, 0, 9]), 10)
    assert y.shape == (3, 10) and y.dtype == torch.float64
    assert y[0, 2] == 0.9 and y[1, 0] == 0.9 and y[2, 9] == 0.9
    assert (y == -0.1).sum() == 27
    assert torch.allclose(y.sum(dim=1), torch.zeros(3, dtype=y.dtype), atol=1e-12)  # zero-mean encoding
    y01 = wd.one_hot([1, 0], 3, positive=1.0, negative=0.0, dtype=torch.float32)
    assert torch.equal(y01, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize(
    "labels,num_classes",
    [([0, 10], 10), ([-1], 10), (torch.tensor([0.0, 1.0]), 10), (torch.zeros(2, 2, dtype=torch.long), 10)],
)
def test_one_hot_rejects_bad_labels(labels, num_classes):
    with pytest.raises(ValueError):
        wd.one_hot(labels, num_classes)


def test_one_hot_rejects_bad_num_classes():
    with pytest.raises(TypeError, match="num_classes"):
        wd.one_hot([0, 1], 2.5)
    with pytest.raises(ValueError, match="num_classes"):
        wd.one_hot([0], 0)
    assert wd.one_hot([0, 1], 2.0).shape == (2, 2)  # an integral float is an integer


def test_accuracy():
    pred = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert wd.accuracy(pred, torch.tensor([1, 0, 0, 0])) == 0.75
    assert wd.accuracy(wd.one_hot([3, 1], 5), torch.tensor([3, 1])) == 1.0
    with pytest.raises(ValueError):
        wd.accuracy(pred, torch.tensor([1, 0]))
    with pytest.raises(ValueError):
        wd.accuracy(pred[:, 0], torch.tensor([1, 0, 0, 0]))


# --------------------------------------------------------------------------- preprocessing


def test_center_norm_rows_have_zero_mean_and_norm_sqrt_d():
    x, _ = wd.load_digits()
    z = wd.preprocess(x, "center_norm")
    d = x.shape[1]
    assert z.shape == x.shape and z.dtype == x.dtype
    assert torch.allclose(z.norm(dim=1), torch.full((x.shape[0],), math.sqrt(d), dtype=z.dtype))
    assert torch.allclose(z.mean(dim=1), torch.zeros(x.shape[0], dtype=z.dtype), atol=1e-12)
    # scale-invariant per example: only the direction of the centred image survives
    assert torch.allclose(wd.preprocess(3.0 * x + 1.0, "center_norm"), z)
    assert torch.equal(wd.preprocess(x, "none"), x)


def test_standardize_fit_and_reuse():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64) * 3 + 7
    x[:, 4] = 2.5  # constant feature: centred, not scaled
    z, stats = wd.preprocess(x, "standardize", return_stats=True)
    assert torch.allclose(z[:, :4].mean(0), torch.zeros(4, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z[:, :4].std(0, correction=0), torch.ones(4, dtype=z.dtype))
    assert torch.equal(z[:, 4], torch.zeros(200, dtype=z.dtype)) and stats.std[4] == 1
    x_new = torch.randn(10, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(wd.preprocess(x_new, "standardize", stats=stats), (x_new - stats.mean) / stats.std)
    assert torch.allclose(stats.invert(z), x)
    _, none_stats = wd.preprocess(x, "none", return_stats=True)
    assert none_stats is None


def test_preprocess_rejects_bad_input():
    x = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown preprocessing method"):
        wd.preprocess(x, "whiten")
    nan = x.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        wd.preprocess(nan, "center_norm")
    with pytest.raises(ValueError, match="2-D"):
        wd.preprocess(torch.rand(2, 3, 4), "none")
    with pytest.raises(ValueError, match="2-D"):
        wd.preprocess(torch.rand(5), "standardize")
    with pytest.raises(TypeError):
        wd.preprocess(torch.ones(2, 3, dtype=torch.long), "none")
    with pytest.raises(ValueError, match="constant"):
        wd.preprocess(torch.cat([x, torch.full((1, 3), 0.5, dtype=x.dtype)]), "center_norm")
    stats = wd.Standardization.fit(torch.rand(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="features"):
        wd.preprocess(x, "standardize", stats=stats)


# --------------------------------------------------------------------------- subsets


def test_balanced_subset_indices_takes_first_of_each_class():
    labels = np.array([3, 0, 1, 0, 2, 1, 3, 0, 2, 2, 1, 3])
    idx = wd.balanced_subset_indices(labels, 8, num_classes=4)
    assert idx.tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
    assert wd.balanced_subset_indices(torch.from_numpy(labels), 8, num_classes=4).tolist() == idx.tolist()
    with pytest.raises(ValueError, match="multiple"):
        wd.balanced_subset_indices(labels, 6, num_classes=4)
    with pytest.raises(ValueError, match=r"class 0 \(3\)"):
        wd.balanced_subset_indices(labels, 16, num_classes=4)


# --------------------------------------------------------------------------- MNIST


def test_mnist_subset_protocol(mnist_1k):
    s = mnist_1k
    assert s.x_train.shape == (1000, 784) and s.x_test.shape == (500, 784)
    assert s.x_train.dtype == torch.float64 and s.labels_train.dtype == torch.long
    assert torch.bincount(s.labels_train, minlength=10).tolist() == [100] * 10
    assert 0.0 <= float(s.x_train.min()) and float(s.x_train.max()) == 1.0
    assert torch.equal(s.y_train, wd.one_hot(s.labels_train, 10))
    idx = s.meta["train_index"]
    assert idx.max() < 50_000 and np.all(np.diff(idx) > 0)
    pool = wd._read_idx_gz(_need("mnist") / "train-labels-idx1-ubyte.gz", 1)[:50_000]
    for c in range(10):  # exactly the first 100 pool images of each class
        assert np.array_equal(idx[s.labels_train.numpy() == c], np.flatnonzero(pool == c)[:100])
    assert torch.equal(s.labels_test, wd.load_mnist(_need("mnist"), n_train=10, n_test=500).labels_test)


def test_mnist_class_counts_match_readme(tmp_path):
    root = _need("mnist")
    # counts over the full 60k come straight from the verified label files
    labels_all = wd._read_idx_gz(root / "train-labels-idx1-ubyte.gz", 1)
    assert np.bincount(labels_all, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    s = wd.load_mnist(SHARED, n_train=10)  # root containing mnist/ is accepted too
    assert s.x_test.shape == (10000, 784)
    assert torch.bincount(s.labels_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    with pytest.raises(ValueError, match="multiple of 10"):
        wd.load_mnist(root, n_train=15)
    with pytest.raises(ValueError, match=r"class 5 \(4506\)"):
        wd.load_mnist(root, n_train=50_000)  # the pool is not balanced: use n_train=None


def test_loaders_name_missing_paths(tmp_path):
    missing = tmp_path / "no_such_dir"
    for call in (lambda: wd.load_mnist(missing), lambda: wd.load_cifar10(missing),
                 lambda: wd.load_uci(missing, "yacht")):
        with pytest.raises(FileNotFoundError, match="no_such_dir"):
            call()
    with pytest.raises(FileNotFoundError, match="MNIST"):
        wd.load_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_partial_exact_subset():
    _need("cifar10")
    s = wd.load_cifar10(SHARED, n_train=100, n_test=50)
    assert s.x_train.shape == (100, 3072) and s.x_test.shape == (50, 3072)
    assert torch.bincount(s.labels_train, minlength=10).tolist() == [10] * 10
    assert s.meta["kind"] == "partial"
    with np.load(SHARED / "cifar10" / wd.CIFAR10_PARTIAL_NAME) as z:
        first = z["x_train"][s.meta["train_index"][0]]  # train_index[i] == i in the partial file
        # flattened channel-major: the first 1024 values are the red plane
        assert np.allclose(s.x_train[0, :1024].numpy() * 255, first[:, :, 0].ravel())
        assert np.allclose(s.x_train[0, 1024:2048].numpy() * 255, first[:, :, 1].ravel())
        all_labels = z["y_train_all"]
    assert np.array_equal(s.meta["train_index"], wd.balanced_subset_indices(all_labels[:45_000], 100))
    with pytest.raises(ValueError, match="partial CIFAR-10 file"):
        wd.load_cifar10(SHARED, n_train=1000)


def test_cifar_partial_available_subset():
    """subset="available": the protocol's rule among the images present; it equals the exact
    subset wherever that is complete and stays balanced where the partial file is not."""
    _need("cifar10")
    small = wd.load_cifar10(SHARED, n_train=100, n_test=5, subset="available")
    exact = wd.load_cifar10(SHARED, n_train=100, n_test=5)
    assert np.array_equal(small.meta["train_index"], exact.meta["train_index"])
    s = wd.load_cifar10(SHARED, n_train=1000, n_test=5, subset="available")
    assert s.meta["subset"] == "available"
    assert torch.bincount(s.labels_train, minlength=10).tolist() == [100] * 10
    with np.load(SHARED / "cifar10" / wd.CIFAR10_PARTIAL_NAME) as z:
        have, all_labels = z["train_index"], z["y_train_all"]
    idx = s.meta["train_index"]
    assert np.isin(idx, have).all() and (idx < 45_000).all() and np.all(np.diff(idx) > 0)
    assert np.array_equal(all_labels[idx], s.labels_train.numpy())
    # 980 of the 1000 are the paper's own subset (the file lacks the other 20)
    paper = wd.balanced_subset_indices(all_labels[:45_000], 1000)
    assert np.intersect1d(idx, paper).size == 980
    with pytest.raises(ValueError, match="subset must be"):
        wd.load_cifar10(SHARED, n_train=100, subset="random")


def _write_fake_batches(folder: Path, rng: np.random.Generator, n_per: int = 20) -> dict[str, str]:
    folder.mkdir(parents=True)
    md5 = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n_per).tolist(),
               b"data": rng.integers(0, 256, (n_per, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
        md5[name] = wd.md5sum(folder / name)
    return md5


class _Boom:
    def __reduce__(self):
        return (shutil.rmtree, ("/definitely/not/a/real/path",))


def test_cifar_batches_verified_and_restricted(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / wd.CIFAR10_BATCH_DIR
    fake_md5 = _write_fake_batches(folder, rng)
    # the published md5s reject these synthetic files before any unpickling
    with pytest.raises(wd.ChecksumError, match="data_batch_1"):
        wd.load_cifar10(tmp_path, n_train=10)
    monkeypatch.setattr(wd_cifar, "CIFAR10_BATCH_MD5", fake_md5)  # the module load_cifar10 reads them from
    monkeypatch.setattr(wd_cifar, "CIFAR10_POOL_SIZE", 90)
    s = wd.load_cifar10(tmp_path, n_test=7)
    assert s.meta["kind"] == "full" and s.x_train.shape == (90, 3072) and s.x_test.shape == (7, 3072)
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)
    assert np.allclose(s.x_train[:20].numpy() * 255, raw[b"data"])
    # a checksum-valid file holding anything but arrays and containers is still refused
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Boom()}, protocol=2))
    monkeypatch.setitem(fake_md5, "test_batch", wd.md5sum(folder / "test_batch"))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        wd.load_cifar10(folder)


# --------------------------------------------------------------------------- UCI


def test_uci_split_deterministic_90_10():
    _need("uci")
    a = wd.load_uci(SHARED, "concrete", split=2)
    b = wd.load_uci(SHARED / "uci", "concrete", split=2)
    c = wd.load_uci(SHARED, "concrete", split=3)
    n = 1030
    assert a.x_train.shape == (927, 8) and a.x_test.shape == (103, 8)
    assert a.y_train.shape == (927, 1) and a.labels_train is None
    assert len(set(a.meta["train_index"]) | set(a.meta["test_index"])) == n
    assert np.array_equal(a.meta["test_index"], b.meta["test_index"])
    assert torch.equal(a.x_train, b.x_train)
    assert not np.array_equal(a.meta["test_index"], c.meta["test_index"])
    assert a.meta["n_splits"] == 20
    # standardized with training statistics
    assert torch.allclose(a.x_train.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(a.y_train.std(0, correction=0), torch.ones(1, dtype=torch.float64))
    raw = np.loadtxt(SHARED / "uci" / "concrete" / "data.txt")
    y_raw = a.meta["y_stats"].invert(a.y_test).numpy().ravel()
    assert np.allclose(y_raw, raw[a.meta["test_index"], 8])


def test_uci_constant_features_left_unscaled():
    _need("uci")
    s = wd.load_uci(SHARED, "naval-propulsion-plant", split=0, dtype=torch.float32)
    assert s.x_train.dtype == torch.float32
    const = (s.meta["x_stats"].std == 1).nonzero().flatten()
    assert const.numel() >= 1
    assert torch.all(s.x_train[:, const] == 0)
    assert torch.isfinite(s.x_test).all()


def test_uci_bad_arguments(tmp_path):
    root = tmp_path / "uci" / "toy"
    root.mkdir(parents=True)
    rows = np.arange(40, dtype=float).reshape(20, 2) ** 1.5
    np.savetxt(root / "data.txt", rows)
    (root / "index_features.txt").write_text("0\n")
    (root / "index_target.txt").write_text("1\n")
    (root / "n_splits.txt").write_text("3\n")
    s = wd.load_uci(tmp_path, "toy", split=2)
    assert s.x_train.shape == (18, 1) and s.x_test.shape == (2, 1)
    with pytest.raises(ValueError, match=r"split must be an integer in \[0, 3\)"):
        wd.load_uci(tmp_path, "toy", split=3)
    with pytest.raises(FileNotFoundError, match="missing"):
        wd.load_uci(tmp_path, "missing")
    (root / "n_splits.txt").unlink()
    with pytest.raises(FileNotFoundError, match="n_splits.txt"):
        wd.load_uci(tmp_path, "toy")


def test_gzip_idx_reader_rejects_wrong_header(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")  # type 0x0d (float), not uint8
    with pytest.raises(ValueError, match="idx"):
        wd._read_idx_gz(path, 1)
