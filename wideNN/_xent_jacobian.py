"""Linear solves with the Jacobian of the cross-entropy flow, for the implicit (Rosenbrock) steps.

State (f_X, G), ḟ_X = −(η/N) Θ r, Ġ = r, r = σ(f_X) − P, σ = softmax.  The Jacobian is
J = [[−(η/N) Θ D, 0], [D, 0]] with D = blockdiag_i(diag(s_i) − s_i s_iᵀ), s = σ(f_X), and a
stage solve (I/γ − hJ) x = b reduces to the N·O system

    (I + c Θ D) x_f = γ b_f,   c = γ h η/N,        x_G = γ (b_G + h D x_f).

* Full NTK (N, N, O, O): I + cΘD is formed and LU-factored once per step (the size of Θ itself).
* Shared NTK (Θ ⊗ I), 2(O−1)N² ≤ ``CLASSWISE_MAX``: exact, class by class.  With a reference class
  (the one whose smallest probability is largest) and the differences g = x_a − x_ref, the
  system is g + cΘ(S̃g + U(s̃ᵀg)) = Tb, U_i = s_i,ref 1 − s̃_i: diagonal in the classes up to a
  rank-one term per row, so with B_a = I + cΘ diag(s_a), Z_a = B_a⁻¹Θ, one N×N capacitance
  C = I + c Σ_a S_a Z_a U_a gives q = sᵀg and then every class: O N×N factorizations instead of
  one (N·O)³ one.  (Splitting D = diag(s) − s sᵀ without a reference class would leave the
  shift direction D·1 = 0 in C, which then tends to 0 like 1/c: the reference removes it.)
* Shared NTK, larger: matrix-free.  Woodbury gives (I + cΘD)⁻¹ b = b − cΘD^{½} w with
  (I + c D^{½} Θ D^{½}) w = D^{½} b, a symmetric positive definite system solved by conjugate
  gradients preconditioned with (I + c Θ ⊗ D̄)⁻¹, D̄ = mean_i D_i, diagonal in the eigenbasis of
  Θ and of D̄ (exact when all rows share one distribution; ~80 iterations for widely spread soft
  targets).  Memory O(N² + N·O²): no (N·O)² matrix (20 GB at N = 5000, O = 10).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["jacobian_solver", "CLASSWISE_MAX", "CG_RTOL", "CG_MAXITER"]

GAMMA = 0.25                  # RODAS's diagonal coefficient γ (wideNN._odes)
#: the most numbers the class-wise exact solve of a shared NTK may hold (2(O−1) N×N matrices,
#: LU factors and B⁻¹Θ; 5·10⁷ = 400 MB, N ≈ 1650 at O = 10); above it conjugate gradients
CLASSWISE_MAX = 50_000_000
#: relative residual at which conjugate gradients stop, and their most iterations
CG_RTOL, CG_MAXITER = 1e-13, 5000

Solve = Callable[[Tensor], Tensor]


def _apply_d(s: Tensor, v: Tensor) -> Tensor:
    """D v = s ⊙ v − s (sᵀv) per row: the softmax Jacobian, rows of (N, O)."""
    return s * v - s * (s * v).sum(-1, keepdim=True)


def _blocks(s: Tensor) -> Tensor:
    """D_i = diag(s_i) − s_i s_iᵀ, (N, O, O)."""
    return torch.diag_embed(s) - s[:, :, None] * s[:, None, :]


def _dense(theta: Tensor, s: Tensor, c: float) -> Solve:
    n, o = s.shape
    d = _blocks(s)
    if theta.dim() == 4:                                       # Θ[i, j, a, b]
        a = torch.einsum("ijac,jcb->iajb", theta, d)
    else:
        a = theta[:, None, :, None] * d.permute(1, 0, 2)[None]
    a = (c * a).reshape(n * o, n * o)
    a.diagonal().add_(1.0)
    lu, piv = torch.linalg.lu_factor(a)
    return lambda b: torch.linalg.lu_solve(lu, piv, b.reshape(-1, 1)).reshape(n, o)


def _classwise(theta: Tensor, s: Tensor, c: float) -> Solve:
    """Exact solve for a shared Θ in O(O·N³): one N×N factorization per class and one for
    the rows' coupling (module docstring), instead of an (N·O)³ one."""
    n, o = s.shape
    ref = int(s.amin(0).argmax())                 # the reference class: largest smallest probability
    perm = torch.tensor([a for a in range(o) if a != ref] + [ref], device=s.device)
    sp = s[:, perm]
    s_free, s_ref = sp[:, :-1].T, sp[:, -1]                         # (O−1, N), (N,)
    u = s_ref[None, :] - s_free                                     # U_i = s_iO 1 − s̃_i, (O−1, N)
    b_mat = c * theta[None] * s_free[:, None, :]
    b_mat.diagonal(dim1=1, dim2=2).add_(1.0)                        # B_a = I + cΘ diag(s_a)
    lu, piv = torch.linalg.lu_factor(b_mat)
    del b_mat                                                       # peak: two (O−1)·N² arrays
    z = torch.linalg.lu_solve(lu, piv, theta.expand(o - 1, n, n))   # Z_a = B_a⁻¹ Θ
    cap = c * torch.einsum("an,anm,am->nm", s_free, z, u)          # (may add a third, briefly)
    cap.diagonal().add_(1.0)                                        # I + c Σ_a S_a Z_a U_a
    cap_lu, cap_piv = torch.linalg.lu_factor(cap)

    def solve(b: Tensor) -> Tensor:
        bp = b[:, perm]
        diff = (bp[:, :-1] - bp[:, -1:]).T                          # T b: differences to the reference
        y = torch.linalg.lu_solve(lu, piv, diff[:, :, None])[:, :, 0]
        q = torch.linalg.lu_solve(cap_lu, cap_piv, (s_free * y).sum(0)[:, None])[:, 0]
        g = y - c * (z @ (u * q)[:, :, None])[:, :, 0]
        x_ref = bp[:, -1] + c * (theta @ (s_ref * q))
        xp = torch.cat([(g + x_ref[None]).T, x_ref[:, None]], 1)
        return torch.empty_like(xp).index_copy_(1, perm, xp)
    return solve


def _cg(theta: Tensor, s: Tensor, c: float, eig: tuple[Tensor, Tensor]) -> Solve:
    lam, vec = eig
    d = _blocks(s)
    dl, dq = torch.linalg.eigh(d)
    root = (dq * dl.clamp_min(0.0).sqrt()[:, None, :]) @ dq.transpose(1, 2)        # D_i^{½}
    mu, u = torch.linalg.eigh(d.mean(0))
    scale = 1.0 + c * lam[:, None] * mu.clamp_min(0.0)[None, :]

    def half(v: Tensor) -> Tensor:
        return torch.einsum("nab,nb->na", root, v)

    def op(w: Tensor) -> Tensor:
        return w + c * half(theta @ half(w))

    def prec(r: Tensor) -> Tensor:
        return vec @ ((vec.T @ r @ u) / scale) @ u.T

    def solve(b: Tensor) -> Tensor:
        w = _pcg(op, prec, half(b))
        return b - c * (theta @ half(w))
    return solve


def _pcg(op: Solve, prec: Solve, rhs: Tensor) -> Tensor:
    """Preconditioned conjugate gradients for op(w) = rhs (op symmetric positive definite)."""
    w = torch.zeros_like(rhs)
    r = rhs.clone()
    stop = CG_RTOL * float(rhs.norm())
    if stop == 0.0:
        return w
    z = prec(r)
    p, rz = z, float((r * z).sum())
    for _ in range(CG_MAXITER):
        q = op(p)
        alpha = rz / float((p * q).sum())
        w = w + alpha * p
        r = r - alpha * q
        if float(r.norm()) <= stop:
            return w
        z = prec(r)
        rz, rz_old = float((r * z).sum()), rz
        p = z + (rz / rz_old) * p
    raise RuntimeError(f"conjugate gradients of the implicit cross-entropy step did not reach a "
                       f"relative residual of {CG_RTOL:g} in {CG_MAXITER} iterations")


def jacobian_solver(theta: Tensor, s: Tensor, h: float, rate: float,
                    eig: Callable[[], tuple[Tensor, Tensor]]) -> Solve:
    """b ↦ (I/γ − hJ)⁻¹ b for b shaped (2, N, O) (f_X, G) at σ(f_X) = ``s``; ``rate`` = η/N,
    ``eig()`` the eigendecomposition of a shared Θ (asked for only by the matrix-free path)."""
    c = GAMMA * h * rate
    n, o = s.shape
    if theta.dim() == 4:
        solve_f = _dense(theta, s, c)
    elif 2 * (o - 1) * n * n <= CLASSWISE_MAX:
        solve_f = _classwise(theta, s, c)
    else:
        solve_f = _cg(theta, s, c, eig())

    def solve(b: Tensor) -> Tensor:
        xf = solve_f(GAMMA * b[0])
        return torch.stack([xf, GAMMA * (b[1] + h * _apply_d(s, xf))])
    return solve
