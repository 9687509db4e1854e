"""Shared pieces of the float64 cross-entropy references of the tests."""
import numpy as np
import scipy.integrate


def softmax_blocks(s: np.ndarray) -> np.ndarray:
    """blockdiag(diag(σ_i) − σ_i σ_iᵀ) for the (N, O) softmax outputs σ: ∂σ/∂f, (N·O)²."""
    n, o = s.shape
    d = np.zeros((n * o, n * o))
    for i in range(n):
        d[i * o:(i + 1) * o, i * o:(i + 1) * o] = np.diag(s[i]) - np.outer(s[i], s[i])
    return d


def flow_reference(th: np.ndarray, p: np.ndarray, f0: np.ndarray, eta: float, times: list[float],
                   method: str = "LSODA", rtol: float = 1e-12, atol: float = 1e-14):
    """(f_X, G) at ``times`` of ḟ = −(η/N) Θ (σ(f) − P), Ġ = σ(f) − P by scipy's ``solve_ivp`` on
    the augmented system with the analytic Jacobian [[−(η/N)ΘD, 0], [D, 0]] (Θ the full (N·O)²
    matrix, or an N×N one shared by the outputs, applied per class); one-hot rows use
    −Σ_{j≠c} σ_j for the true class (σ_c − 1 cancels to rounding noise, which G would integrate
    into an error growing like ε·t)."""
    n, o = f0.shape
    m = n * o
    shared = th.shape == (n, n) and m != n
    th_flat = np.kron(th, np.eye(o)) if shared else th
    apply = (lambda r: (th @ r.reshape(n, o)).reshape(-1)) if shared else (lambda r: th @ r)
    true = (p == 1) & np.all((p == 0) | (p == 1), axis=1, keepdims=True)

    def soft(f):
        e = np.exp(f - f.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def rhs(_, z):
        s = soft(z[:m].reshape(n, o))
        r = np.where(true, -np.where(true, 0.0, s).sum(1, keepdims=True), s - p).reshape(-1)
        return np.concatenate([-(eta / n) * apply(r), r])

    def jac(_, z):
        d = softmax_blocks(soft(z[:m].reshape(n, o)))
        j = np.zeros((2 * m, 2 * m))
        j[:m, :m], j[m:, :m] = -(eta / n) * th_flat @ d, d
        return j
    z0 = np.concatenate([f0.reshape(-1), np.zeros(m)])
    sol = scipy.integrate.solve_ivp(rhs, (0.0, max(times)), z0, method=method, t_eval=times, jac=jac,
                                    rtol=rtol, atol=atol)
    assert sol.success, sol.message
    return sol.y[:m].T.reshape(-1, n, o), sol.y[m:].T.reshape(-1, n, o)
