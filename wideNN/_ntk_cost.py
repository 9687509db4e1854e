"""The cost model behind ``empirical_ntk(method="auto")`` for models that are not MLPs.

It estimates, in FLOPs of one large matrix product, what the ``jacobian`` and ``ntk_vp`` code
paths of ``wideNN.empirical`` would do for a given tiling, and picks the cheaper; the formulas
and where the constants come from are in the ``wideNN.empirical`` module docstring
(after Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural Tangent Kernel", ICML 2022).
"""
from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode

# One FLOP of a vmapped vjp/jvp pass over small per-example graphs costs about κ FLOPs of one
# large matrix product: fitted per case on CPU from 4 (convolutions, O = 100) to 13 (a
# LayerNorm MLP, where elementwise ops the FLOP counter ignores add up).  Storing one number of
# a Jacobian or tangent block costs about μ: first touch of fresh pages plus the write and the
# read, ~2.6 ns per float32 on the CPU of the RESULTS.md table against ~75 GFLOP/s GEMMs.
_AUTODIFF_COST = 9.0
_STORE_COST = 100.0


def _forward_flops(counter: FlopCounterMode | None, n_params: int) -> float:
    """F, the FLOPs of one single-example forward, floored at 2P: every parameter takes part
    in at least one multiply-add (and autodiff reads and writes it on every pass), and ops the
    counter does not know (elementwise, gathers) would otherwise count as free."""
    counted = counter.get_total_flops() if counter is not None else 0
    return float(max(counted, 2 * n_params))


def _tile_counts(n: int, m: int, sym: bool, chunk: int, keep_cols: bool) -> dict[str, float]:
    """What ``_tiled`` does for (N, M) examples in tiles of ``chunk``, in closed form:

    - ``pairs``: E = Σ a·b over the a×b blocks it computes (N·M, or (N² + Σᵢ sᵢ²)/2 for the
      upper triangle of tiles of sizes sᵢ when x2=None);
    - ``built``: R, the examples featurized (column features are rebuilt for every row tile
      unless kept, or there is a single tile);
    - ``cols``: Σ b and ``cols_sq``: Σ b² over the blocks."""
    def sums(size: int) -> tuple[int, float, float, float]:
        # q full tiles of ``chunk`` and a last one of r: (tiles, Σ s², Σ j·s, Σ j·s²), j from 0
        q, r = divmod(size, chunk)
        if r == 0:
            q, r = q - 1, chunk
        tri = q * (q - 1) / 2.0
        return q + 1, q * chunk ** 2 + r ** 2, chunk * tri + q * r, chunk ** 2 * tri + q * r ** 2

    rows, sq_n, js_n, jsq_n = sums(n)
    single = rows == 1 and m <= chunk
    if sym and not single:
        # blocks (i, j ≥ i): column tile j is paired with the j + 1 row tiles i ≤ j
        return {"pairs": (n * n + sq_n) / 2.0, "built": n if keep_cols else n + js_n,
                "cols": js_n + n, "cols_sq": jsq_n + sq_n}
    if sym:
        return {"pairs": float(n * n), "built": float(n), "cols": float(n), "cols_sq": float(n * n)}
    sq_m = sums(m)[1]
    return {"pairs": float(n * m), "built": n + (m if single or keep_cols else rows * m),
            "cols": float(rows * m), "cols_sq": rows * sq_m}


def _method_costs(n: int, m: int, sym: bool, o: int, n_params: int, flops: float, mode: str,
                  jac_plan: tuple[int, bool], vp_plan: tuple[int, bool]) -> dict[str, float]:
    """Cost of the jacobian and ntk_vp paths in matrix-product FLOPs (module docstring):

        jacobian ≈ κ·(1 + 2O)·F·R + μ·O·P·R + 2·E·O^k·P      (k = 2 in full mode, else 1)
        ntk_vp   ≈ κ·2·O·F·Σ(a·b + b²) + μ·O·P·Σb           (sums over the a×b tiles)

    ``jac_plan`` and ``vp_plan`` are ``_plan``'s (chunk, column features kept) for each path
    (ntk_vp keeps none: each tile redoes the vjp of its columns); with ``sym`` (x2=None) m = n."""
    tiles = _tile_counts(n, m, sym, jac_plan[0], jac_plan[1])
    k = 2 if mode == "full" else 1
    jacobian = ((_AUTODIFF_COST * (1 + 2 * o) * flops + _STORE_COST * o * n_params) * tiles["built"]
                + 2.0 * tiles["pairs"] * o ** k * n_params)
    tiles = _tile_counts(n, m, sym, vp_plan[0], False)
    # an a×b tile: vjps through b columns for b·O cotangents (2b²·O·F), which form b·O
    # tangents of P numbers, then jvps through a rows along each (2ab·O·F)
    ntk_vp = (_AUTODIFF_COST * 2.0 * o * flops * (tiles["pairs"] + tiles["cols_sq"])
              + _STORE_COST * o * n_params * tiles["cols"])
    return {"jacobian": jacobian, "ntk_vp": ntk_vp}


def _choose_method(costs: dict[str, float]) -> str:
    """ntk_vp only when strictly cheaper: jacobian is the default on ties."""
    return "ntk_vp" if costs["ntk_vp"] < costs["jacobian"] else "jacobian"
