"""Simulated kills for the resume tests: a function that raises KeyboardInterrupt at every
``every``-th call, and a loop that restarts a call until it finishes."""
from __future__ import annotations


def killer(fn, every: int, calls: list[int] | None = None):
    """``fn`` wrapped to raise KeyboardInterrupt at every ``every``-th call (a kill); ``calls[0]``
    counts the calls (a fresh counter when None).  A plain function, so it also binds as a method."""
    count = [0] if calls is None else calls

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] % every == 0:
            raise KeyboardInterrupt
        return fn(*args, **kwargs)
    return wrapped


def until_done(call, attempts: int = 100):
    """(result, attempts used) of ``call()`` retried after each KeyboardInterrupt."""
    for attempt in range(1, attempts + 1):
        try:
            return call(), attempt
        except KeyboardInterrupt:
            continue
    raise AssertionError("never finished")
