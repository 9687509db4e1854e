"""A small harness for bad-input probes: run one call under a time limit and classify it.

Classes: ``ok-error`` (a TypeError / ValueError / LookupError subclass of ours raised from
wideNN's own code, naming the argument when the case names one), ``ok-value`` (a finite
answer that passes the case's reference check), and the defects ``internal`` (an exception
raised inside torch / Python internals, or of a type that says nothing to the caller),
``unclear`` (our own error whose message does not name the argument), ``nonfinite`` (a NaN
or inf in the answer), ``wrong`` (a finite answer that fails its reference check) and
``hang`` (longer than the time limit).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import traceback
from typing import Any, Callable

import torch

import wideNN

_PKG = os.path.dirname(os.path.abspath(wideNN.__file__))
OK = ("ok-error", "ok-value")
DEFECTS = ("internal", "unclear", "nonfinite", "wrong", "hang")


#: dataclass fields that describe the call, not its answer (t = inf is a valid time)
_NOT_VALUES = ("t", "learning_rate")


class _Timeout(BaseException):
    pass


@dataclasses.dataclass
class Case:
    """``call()`` is the probe; ``names``: words one of which the error message must contain
    (the argument); ``check(result)``: a reference check of a returned answer (True = right);
    ``finite``: whether every tensor in the answer must be finite."""
    id: str
    call: Callable[[], Any]
    names: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None
    finite: bool = True


def _tensors(obj: Any, depth: int = 0):
    if depth > 4:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o, depth + 1)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name not in _NOT_VALUES:
                yield from _tensors(getattr(obj, f.name, None), depth + 1)
    elif isinstance(obj, float):
        yield torch.tensor(obj)


def _raised_in_package(exc: BaseException) -> bool:
    tb = traceback.extract_tb(exc.__traceback__)
    return bool(tb) and os.path.abspath(tb[-1].filename).startswith(_PKG)


def classify(case: Case, limit_s: float = 10.0) -> tuple[str, str]:
    """(class, detail) of one probe."""
    def alarm(*_):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        result = case.call()
    except _Timeout:
        return "hang", f"> {limit_s} s"
    except (TypeError, ValueError, LookupError, OSError, ArithmeticError, RuntimeError,
            AttributeError, AssertionError, NotImplementedError) as e:
        msg = f"{type(e).__name__}: {str(e)[:200]}"
        # our own errors (raised in wideNN's code, not inside torch or Python): TypeError /
        # ValueError, and LookupError / OSError where Python's conventions call for them
        clear = isinstance(e, (TypeError, ValueError, LookupError, OSError))
        if not clear or not _raised_in_package(e):
            where = traceback.extract_tb(e.__traceback__)[-1]
            return "internal", f"{msg} [at {os.path.basename(where.filename)}:{where.lineno}]"
        if case.names and not any(n.lower() in str(e).lower() for n in case.names):
            return "unclear", f"{msg} (expected one of {case.names})"
        return "ok-error", msg
    except Exception as e:  # noqa: BLE001 - any other exception type says nothing to the caller
        return "internal", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if case.finite:
        for t in _tensors(result):
            if t.is_meta:
                return "wrong", "result is a meta tensor (no values)"
            if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
                return "nonfinite", f"result has NaN/inf: {type(result).__name__}"
    if case.check is not None:
        try:
            good = case.check(result)
        except Exception as e:  # noqa: BLE001 - a failed check is a wrong answer
            return "wrong", f"check raised {type(e).__name__}: {e}"
        if not good:
            return "wrong", f"reference check failed: {str(result)[:120]}"
    return "ok-value", type(result).__name__
