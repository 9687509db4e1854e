"""How an experiment's results reach the disk: JSON-safe values, atomic file writes, plain-text tables.

Non-finite floats become JSON ``null`` so results.json stays strict JSON; a
write replaces the file in one step so a killed run never leaves a partial one.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy arrays/scalars, tuples, paths to plain JSON types; NaN/inf become ``None``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch.Tensor
        return to_jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist"):  # numpy array or scalar
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    raise TypeError(f"cannot store {type(value).__name__} in results.json")


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of ``rows`` (dicts); ``columns`` defaults to the keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = [all(_is_num(r.get(c)) for r in rows if c in r) for c in columns]

    def line(row: list[str]) -> str:
        return "  ".join(s.rjust(w) if n else s.ljust(w) for s, w, n in zip(row, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
