"""Shared pieces of the float64 cross-entropy references of the tests."""
import numpy as np


def softmax_blocks(s: np.ndarray) -> np.ndarray:
    """blockdiag(diag(σ_i) − σ_i σ_iᵀ) for the (N, O) softmax outputs σ: ∂σ/∂f, (N·O)²."""
    n, o = s.shape
    d = np.zeros((n * o, n * o))
    for i in range(n):
        d[i * o:(i + 1) * o, i * o:(i + 1) * o] = np.diag(s[i]) - np.outer(s[i], s[i])
    return d
