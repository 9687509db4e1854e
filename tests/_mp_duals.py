"""The closed-form duals (T, Ṫ) of the elementwise activations in mpmath, for the 50-digit
references of the numerics tests (shared so that every test checks against one formula)."""
import mpmath


def mp_dual(name, k11, k12, k22):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), mpf arguments."""
    pi = mpmath.pi
    if name in ("relu", "leaky_relu", "abs", "step"):
        s = mpmath.sqrt(k11) * mpmath.sqrt(k22)
        c = max(min(k12 / s, 1), -1) if s > 0 else mpmath.mpf(0)
        th = mpmath.acos(c)
        if name == "step":
            return (pi - th) / (2 * pi), mpmath.mpf(0)
        a = {"relu": 0, "leaky_relu": mpmath.mpf("0.01"), "abs": -1}[name]
        mix = (1 + a * a) * (pi - th) + 2 * a * th
        return s / (2 * pi) * ((1 - a) ** 2 * mpmath.sqrt(1 - c * c) + mix * c), mix / (2 * pi)
    if name == "erf":
        d = 1 + 2 * k11 + 2 * k22 + 4 * (k11 * k22 - k12 ** 2)  # (1+2k11)(1+2k22) − 4k12²
        return 2 / pi * mpmath.atan2(2 * k12, mpmath.sqrt(d)), 4 / pi / mpmath.sqrt(d)
    if name == "gelu":
        s = (1 + k11) * (1 + k22)
        d = 1 + k11 + k22 + (k11 * k22 - k12 ** 2)
        p = mpmath.mpf(1) / 4 + mpmath.atan2(k12, mpmath.sqrt(d)) / (2 * pi)
        t = k12 * p + (k11 * k22 * d + k12 ** 2) / (2 * pi * s * mpmath.sqrt(d))
        td = p + k12 * ((3 + k11 + k22) * d + k12 ** 2) / (2 * pi * s * d ** 1.5)
        return t, td
    if name in ("sin", "cos"):
        e = mpmath.exp(-(k11 + k22) / 2)
        odd, even = e * mpmath.sinh(k12), e * mpmath.cosh(k12)
        return (odd, even) if name == "sin" else (even, odd)
    if name == "identity":
        return k12, mpmath.mpf(1)
    raise KeyError(name)


def mp_mlp(depth, act, wv, bv, xa, xb):
    """(nngp, ntk) of a depth-``depth`` MLP (NTK parameterization) at one input pair, as mpf at
    the caller's working precision, by the layer recursion on ``mp_dual``."""
    wv, bv = mpmath.mpf(wv), mpmath.mpf(bv)
    a = [mpmath.mpf(float(v)) for v in _ravel(xa)]
    b = [mpmath.mpf(float(v)) for v in _ravel(xb)]
    d = len(a)
    k11 = bv + wv * mpmath.fsum(u * u for u in a) / d
    k22 = bv + wv * mpmath.fsum(u * u for u in b) / d
    k12 = bv + wv * mpmath.fsum(u * v for u, v in zip(a, b)) / d
    th = k12
    for _ in range(depth):
        t, td = mp_dual(act, k11, k12, k22)
        t11, _ = mp_dual(act, k11, k11, k11)
        t22, _ = mp_dual(act, k22, k22, k22)
        th = bv + wv * t + wv * td * th
        k12, k11, k22 = bv + wv * t, bv + wv * t11, bv + wv * t22
    return k12, th


def _ravel(x):
    import numpy as np
    return np.ravel(np.asarray(x))
