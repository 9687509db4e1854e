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

Every name is importable from ``wideNN.data``; they live in:

* ``_files``: ``md5sum``, ``verify_md5``, ``ChecksumError``, ``PathLike`` and the
  restricted unpickler for CIFAR-10 batches (trusting files before parsing them);
* ``targets``: ``one_hot``, ``accuracy``, ``NUM_CLASSES``, ``ONE_HOT_POSITIVE``,
  ``ONE_HOT_NEGATIVE`` (classification as regression);
* ``preprocessing``: ``preprocess``, ``Standardization`` (input transforms);
* ``images``: ``to_images`` (rows back to (N, C, H, W), area-downsampled for convolutions);
* ``split``: ``Split``, ``balanced_subset_indices`` (the container and the subset protocol);
* ``digits``: ``load_digits``, ``train_test_split_digits``, ``DIGITS_MD5`` (the bundled
  ``wideNN/datasets/digits.csv.gz``);
* ``mnist``: ``load_mnist``, ``MNIST_MD5``, ``MNIST_POOL_SIZE``;
* ``cifar``: ``load_cifar10`` and the ``CIFAR10_*`` constants;
* ``uci``: ``load_uci``.

A test that monkeypatches a module-level constant (``CIFAR10_BATCH_MD5``, ``_DIGITS_FILE``)
must patch it on the submodule that reads it, not on this package.
"""

from __future__ import annotations

from ._files import ChecksumError, PathLike, md5sum, verify_md5
from .cifar import (
    CIFAR10_BATCH_DIR,
    CIFAR10_BATCH_MD5,
    CIFAR10_CLASSES,
    CIFAR10_PARTIAL_MD5,
    CIFAR10_PARTIAL_NAME,
    CIFAR10_POOL_SIZE,
    load_cifar10,
)
from .digits import _DIGITS_FILE, DIGITS_MD5, load_digits, train_test_split_digits
from .mnist import _read_idx_gz, MNIST_MD5, MNIST_POOL_SIZE, load_mnist
from .preprocessing import Standardization, preprocess
from .images import to_images
from .split import Split, balanced_subset_indices
from .targets import NUM_CLASSES, ONE_HOT_NEGATIVE, ONE_HOT_POSITIVE, accuracy, one_hot
from .uci import load_uci

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
    "to_images",
    "accuracy",
]

# The constants and the two private helpers the tests read (``_DIGITS_FILE``,
# ``_read_idx_gz``) stay importable as ``wideNN.data.NAME`` but out of ``__all__``, as they
# were before the split; naming them here marks the imports as used for pyflakes.
_REEXPORTED = (
    PathLike, NUM_CLASSES, ONE_HOT_POSITIVE, ONE_HOT_NEGATIVE, DIGITS_MD5, _DIGITS_FILE,
    MNIST_MD5, MNIST_POOL_SIZE, _read_idx_gz, CIFAR10_BATCH_DIR, CIFAR10_BATCH_MD5,
    CIFAR10_CLASSES, CIFAR10_PARTIAL_MD5, CIFAR10_PARTIAL_NAME, CIFAR10_POOL_SIZE,
)
