"""Trusting data files: published md5 checksums, verified before parsing, and a pickle
loader that refuses everything but numpy arrays and plain containers.

A loader calls :func:`verify_md5` on every file before it reads a byte of it, so a
corrupted or substituted file fails with :class:`ChecksumError` instead of being parsed.
The expected digests live in code, next to each loader, not next to the data: a checksum
shipped alongside a corrupted file proves nothing.
"""

from __future__ import annotations

import hashlib
import pickle
import os
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | Path


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


def as_path(name: str, value: PathLike) -> Path:
    """``Path(value)``; TypeError naming the argument unless a str or an os.PathLike."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return Path(value)


def verify_md5(path: PathLike, expected: str) -> Path:
    """Return ``Path(path)`` if its md5 equals ``expected``.

    Raises ``FileNotFoundError`` (naming the path) if it is missing and
    :class:`ChecksumError` if the digest differs.
    """
    if not isinstance(expected, str):
        raise TypeError(f"expected must be an md5 hex digest string, got {type(expected).__name__}")
    path = as_path("path", path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file: {path}")
    actual = md5sum(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"md5 mismatch for {path}: expected {expected}, got {actual}; "
            "the file is corrupted or not the published version, refusing to parse it"
        )
    return path


# --------------------------------------------------------------------------- safe unpickling


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
