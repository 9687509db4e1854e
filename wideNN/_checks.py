"""Input validation shared by the public functions: every check raises a clear error naming
the offending argument instead of letting a NaN or a shape error surface deep inside."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
from typing import Any, Callable, Mapping

import torch
from torch import Tensor


def real_number(name: str, value: Any) -> float:
    """``value`` as a float; TypeError for anything that is not a real number: bool (a flag,
    not a quantity), str ("2.0" is a typo, not a number), complex, None, containers.  Numbers,
    numpy scalars and one-element real tensors are accepted."""
    if isinstance(value, (bool, str, bytes, complex)) or value is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r:.40}")
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex() or value.is_meta:
            raise TypeError(f"{name} must be a real number or a one-element real tensor, got a "
                            f"{value.dtype} tensor of shape {tuple(value.shape)}"
                            f"{' on the meta device' if value.is_meta else ''}")
        return float(value.detach())
    if getattr(value, "dtype", None) is not None and str(getattr(value, "dtype")) == "bool":
        raise TypeError(f"{name} must be a real number, got a boolean {value!r}")
    try:
        return float(operator.index(value)) if not hasattr(value, "__float__") else float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None


def check_variance(name: str, value: Any, allow_zero: bool = True, scalar: bool = False) -> None:
    """Raise TypeError unless ``value`` is a real number or a floating tensor (one element with
    ``scalar``), ValueError unless it is finite and non-negative."""
    if isinstance(value, Tensor):
        if scalar and value.numel() != 1:
            raise TypeError(f"{name} must be a number or a one-element tensor, got a tensor of "
                            f"shape {tuple(value.shape)}")
        if value.is_meta:
            raise ValueError(f"{name} is a meta tensor (no data): pass a real tensor or a number")
        if not torch.is_floating_point(value):
            raise TypeError(f"{name} must be a floating-point tensor or a number, got {value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {value}")
        bad = (value < 0) if allow_zero else (value <= 0)
        if bool(bad.any()):
            raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
        return
    v = real_number(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    if v < 0 or (not allow_zero and v == 0):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")


def check_inputs(x1: Any, x2: Any = None, name1: str = "x1", name2: str = "x2",
                 check_finite: bool = True) -> None:
    """Validate one or two input batches of shape (..., N, features).

    Raises TypeError for non-tensors, integer dtypes, mixed dtypes; ValueError for fewer than
    2 dimensions, mismatched feature sizes, mixed devices, NaN/inf entries.
    """
    pairs = [(name1, x1)] + ([(name2, x2)] if x2 is not None else [])
    for name, x in pairs:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.is_meta:
            raise ValueError(f"{name} is a meta tensor (shape only, no data): kernels need values")
        if x.is_sparse or x.layout != torch.strided:
            raise TypeError(f"{name} must be a dense tensor, got layout {x.layout}; use {name}.to_dense()")
        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        if not torch.is_floating_point(x):
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
                            f"convert with {name}.double() or {name}.float()")
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (N, features) (got {x.dim()}-D shape "
                             f"{tuple(x.shape)}); for a single example use {name}.unsqueeze(0), "
                             f"for scalar features {name}.unsqueeze(-1)")
        if x.shape[-2] == 0:
            raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}): at least one "
                             f"example is needed")
        if x.shape[-1] == 0:
            raise ValueError(f"{name} has no features (shape {tuple(x.shape)})")
        if check_finite and not _all_finite(x):
            raise ValueError(f"{name} contains NaN or inf entries")
    if x2 is not None:
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"{name1} and {name2} have different feature sizes: "
                             f"{x1.shape[-1]} vs {x2.shape[-1]}")
        if x1.dtype != x2.dtype:
            raise TypeError(f"{name1} and {name2} have different dtypes: {x1.dtype} vs {x2.dtype}")
        if x1.device != x2.device:
            raise ValueError(f"{name1} and {name2} are on different devices: {x1.device} vs {x2.device}")


def check_float_tensor(name: str, x: Any, hint: str = "") -> Tensor:
    """``x`` itself if it is a floating-point torch.Tensor with data: TypeError for anything else
    or an integer/bool tensor (``hint`` says what is expected), ValueError for a meta tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor (no data); move it to a real device first")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor{hint}, got {x.dtype}")
    return x


def check_not_meta_for(name: str, x: Any, module: torch.nn.Module) -> None:
    """ValueError naming ``name`` when ``x`` is a meta tensor (shape only, no data) but
    ``module`` holds real parameters or buffers: the forward would fail inside torch.  A module
    moved to the meta device itself (shape inference: ``copy.deepcopy(net).to("meta")``, also
    under ``torch.func.functional_call`` with meta parameters) runs on meta inputs as usual."""
    if not (isinstance(x, Tensor) and x.is_meta):
        return
    for t in _first_tensors(module):
        if not t.is_meta:
            raise ValueError(f"{name} is a meta tensor (shape only, no data) but the network's "
                             f"parameters are on {t.device}: move {name} there first, or the "
                             f"network to 'meta' for shape inference")


def _first_tensors(module: torch.nn.Module):
    """The module's first parameter and first buffer (one of each is enough to tell its device)."""
    for it in (module.parameters(), module.buffers()):
        t = next(it, None)
        if t is not None:
            yield t


def check_finite(name: str, x: Tensor) -> Tensor:
    """ValueError naming ``name`` for a meta tensor (no values to check) or NaN/inf entries."""
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor (no data); move it to a real device first")
    if not _all_finite(x):
        raise ValueError(f"{name} contains NaN or inf entries")
    return x


def _all_finite(x: Tensor) -> bool:
    """NaN and inf propagate into a sum, so a finite sum settles it in one cheap pass; only a
    non-finite sum (which may also be overflow of huge finite entries) needs the full check."""
    if x.numel() == 0:
        return True
    total = x.sum()
    return bool(torch.isfinite(total)) or bool(torch.isfinite(x).all())


def check_bool(name: str, value: Any) -> bool:
    """A flag: True or False (numpy bools too); TypeError for anything else (a tensor, a
    string "no", a number), which ``if value`` would silently read as true or fail on."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r:.40}")


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float; TypeError unless a real number (not bool or str), ValueError
    unless finite and > 0."""
    v = real_number(name, value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


#: the largest integer torch takes as a size, a step count or an index (int64)
INT64_MAX = (1 << 63) - 1


def check_int(name: str, value: Any, minimum: int | None = 1, maximum: int | None = INT64_MAX) -> int:
    """``value`` as an int; TypeError for non-integers (2.5, "3", True; an integral float
    such as 3.0 is accepted), ValueError below ``minimum`` (None: no bound) or above
    ``maximum`` (default: int64's largest, beyond which torch cannot take it as a size;
    None: no bound)."""
    if isinstance(value, float) and value.is_integer():
        v = int(value)
    elif isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    else:
        try:
            v = operator.index(value)  # ints, numpy and 0-d integer tensors; never truncates
        except TypeError:
            hint = " (it would be truncated)" if isinstance(value, float) else ""
            raise TypeError(f"{name} must be an integer, got {value!r}{hint}") from None
    if minimum is not None and v < minimum:
        kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return v


#: torch.Generator.manual_seed accepts seeds in [−2⁶³, 2⁶⁴ − 1]
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


def check_widths(name: str, value: Any, count: int) -> list[int]:
    """Hidden widths: one positive int for all ``count`` layers, or a list/tuple of ``count``
    positive ints (never a string, a float tensor or None)."""
    if isinstance(value, (list, tuple)):
        widths = [check_int(f"{name}[{i}]", w) for i, w in enumerate(value)]
        if len(widths) != count:
            raise ValueError(f"{name} must be an int or a list of {count} hidden widths, got {value!r:.80}")
        return widths
    try:
        return [check_int(name, value)] * count
    except TypeError:
        raise TypeError(f"{name} must be a positive int or a list of {count} of them, got "
                        f"{type(value).__name__} {value!r:.40}") from None


def check_device(name: str, device: Any) -> torch.device | None:
    """None or something ``torch.device`` accepts ("cpu", "cuda:0", a torch.device)."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, (str, int)) or isinstance(device, bool):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cpu' or 'cuda:0', or None, "
                        f"got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name} {device!r:.40} is not a device torch knows: {str(e)[:120]}") from None


@contextlib.contextmanager
def fits_in_memory(what: str):
    """Turns torch's allocation failure (a RuntimeError from its allocator, or a size overflow)
    inside the block into a ValueError naming ``what`` (the argument that sized it)."""
    try:
        yield
    except RuntimeError as e:
        msg = str(e)
        if "alloc" not in msg and "overflow" not in msg.lower():
            raise
        raise ValueError(f"{what} does not fit in memory ({msg.splitlines()[0][:160]})") from None


def check_seed(name: str, value: Any) -> int:
    """A random seed: an integer that ``torch.Generator.manual_seed`` accepts."""
    v = check_int(name, value, minimum=None, maximum=None)
    if not SEED_RANGE[0] <= v <= SEED_RANGE[1]:
        raise ValueError(f"{name} must lie in [-2**63, 2**64 - 1] (torch generator seeds), got {v}")
    return v


def check_pair(name: str, value: Any, lo: float, hi: float) -> tuple[float, float]:
    """Two real numbers in [lo, hi) (e.g. Adam's betas)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name} must be a pair of numbers, got {value!r:.60}")
    out = tuple(real_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not all(lo <= v < hi for v in out):
        raise ValueError(f"{name} must lie in [{lo}, {hi}), got {value!r}")
    return out  # type: ignore[return-value]


def check_jitters(name: str, value: Any) -> tuple[float, ...]:
    """A non-empty sequence of finite, non-negative relative jitters (tried in turn)."""
    if isinstance(value, (str, bytes, Tensor)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name} must be a sequence of numbers such as (0.0, 1e-10, 1e-8), got "
                        f"{type(value).__name__} {value!r:.40}")
    out = tuple(real_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not out:
        raise ValueError(f"{name} must not be empty")
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise ValueError(f"{name} must be finite and non-negative, got {out}")
    return out


def check_float_precision(x: Tensor, name: str) -> None:
    """Kernel linear algebra needs float32 or float64: float16/bfloat16 kernels lose every
    digit of a solve (and LAPACK has no half-precision Cholesky)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} is {x.dtype}; kernels and posteriors need float32 or float64 "
                        f"(convert with {name}.float() or {name}.double())")


def check_float_dtype(dtype: Any, name: str = "dtype") -> None:
    """Raise TypeError unless ``dtype`` is a floating-point ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype (e.g. torch.float64), got {dtype!r}")


def check_same_place(x: Tensor, value: Any, name: str) -> None:
    """A tensor hyperparameter must live on x's device (dtype is promoted, device is not)."""
    if isinstance(value, Tensor) and value.device != x.device:
        raise ValueError(f"{name} is on {value.device} but the inputs are on {x.device}")


def merge_options(options: Any, keywords: Mapping[str, Any], cls: type) -> Any:
    """``options`` (an instance of the dataclass ``cls``, default ``cls()``) with ``keywords``
    replaced, so a function takes either an options object or its fields by name; an unknown
    name raises TypeError listing the valid ones."""
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        raise TypeError(f"options must be a wideNN.{cls.__name__}, got {type(options).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(keywords) - fields)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; the options are {sorted(fields)}")
    return dataclasses.replace(options, **keywords)


#: words of torch's messages when a module is given inputs of the wrong shape
_SHAPE_WORDS = ("shape", "size", "channels", "dimension", "mat1")


def apply_model(fn: Callable[[Tensor], Tensor], x: Tensor, what: str) -> Tensor:
    """``fn(x)``; a model built for other features / channels / image sizes fails inside torch
    with a shape message, which becomes a ValueError starting with ``what`` (naming the inputs)
    instead of a bare traceback from deep in the model."""
    try:
        return fn(x)
    except RuntimeError as e:
        if not any(w in str(e) for w in _SHAPE_WORDS):
            raise
        raise ValueError(f"{what}: {e}") from e
