"""Dual kernels of quadrature activations for inputs of unequal variances, by Mehler's formula.

For (u, v) ~ N(0, [[k1, k12], [k12, k2]]) and ρ = k12/√(k1 k2), Mehler's expansion of the
bivariate normal density in Hermite polynomials gives

    T = E[φ(u)φ(v)] = Σ_m ρ^m a_m(k1) a_m(k2),        a_m(k) = E[φ(√k z) h_m(z)],
    Ṫ = E[φ'(u)φ'(v)] = ∂T/∂k12 = Σ_{m≥1} m ρ^{m−1} a_m(k1) a_m(k2) / √(k1 k2),

with h_m the Hermite polynomials orthonormal under z ~ N(0, 1) (probabilists', divided by √m!).
Each input needs one row of coefficients (1-D integrals, a GEMM against a tabulated Hermite
basis), and each kernel entry a Horner sum over m — instead of a 2-D quadrature of ~degree²·k
evaluations of φ and φ' per entry.  Gradients (fitting the variances) come from the same
sums: ∂T/∂ρ = Σ m ρ^{m−1} a_m a_m', the coefficients' own derivative
da_m/dk = (√((m+1)(m+2)) a_{m+2} + m a_m)/(2k) (Hermite recurrences and Gaussian integration by
parts), so autograd stores no per-term graph.

The series is cut where the tail of Σ m a_m² (the slowest, Ṫ at coincident points) falls below
``TOLERANCE`` of its sum at the call's largest variance; the terms needed grow with the variance
(tanh: ~160 at k = 1, ~500 at k = 4, ~170·k beyond: 2500 at k ≈ 15, 10800 at k = 64).  Up to
2500 terms one basis serves; up to ``MAX_TERMS`` an extended one (~200 MB while cached).  When
more would be needed, for variances below ``MIN_VARIANCE`` (the Ṫ series divides by √(k1 k2)),
or for other shapes, :func:`dual` returns None and the caller integrates per entry.

The coefficients are integrals of φ(√k z)·h_m(z)·pdf(z) by the trapezoid rule on [−14, 14]
(spectrally accurate for integrands analytic in a strip, as ``wideNN._gaussian.normal_rule``),
on a spacing that resolves both the highest Hermite function's oscillation and φ's transition; the basis is formed as Hermite *functions*
h_m(z)·√(w) by their three-term recurrence, which stays bounded.
"""
from __future__ import annotations

import collections
import functools
import math
import threading
import weakref

import torch
from torch import Tensor

__all__ = ["dual", "MAX_TERMS", "TOLERANCE"]

#: relative tail of the series accepted (at coincident points of the largest variance)
TOLERANCE = 1e-15
#: the Hermite bases: up to 2500 terms on a spacing that also follows φ's steepness, and an
#: extended one of 12000 terms (tanh needs ~170·k terms for Ṫ: 2500 near k = 15, 11000 at
#: k = 64); each entry costs ~4 multiply-adds per term
_LEVELS = (2500, 12000)
#: the longest series evaluated
MAX_TERMS = _LEVELS[-1]
#: most nodes of the coefficient integrals of the first basis (their spacing shrinks like 1/√k)
MAX_NODES = 1 << 14
#: smallest variance taken (Ṫ's series divides by √(k1 k2))
MIN_VARIANCE = 1e-6
#: most distinct variances integrated for one call of any other shape than the outer one (each
#: costs ~1300·terms multiply-adds; beyond this the per-entry quadrature is cheaper)
DISTINCT_LIMIT = 1 << 16


@functools.lru_cache(maxsize=4)
def _basis(spacing: float, capacity: int) -> tuple[Tensor, Tensor, Tensor]:
    """(z, √w, Ψ): trapezoid nodes and root weights for E[·] under N(0, 1), and the Hermite
    functions Ψ[p, m] = h_m(z_p)·√w_p for m < capacity + 3 (float64; ~18 MB for 2500 terms,
    ~200 MB for the extended 12000)."""
    # the integrands φ(√k z) h_m(z) pdf(z) are below e^{−z²/4} · (e^{−z²/4}|h_m|) ≤ 1.1 e^{−z²/4}
    # (Cramér's bound on the Hermite functions): beyond |z| = 14 under 1e-21 for every m
    half = 14.0
    nodes = 2 * math.ceil(half / spacing) + 1
    z = torch.linspace(-half, half, nodes, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z)
    w = w / w.sum()
    root = w.sqrt()
    psi = torch.empty(capacity + 3, nodes, dtype=torch.float64)  # (rows written contiguously)
    prev, cur = torch.zeros_like(z), root.clone()
    for m in range(capacity + 3):
        psi[m] = cur
        prev, cur = cur, (z * cur - math.sqrt(m) * prev) / math.sqrt(m + 1)
    return z, root, psi.T


def _level(terms: int) -> int:
    """The smallest basis holding ``terms`` coefficients (2 more feed da/dk)."""
    for capacity in _LEVELS:
        if terms <= capacity + 3:
            return capacity
    raise ValueError(f"at most {MAX_TERMS + 3} Hermite coefficients, asked for {terms}")


def _spacing(kmax: float, capacity: int = _LEVELS[0]) -> float:
    # the Hermite functions up to ``capacity`` oscillate with wavenumber ≲ √capacity (Nyquist
    # spacing π/√capacity, halved for spectral accuracy); φ(√k z) changes on 1/√k
    return min(1.5 / math.sqrt(capacity + 4.0), 0.25 / math.sqrt(max(kmax, 1.0)))


#: the extended basis is used only where its spacing is set by its terms, not by φ's steepness
#: (one basis for every variance it serves: k ≤ (0.25 √(12004) / 1.5)² ≈ 333)
_EXTENDED_KMAX = (0.25 * math.sqrt(_LEVELS[-1] + 4.0) / 1.5) ** 2


def coefficients(act, k: Tensor, terms: int, kmax: float) -> Tensor:
    """a_m(k_i) for m < terms, shape (len(k), terms), in k's dtype."""
    kk = k.detach().reshape(-1).to(torch.float64).cpu()
    if kk.numel() * terms > _MEMO_ENTRIES:
        return _integrate(act, kk, terms, kmax).to(dtype=k.dtype, device=k.device)
    key = (terms, kmax, kk.numpy().tobytes())
    with _memo_lock:  # (tiles of the layer evaluation run on worker threads)
        memo = _memo.setdefault(act, collections.OrderedDict())
        out = memo.get(key)
        if out is not None:
            memo.move_to_end(key)
    if out is None:
        out = _integrate(act, kk, terms, kmax)
        with _memo_lock:
            memo[key] = out
            while len(memo) > _MEMO_SIZE:
                memo.popitem(last=False)
    return out.clone().to(dtype=k.dtype, device=k.device)  # (callers own what they get)


#: coefficient sets remembered per activation (a tiled layer asks for the same rows once per
#: tile: a pooling CNN's 150 calls per kernel), each of at most ``_MEMO_ENTRIES`` numbers
_memo: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_MEMO_SIZE = 8
_MEMO_ENTRIES = 1 << 20
_memo_lock = threading.Lock()


def _integrate(act, kk: Tensor, terms: int, kmax: float) -> Tensor:
    capacity = _level(terms)
    z, root, psi = _basis(_spacing(kmax, capacity), capacity)
    psi = psi[:, :terms]
    out = torch.empty(kk.numel(), terms, dtype=torch.float64)
    rows = max(1, (1 << 22) // z.numel())
    with torch.no_grad():
        for s in range(0, kk.numel(), rows):
            u = kk[s:s + rows, None].sqrt() * z
            torch.mm(act.forward(u) * root, psi, out=out[s:s + rows])
    return out


def terms_needed(act, kmax: float) -> int | None:
    """Terms for ``TOLERANCE`` at variance ``kmax`` (None: more than ``MAX_TERMS``)."""
    cache = act.__dict__.setdefault("_mehler_terms", {})
    if kmax in cache:
        return cache[kmax]
    found = _terms_on(act, kmax, _LEVELS[0])
    if found is None and kmax <= _EXTENDED_KMAX:
        found = _terms_on(act, kmax, _LEVELS[-1])
    if len(cache) > 256:
        cache.clear()
    cache[kmax] = found
    return found


def _terms_on(act, kmax: float, capacity: int) -> int | None:
    a = coefficients(act, torch.tensor([kmax], dtype=torch.float64), capacity + 3, kmax)[0]
    m = torch.arange(a.numel(), dtype=torch.float64)
    energy = torch.stack([a * a, m * a * a])  # T's and Ṫ's coincident-point series
    tail = energy.flip(-1).cumsum(-1).flip(-1)
    ok = (tail <= TOLERANCE * tail[:, :1]).all(0)
    ok[capacity + 1:] = False  # (the last two terms only feed da/dk)
    return int(ok.nonzero()[0]) if bool(ok.any()) else None


def dual(act, k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor] | None:
    """(T, Ṫ) for k11 (…, N, 1), k12 (…, N, M), k22 (…, 1, M) (batch dimensions broadcast), or
    for one common k11 and one common k22 with k12 of any shape; None where the series does not
    apply (see the module docstring)."""
    if k12.dtype not in (torch.float32, torch.float64) or k12.numel() == 0:
        return None
    outer = (k12.dim() >= 2 and k11.dim() >= 2 and k22.dim() >= 2
             and k11.shape[-2:] == (k12.shape[-2], 1) and k22.shape[-2:] == (1, k12.shape[-1]))
    if not outer and _distinct_count(k11) + _distinct_count(k22) > DISTINCT_LIMIT:
        return None
    terms, kmax = _terms(act, k11, k22)
    if terms is None:
        return None
    fn = _Outer if outer else _Pairs
    if torch.is_grad_enabled() and any(t.requires_grad for t in (k11, k12, k22)):
        return fn.apply(act, terms, kmax, k11, k12, k22)
    return fn.forward(act, terms, kmax, k11, k12, k22)


def dual_diag(act, k: Tensor) -> tuple[Tensor, Tensor] | None:
    """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, k) from the same series (so that coincident points
    of ``dual`` and these variances agree to rounding), or None."""
    if k.dtype not in (torch.float32, torch.float64) or k.numel() == 0:
        return None
    if _distinct_count(k) > DISTINCT_LIMIT:
        return None
    terms, kmax = _terms(act, k, k)
    if terms is None:
        return None
    if torch.is_grad_enabled() and k.requires_grad:
        return _Diag.apply(act, terms, kmax, k)
    return _Diag.forward(act, terms, kmax, k)


def _distinct_count(k: Tensor) -> int:
    flat = k.detach().reshape(-1)
    if flat.numel() <= 1 or bool((flat == flat[0]).all()):
        return min(flat.numel(), 1)
    return int(torch.unique(flat).numel())


def _terms(act, k11: Tensor, k22: Tensor) -> tuple[int | None, float]:
    lo = float(torch.minimum(k11.detach().min(), k22.detach().min()))
    hi = float(torch.maximum(k11.detach().max(), k22.detach().max()))
    if not (lo >= MIN_VARIANCE and math.isfinite(hi)):
        return None, hi
    kmax = _bucket(hi)
    if 28.0 / _spacing(kmax) > MAX_NODES:
        return None, kmax  # φ(√k z) too steep for the tabulated basis (the quadrature decides)
    return terms_needed(act, kmax), kmax


def _bucket(kmax: float) -> float:
    """kmax rounded up to the grid 2^(j/4), so that calls share the term count and basis."""
    return 2.0 ** (math.ceil(4.0 * math.log2(max(kmax, 2.0 ** -20))) / 4.0)


def _wide(t: Tensor) -> Tensor:
    """float64 for the sums (a float32 Horner sum of ~500 terms would lose ~500 ulps)."""
    return t.detach().to(torch.float64)


def _rho(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor]:
    s = (k11 * k22).sqrt()
    return (k12 / s).clamp(-1.0, 1.0), s


def _da(a: Tensor, k: Tensor, upto: int) -> Tensor:
    """da_m/dk for m ≤ upto: (√((m+1)(m+2)) a_{m+2} + m a_m)/(2k) (k broadcasting over rows)."""
    m = torch.arange(upto + 1, dtype=a.dtype, device=a.device)
    return (torch.sqrt((m + 1) * (m + 2)) * a[..., 2:upto + 3] + m * a[..., :upto + 1]) / (2 * k[..., None])


# ---------------------------------------------------------------- k11 (…, N, 1), k22 (…, 1, M)
def _flat(k11: Tensor, k12: Tensor, k22: Tensor):
    """Batch-flattened float64 copies: (B, N), (B, N, M), (B, M) and the batch shape."""
    batch = torch.broadcast_shapes(k11.shape[:-2], k12.shape[:-2], k22.shape[:-2])
    n, m = k12.shape[-2:]
    b = math.prod(batch)
    return (_wide(k11).expand(*batch, n, 1).reshape(b, n), _wide(k12).expand(*batch, n, m).reshape(b, n, m),
            _wide(k22).expand(*batch, 1, m).reshape(b, m), batch)


def _outer_setup(act, terms, kmax, k11, k12, k22):
    w11, w12, w22, batch = _flat(k11, k12, k22)
    a1 = coefficients(act, w11, terms + 3, kmax).reshape(*w11.shape, terms + 3)
    # x against itself: one set of coefficients (each costs a (rows × nodes × terms) GEMM)
    same = w11.shape == w22.shape and torch.equal(w11, w22)
    a2 = a1 if same else coefficients(act, w22, terms + 3, kmax).reshape(*w22.shape, terms + 3)
    rho, s = _rho(w11[:, :, None], w12, w22[:, None, :])
    return w11, w22, a1, a2, rho, s, batch


def _horner_outer(rho: Tensor, a1: Tensor, a2: Tensor, first: int, last: int, weights=None) -> Tensor:
    """Σ_{m=first}^{last−1} c_m ρ^{m−first} a1[b, i, m] a2[b, j, m] by Horner's rule."""
    out = torch.zeros_like(rho)
    for m in range(last - 1, first - 1, -1):
        c = 1.0 if weights is None else float(weights[m])
        out.mul_(rho)
        if c != 0.0:
            out.baddbmm_(a1[:, :, m:m + 1], a2[:, :, m].unsqueeze(1), alpha=c)
    return out


def _native_lib(t: Tensor):
    from . import _native
    return _native.library() if t.device.type == "cpu" else None


def _row_blocks(n: int, work) -> None:
    """work(start, stop) over blocks of rows, on the fused path's worker threads (the compiled
    loops release the GIL)."""
    from ._fused import run_tasks, tile_threads
    step = max(1, min(64, -(-n // 8)))
    blocks = [(i, min(n, i + step)) for i in range(0, n, step)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_tasks(blocks, lambda blk, _: work(*blk), lambda: None, min(tile_threads(before), len(blocks)))
    finally:
        torch.set_num_threads(before)


def _outer_sums(rho: Tensor, a1: Tensor, a2: Tensor, terms: int) -> tuple[Tensor, Tensor]:
    """(Σ_{m<terms} ρ^m a1 a2', Σ_{1≤m≤terms} m ρ^{m−1} a1 a2') for (B, N, M) ρ."""
    lib = _native_lib(rho)
    if lib is None:
        m = torch.arange(terms + 1, dtype=torch.float64)
        return _horner_outer(rho, a1, a2, 0, terms), _horner_outer(rho, a1, a2, 1, terms + 1, m)
    rho = rho.contiguous()
    t, td = torch.empty_like(rho), torch.empty_like(rho)
    n, mm = rho.shape[1:]
    for b in range(rho.shape[0]):
        a1b = a1[b].contiguous()
        a2t = a2[b, :, :terms + 1].T.contiguous()
        base = [x.data_ptr() for x in (rho[b], t[b], td[b])]
        row = 8 * mm

        def work(i0, i1, a1b=a1b, a2t=a2t, base=base):
            lib.mehler_rows(base[0] + i0 * row, i1 - i0, mm, a1b.data_ptr() + i0 * 8 * a1b.shape[1],
                            a1b.shape[1], a2t.data_ptr(), terms, base[1] + i0 * row, base[2] + i0 * row)
        _row_blocks(n, work)
    return t, td


def _outer_derivative_sums(rho: Tensor, a1: Tensor, a2: Tensor, terms: int) -> tuple[Tensor, Tensor]:
    """(∂T/∂ρ, ∂(sṪ)/∂ρ) of the truncated series: Σ_{1≤m<terms} m ρ^{m−1} a a' and
    Σ_{2≤m≤terms} m(m−1) ρ^{m−2} a a'.  The second is the first kind of sum over the shifted
    coefficients b_j = √(j+1) a_{j+1} (j = m − 1), so both run through the same Horner loops."""
    if _native_lib(rho) is None or terms < 2:
        m = torch.arange(terms + 1, dtype=torch.float64)
        return _horner_outer(rho, a1, a2, 1, terms, m), _horner_outer(rho, a1, a2, 2, terms + 1, m * (m - 1))
    root = torch.arange(1, terms + 1, dtype=torch.float64).sqrt()
    b1 = a1[..., 1:terms + 1] * root
    b2 = b1 if a2 is a1 else a2[..., 1:terms + 1] * root
    return _outer_sums(rho, a1, a2, terms - 1)[1], _outer_sums(rho, b1, b2, terms - 1)[1]


class _Outer(torch.autograd.Function):
    """(T, Ṫ) of k11 (…, N, 1), k12 (…, N, M), k22 (…, 1, M); gradients from the series."""

    @staticmethod
    def forward(act, terms: int, kmax: float, k11: Tensor, k12: Tensor, k22: Tensor):
        _, _, a1, a2, rho, s, batch = _outer_setup(act, terms, kmax, k11, k12, k22)
        # T = Σ_{m<terms} ρ^m a_m a_m',  Ṫ = Σ_{1≤m≤terms} m ρ^{m−1} a_m a_m' / s
        t, td = _outer_sums(rho, a1, a2, terms)
        td.div_(s)
        shape = (*batch, *k12.shape[-2:])
        return t.reshape(shape).to(k12.dtype), td.reshape(shape).to(k12.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.act, ctx.terms, ctx.kmax = inputs[:3]
        ctx.save_for_backward(*inputs[3:], output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_t, g_td):
        k11, k12, k22, td = ctx.saved_tensors
        terms = ctx.terms
        w11, w22, a1, a2, rho, s, batch = _outer_setup(ctx.act, terms, ctx.kmax, k11, k12, k22)
        g_t = torch.zeros_like(rho) if g_t is None else _wide(g_t).expand(*batch, *rho.shape[1:]).reshape(rho.shape)
        g_td = torch.zeros_like(rho) if g_td is None else _wide(g_td).expand(*batch, *rho.shape[1:]).reshape(rho.shape)
        td = _wide(td).expand(*batch, *rho.shape[1:]).reshape(rho.shape)
        # derivatives of the truncated series: ∂T/∂ρ = Σ_{1≤m<terms} m ρ^{m−1} a a',
        # ∂Ṫ/∂ρ = Σ_{2≤m≤terms} m(m−1) ρ^{m−2} a a' / s, ∂Ṫ/∂s = −Ṫ/s
        dt, dtd = _outer_derivative_sums(rho, a1, a2, terms)
        r = g_td / s
        g_rho = g_t * dt + r * dtd
        g_s = -r * td
        g1, g2 = _coefficient_grads(rho, g_t, r, a1, a2, terms)
        # ρ = k12/s, s = √(k11 k22): ∂ρ/∂k11 = −ρ/(2 k11), ∂s/∂k11 = s/(2 k11) (k22 alike)
        common = (s * g_s - rho * g_rho) * 0.5
        dk1 = (g1 * _da(a1, w11, terms)).sum(-1) + (common / w11[:, :, None]).sum(2)
        dk2 = (g2 * _da(a2, w22, terms)).sum(-1) + (common / w22[:, None, :]).sum(1)
        n, mm = k12.shape[-2:]
        out = [None, None, None, None, None, None]
        if ctx.needs_input_grad[3]:
            out[3] = dk1.reshape(*batch, n, 1).sum_to_size(k11.shape).to(k11.dtype)
        if ctx.needs_input_grad[4]:
            out[4] = (g_rho / s).reshape(*batch, n, mm).sum_to_size(k12.shape).to(k12.dtype)
        if ctx.needs_input_grad[5]:
            out[5] = dk2.reshape(*batch, 1, mm).sum_to_size(k22.shape).to(k22.dtype)
        return tuple(out)


def _coefficient_grads(rho: Tensor, g_t: Tensor, r: Tensor, a1: Tensor, a2: Tensor, terms: int):
    """G1[b, i, m] = Σ_j W_m[b, i, j] a2[b, j, m], G2[b, j, m] = Σ_i W_m[b, i, j] a1[b, i, m] for
    m ≤ terms, W_m = g_t ρ^m (m < terms) + r m ρ^{m−1} (1 ≤ m ≤ terms)."""
    lib = _native_lib(rho)
    if lib is not None:
        return _native_coefficient_grads(lib, rho, g_t, r, a1, a2, terms)
    bsz, n1, n2 = rho.shape
    g1 = torch.zeros(bsz, n1, terms + 1, dtype=rho.dtype, device=rho.device)
    g2 = torch.zeros(bsz, n2, terms + 1, dtype=rho.dtype, device=rho.device)
    prev = torch.empty_like(rho)  # ρ^{m−1}
    power = torch.ones_like(rho)  # ρ^m
    work = torch.empty_like(rho)
    for m in range(terms + 1):
        if m < terms:
            torch.mul(g_t, power, out=work)
        else:
            work.zero_()
        if m >= 1:
            work.addcmul_(r, prev, value=float(m))
        g1[:, :, m:m + 1] = torch.bmm(work, a2[:, :, m:m + 1])
        g2[:, :, m:m + 1] = torch.bmm(work.transpose(1, 2), a1[:, :, m:m + 1])
        prev.copy_(power)
        power.mul_(rho)
    return g1, g2


def _native_coefficient_grads(lib, rho, g_t, r, a1, a2, terms: int):
    bsz, n1, n2 = rho.shape
    rho, g_t, r = rho.contiguous(), g_t.contiguous(), r.contiguous()
    g1 = torch.empty(bsz, n1, terms + 1, dtype=torch.float64)
    g2 = torch.empty(bsz, n2, terms + 1, dtype=torch.float64)
    for b in range(bsz):
        a1b, a2t = a1[b].contiguous(), a2[b, :, :terms + 1].T.contiguous()
        g2t = torch.zeros(terms + 1, n2, dtype=torch.float64)
        p, pp = torch.empty(n2, dtype=torch.float64), torch.empty(n2, dtype=torch.float64)
        # one thread: every row adds into the same g2t
        lib.mehler_grad_rows(rho[b].data_ptr(), g_t[b].data_ptr(), r[b].data_ptr(), n1, n2,
                             a1b.data_ptr(), a1b.shape[1], a2t.data_ptr(), terms, g1[b].data_ptr(),
                             terms + 1, g2t.data_ptr(), p.data_ptr(), pp.data_ptr())
        g2[b] = g2t.T
    return g1, g2


# ---------------------------------------------------------------- any shapes, few distinct variances
def _distinct(k: Tensor) -> tuple[Tensor, Tensor]:
    values, inverse = torch.unique(_wide(k).reshape(-1), return_inverse=True)
    return values, inverse


def _pair_setup(act, terms, kmax, k11, k12, k22):
    """Per-entry gathers of both sides' coefficients (distinct variances integrated once)."""
    shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
    w11, w12, w22 = (_wide(t).expand(shape).reshape(-1) for t in (k11, k12, k22))
    v1, i1 = _distinct(w11)
    v2, i2 = _distinct(w22)
    a1 = coefficients(act, v1, terms + 3, kmax)
    a2 = coefficients(act, v2, terms + 3, kmax)
    rho, s = _rho(w11, w12, w22)
    return shape, w11, w22, (a1, i1), (a2, i2), rho, s


def _products(a1: Tensor, i1: Tensor, a2: Tensor, i2: Tensor):
    """m ↦ a1[i1, m] · a2[i2, m] per entry, gathered from contiguous rows of the transposed
    coefficients (a column gather from the (distinct, terms) layout touches one cache line per
    entry and term: measured ~10× slower at 6000 terms)."""
    a1t, a2t = a1.T.contiguous(), a2.T.contiguous()
    return lambda m: a1t[m].index_select(0, i1) * a2t[m].index_select(0, i2)


def _series(rho: Tensor, coefficient, first: int, last: int, weights=None) -> Tensor:
    """Σ_{m=first}^{last−1} c_m coefficient(m) ρ^{m−first} (per-entry coefficients) by Horner."""
    out = torch.zeros_like(rho)
    for m in range(last - 1, first - 1, -1):
        c = 1.0 if weights is None else float(weights[m])
        out.mul_(rho)
        if c != 0.0:
            out.add_(coefficient(m), alpha=c)
    return out


class _Pairs(torch.autograd.Function):
    """(T, Ṫ) for broadcasting k11, k12, k22 whose variances take few distinct values (an angle
    table's nodes: one); per-entry gradients."""

    @staticmethod
    def forward(act, terms: int, kmax: float, k11: Tensor, k12: Tensor, k22: Tensor):
        shape, _, _, (a1, i1), (a2, i2), rho, s = _pair_setup(act, terms, kmax, k11, k12, k22)
        c = _products(a1, i1, a2, i2)
        m = torch.arange(terms + 1, dtype=torch.float64)
        t = _series(rho, c, 0, terms)
        td = _series(rho, c, 1, terms + 1, m).div_(s)
        return t.reshape(shape).to(k12.dtype), td.reshape(shape).to(k12.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.act, ctx.terms, ctx.kmax = inputs[:3]
        ctx.save_for_backward(*inputs[3:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_t, g_td):
        k11, k12, k22 = ctx.saved_tensors
        terms = ctx.terms
        shape, w11, w22, (a1, i1), (a2, i2), rho, s = _pair_setup(ctx.act, terms, ctx.kmax, k11, k12, k22)
        m = torch.arange(terms + 1, dtype=torch.float64)
        c = _products(a1, i1, a2, i2)
        t_rho = _series(rho, c, 1, terms, m)                                  # ∂T/∂ρ
        td = _series(rho, c, 1, terms + 1, m) / s
        td_rho = _series(rho, c, 2, terms + 1, m * (m - 1)) / s               # ∂Ṫ/∂ρ
        gt = None if g_t is None else _wide(g_t).expand(shape).reshape(-1)
        gtd = None if g_td is None else _wide(g_td).expand(shape).reshape(-1)
        grads = []
        for (own, io), (other, jo), k in (((a1, i1), (a2, i2), w11), ((a2, i2), (a1, i1), w22)):
            da = _da(own, _distinct_values(own, k, io), terms)
            dc = _products(da, io, other, jo)
            # ∂/∂k at fixed k12: the coefficients, then ρ (−ρ/2k) and s (s/2k)
            t_k = _series(rho, dc, 0, terms) - rho / (2 * k) * t_rho
            td_k = _series(rho, dc, 1, terms + 1, m) / s - rho / (2 * k) * td_rho - td / (2 * k)
            grads.append(_contract(gt, t_k, gtd, td_k))
        g12 = _contract(gt, t_rho / s, gtd, td_rho / s)
        out = []
        for grad, like, i in ((grads[0], k11, 3), (g12, k12, 4), (grads[1], k22, 5)):
            out.append(grad.reshape(shape).sum_to_size(like.shape).to(like.dtype)
                       if ctx.needs_input_grad[i] else None)
        return (None, None, None, *out)


def _distinct_values(a: Tensor, k: Tensor, inverse: Tensor) -> Tensor:
    """The distinct variances in the order of the rows of a (as ``_distinct`` returned them)."""
    values = torch.empty(a.shape[0], dtype=k.dtype, device=k.device)
    values[inverse] = k
    return values


def _contract(g_t, d_t: Tensor, g_td, d_td: Tensor) -> Tensor:
    total = torch.zeros_like(d_t)
    if g_t is not None:
        total += g_t * d_t
    if g_td is not None:
        total += g_td * d_td
    return total


# ---------------------------------------------------------------- u = v, one variance per entry
class _Diag(torch.autograd.Function):
    """E[φ(u)²] = Σ a_m², E[φ'(u)²] = Σ m a_m² / k."""

    @staticmethod
    def forward(act, terms: int, kmax: float, k: Tensor):
        values, inverse = _distinct(k)
        a = coefficients(act, values, terms + 1, kmax)
        m = torch.arange(terms + 1, dtype=torch.float64)
        t = (a[:, :terms] ** 2).sum(-1)
        td = (m[1:] * a[:, 1:] ** 2).sum(-1) / values
        return t[inverse].reshape(k.shape).to(k.dtype), td[inverse].reshape(k.shape).to(k.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.act, ctx.terms, ctx.kmax = inputs[:3]
        ctx.save_for_backward(inputs[3])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_t, g_td):
        (k,) = ctx.saved_tensors
        terms = ctx.terms
        values, inverse = _distinct(k)
        a = coefficients(ctx.act, values, terms + 3, ctx.kmax)
        da = _da(a, values, terms)
        m = torch.arange(terms + 1, dtype=torch.float64)
        td = (m[1:] * a[:, 1:terms + 1] ** 2).sum(-1) / values
        d_t = (2 * a[:, :terms] * da[:, :terms]).sum(-1)
        d_td = (2 * m[1:] * a[:, 1:terms + 1] * da[:, 1:]).sum(-1) / values - td / values
        grad = torch.zeros(k.numel(), dtype=torch.float64, device=k.device)
        if g_t is not None:
            grad += _wide(g_t).reshape(-1) * d_t[inverse]
        if g_td is not None:
            grad += _wide(g_td).reshape(-1) * d_td[inverse]
        return None, None, None, grad.reshape(k.shape).to(k.dtype)
