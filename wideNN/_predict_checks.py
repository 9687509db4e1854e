"""Input validation for the predictors: kernel matrices, targets, times and inputs of any shape
(only the first dimension is the example dimension).  Every error names the argument."""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from ._checks import _all_finite, check_float_tensor, real_number

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_tensor(name: str, x: Any, *, min_dim: int = 1) -> Tensor:
    """A finite floating-point tensor of at least ``min_dim`` dims with a non-empty first dim,
    in float32 or float64 on a real device (half precision cannot hold a kernel solve)."""
    check_float_tensor(name, x)
    if x.dtype in _LOW_PRECISION:
        raise TypeError(f"{name} has dtype {x.dtype}, too coarse for kernel solves; convert it with "
                        f"{name}.double() (or .float())")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    if x.dim() and x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not _all_finite(x):
        raise ValueError(f"{name} contains NaN or inf entries")
    return x


def check_examples(x_train: Any, x_test: Any = None) -> None:
    """Inputs of any shape (N, ...): same trailing shape, dtype and device."""
    check_tensor("x_train", x_train)
    if x_test is None:
        return
    check_tensor("x_test", x_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test have different example shapes: "
                         f"{tuple(x_train.shape[1:])} vs {tuple(x_test.shape[1:])}")
    if x_train.device != x_test.device:
        raise ValueError(f"x_train and x_test are on different devices: {x_train.device} vs {x_test.device}")


def check_square_symmetric(name: str, m: Any, n: int | None = None) -> Tensor:
    """An (N, N) symmetric matrix (relative asymmetry up to 1e-6 of its largest entry)."""
    check_tensor(name, m, min_dim=2)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(m.shape)}")
    if n is not None and m.shape[0] != n:
        raise ValueError(f"{name} is {m.shape[0]}×{m.shape[0]} but there are {n} training examples")
    # in row blocks, so the check never holds a second N×N matrix
    rows = max(1, (1 << 22) // max(1, m.shape[0]))
    scale = asym = 0.0
    for a in range(0, m.shape[0], rows):
        block = m[a:a + rows]
        scale = max(scale, float(block.abs().max()))
        asym = max(asym, float((block - m[:, a:a + rows].mT).abs().max()))
    if asym > 1e-6 * scale:
        raise ValueError(f"{name} is not symmetric (max |M − Mᵀ| = {asym:.3g} vs max |M| = {scale:.3g})")
    return m


def check_cross(name: str, m: Any, n_train: int, n_test: int | None = None) -> Tensor:
    """A (N_test, N_train) test×train matrix."""
    check_tensor(name, m, min_dim=2)
    if m.dim() != 2 or m.shape[1] != n_train:
        raise ValueError(f"{name} must have shape (N_test, {n_train}), got {tuple(m.shape)}")
    if n_test is not None and m.shape[0] != n_test:
        raise ValueError(f"{name} has {m.shape[0]} rows but the test set has {n_test}")
    return m


def check_targets(y: Any, n: int, name: str = "y_train") -> Tensor:
    """Regression targets (N,) or (N, O) as (N, O)."""
    check_float_tensor(name, y, " (e.g. one-hot targets)")
    if y.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, outputs), got {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but x_train has {n}")
    if y.dtype in _LOW_PRECISION:
        raise TypeError(f"{name} has dtype {y.dtype}; convert it with {name}.double()")
    if not _all_finite(y):
        raise ValueError(f"{name} contains NaN or inf entries")
    return y if y.dim() == 2 else y.unsqueeze(-1)


def check_number(name: str, value: Any, *, positive: bool = False, allow_inf: bool = False) -> float:
    """A real number (not bool, not str); ≥ 0, or > 0 with ``positive``."""
    v = real_number(name, value)  # bool, str, complex, meta and multi-element tensors raise
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return v


def check_times(t: Any, device: torch.device | None = None, *, integer: bool = False) -> Tensor | None:
    """None, a time ≥ 0 (``inf`` allowed) or a 1-D sequence/tensor of them, as float64."""
    if t is None:
        return None
    if isinstance(t, (bool, str, bytes)):
        raise TypeError(f"t must be a number or a 1-D tensor of times, got {t!r}")
    if isinstance(t, Tensor):
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must be a real tensor, got dtype {t.dtype}")
        if t.is_meta:
            raise ValueError("t is a meta tensor (no data)")
        tt = t.detach().to(dtype=torch.float64)
    elif isinstance(t, numbers.Real):
        tt = torch.tensor(float(t), dtype=torch.float64)
    else:
        try:
            items = list(t)
        except TypeError:
            raise TypeError(f"t must be a number or a 1-D tensor of times, got {type(t).__name__}") from None
        for v in items:
            if isinstance(v, (bool, str, bytes)) or not isinstance(v, (numbers.Real, Tensor)):
                raise TypeError(f"t must be a number or a 1-D tensor of times, got an entry {v!r}")
        tt = torch.tensor([float(v) for v in items], dtype=torch.float64)
    if device is not None:
        tt = tt.to(device)
    if tt.dim() > 1:
        raise ValueError(f"t must be a number or a 1-D tensor of times, got shape {tuple(tt.shape)}")
    if bool(torch.isnan(tt).any()):
        raise ValueError(f"t contains NaN: {t}")
    if bool((tt < 0).any()):
        raise ValueError(f"training time t must be >= 0, got {t}")
    if integer:
        fin = tt[torch.isfinite(tt)]
        if bool((fin != fin.round()).any()):
            raise ValueError(f"t counts discrete optimizer steps here and must be whole numbers, got {t}")
    return tt
