"""The compiled tile layers (``wideNN/csrc/fused_layers.c``): built on first use, cached on disk.

The fused closed-form kernels (``wideNN._fused``) spend their time in elementwise passes over
in-cache tiles.  In torch each layer is 6–12 such passes; the C file does one layer in one
vectorised pass (with its own branch-free acos/asin/atan/expm1, ≤ 2 ulp): the depth-3 ReLU
NNGP+NTK of 2000 × 2000 inputs (d = 784, float64, 2 cores) measured 98 ms with the torch passes
and 54 ms with these, depth 20 269 → 112 ms.  It also holds the sums of Mehler's series
(``wideNN._mehler``).

Building needs a C compiler (``$CC``, else ``cc``/``gcc``/``clang`` on the PATH); it takes about
a second once per machine and source version.  The library is cached under
``$WIDENN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/wideNN`` or ``~/.cache/wideNN``), keyed by the
source, the compiler and the CPU's instruction-set flags (it is built with ``-march=native``, so
a cache shared between different machines never loads a library built for another CPU).  A
freshly built library must pass a self-test against NumPy before it is used.

Without a compiler, when the build or the self-test fails, or with ``WIDENN_NATIVE=0``,
:func:`library` returns None and the torch passes are used (same results to round-off).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["library", "pointer"]

_SOURCE = Path(__file__).resolve().parent / "csrc" / "fused_layers.c"
_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_lock = threading.Lock()
_state: dict[str, object] = {}

_P, _L, _D, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_double, ctypes.c_int
_SIGNATURES = {
    "arccos_layer": [_P, _P, _P, _L, _L, _P, _P, _P, _P, _D, _D, _D],
    "step_layer": [_P, _P, _L, _L, _P, _P, _P, _P, _D],
    "erf_layer": [_P, _P, _P, _L, _L, _P, _P, _P, _P],
    "sin_layer": [_P, _P, _P, _L, _L, _P, _P, _D, _I],
    "identity_layer": [_P, _P, _P, _L, _D, _D],
    "gelu_layer": [_P, _P, _P, _L, _L, _P, _P, _P, _P, _P, _P, _D, _D],
    "unscale_store": [_P, _L, _L, _P, _P, _D, _P, _P, _L],
    "row_sumsq": [_P, _L, _L, _L, _P],
    "count_at_least": [_P, _L, _L, _D, _I],
    "first_layer": [_P, _L, _L, _P, _P, _P, _P, _D, _D, _I],
}
_RESULTS = {"row_sumsq": _I, "count_at_least": _L, "first_layer": _L}


def library() -> ctypes.CDLL | None:
    """The loaded library, or None where it cannot be built (see the module docstring)."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _load() if os.environ.get("WIDENN_NATIVE", "1") != "0" else None
    return _state["lib"]  # type: ignore[return-value]


def pointer(t) -> ctypes.c_void_p | None:
    """The address of a tensor's first element (None for None)."""
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _load() -> ctypes.CDLL | None:
    path = _library_path()
    if path is None:
        return None
    if not path.exists() and not _build(path):
        return None
    lib = _open(path)
    if lib is None and _build(path):  # a damaged cache entry: built again once
        lib = _open(path)
    return lib if lib is not None and _self_test(lib) else None


def _compiler() -> str | None:
    return os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def _library_path() -> Path | None:
    """Where the library for this source, compiler and CPU is cached (None: nothing to build
    with)."""
    compiler = _compiler()
    try:
        source = _SOURCE.read_bytes()
    except OSError:
        return None
    if compiler is None:
        return None
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), _compiler_version(compiler),
                                     _cpu_flags(), platform.machine().encode(),
                                     " ".join(_FLAGS).encode()])).hexdigest()[:20]
    return _cache_dir() / f"fused_layers-{key}.so"


def _open(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        for name, args in _SIGNATURES.items():
            for suffix in ("_f64", "_f32"):
                fn = getattr(lib, name + suffix)
                fn.argtypes, fn.restype = args, _RESULTS.get(name)
        for name in ("wn_acos_array", "wn_asin_array", "wn_atan_array", "wn_expm1_array"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = [_P, _P, _L], None
        lib.mehler_rows.argtypes = [_P, _L, _L, _P, _L, _P, _L, _P, _P]
        lib.mehler_rows.restype = None
        lib.mehler_grad_rows.argtypes = [_P, _P, _P, _L, _L, _P, _L, _P, _L, _P, _L, _P, _P, _P]
        lib.mehler_grad_rows.restype = None
    except (OSError, AttributeError):
        return None
    return lib


def _build(path: Path) -> bool:
    """Compile into a temporary file beside ``path`` and move it into place (atomic: another
    process building the same library at the same time finds either nothing or a whole file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
    except OSError:
        return False
    try:
        for arch in (["-march=native"], []):
            result = subprocess.run([_compiler(), *_FLAGS, *arch, str(_SOURCE), "-o", tmp, "-lm"],
                                    capture_output=True, timeout=120)
            if result.returncode == 0:
                os.replace(tmp, path)
                return True
        return False
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _self_test(lib: ctypes.CDLL) -> bool:
    """The elementwise functions against NumPy on a few thousand points (a miscompiled or
    mismatched library is refused rather than trusted)."""
    x = np.linspace(-1.0, 1.0, 4001)
    checks = (("wn_acos_array", x, np.arccos), ("wn_asin_array", x, np.arcsin),
              ("wn_atan_array", np.tan(x * 1.5), np.arctan),
              ("wn_expm1_array", x * 30.0, np.expm1))
    for name, xs, ref in checks:
        xs = np.ascontiguousarray(xs)
        out = np.empty_like(xs)
        getattr(lib, name)(xs.ctypes.data, out.ctypes.data, xs.size)
        expected = ref(xs)
        if not np.all(np.abs(out - expected) <= 4 * np.spacing(np.abs(expected))):
            return False
    return True


def _cache_dir() -> Path:
    root = os.environ.get("WIDENN_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "wideNN"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"wideNN-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _compiler_version(compiler: str) -> bytes:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return b""


def _cpu_flags() -> bytes:
    """The instruction-set flags of this CPU (Linux: /proc/cpuinfo), part of the cache key."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features")):
                    return line
    except OSError:
        pass
    return (platform.processor() + sys.platform).encode()
