"""Dual kernels: closed forms against independent quadrature, and the quadrature fallback."""
import math

import pytest
import torch
from scipy import integrate

import wideNN as wn
from wideNN import activations as A

# (k11, k12, k22) covering small/large variances, negative and near-±1 correlations
POINTS = [
    (1.0, 0.3, 2.0), (0.5, -0.4, 1.5), (2.0, 1.99, 2.0), (1.3, -1.29, 1.3), (0.1, 0.02, 0.3),
    (3.0, 0.0, 0.7), (1.0, 1.0, 1.0), (4.0, -3.9999, 4.0),
]


def _polar_reference(phi, degree, k11, k12, k22):
    """E[φ(u)φ(v)] for positively homogeneous φ of the given degree, as a 1-D angular integral.

    With (z1, z2) = r(cos a, sin a): u = √k11 r cos a, v = √k22 r cos(a − β), cos β = c, and
    E[r^{2·degree}] = 2^degree Γ(1 + degree) for a 2-D standard normal.
    """
    s1, s2 = math.sqrt(k11), math.sqrt(k22)
    c = max(-1.0, min(1.0, k12 / (s1 * s2)))
    beta = math.acos(c)
    radial = 2.0 ** degree * math.gamma(1 + degree)

    def f(a):
        return phi(s1 * math.cos(a)) * phi(s2 * math.cos(a - beta))

    # breakpoints where either argument changes sign, so quad sees smooth pieces
    pts = sorted({(p % (2 * math.pi)) for p in (math.pi / 2, 3 * math.pi / 2, beta + math.pi / 2,
                                                 beta + 3 * math.pi / 2)})
    val, _ = integrate.quad(f, 0.0, 2 * math.pi, points=pts, epsabs=1e-13, epsrel=1e-12, limit=200)
    return radial * val / (2 * math.pi)


def _leaky(alpha):
    return lambda x: x if x > 0 else alpha * x


def _leaky_d(alpha):
    return lambda x: 1.0 if x > 0 else alpha


KINKED = [
    ("relu", A.ReLU(), _leaky(0.0), _leaky_d(0.0)),
    ("leaky_relu", A.LeakyReLU(0.2), _leaky(0.2), _leaky_d(0.2)),
    ("abs", A.Abs(), _leaky(-1.0), _leaky_d(-1.0)),
]


@pytest.mark.parametrize("name,act,phi,dphi", KINKED, ids=[k[0] for k in KINKED])
@pytest.mark.parametrize("point", POINTS)
def test_piecewise_linear_closed_forms_match_angular_quadrature(name, act, phi, dphi, point):
    k11, k12, k22 = point
    t, td = act.dual(*(torch.tensor(v, dtype=torch.float64) for v in point))
    ref_t = _polar_reference(phi, 1, k11, k12, k22)
    ref_td = _polar_reference(dphi, 0, k11, k12, k22)
    scale = math.sqrt(k11 * k22)
    assert abs(t.item() - ref_t) <= 1e-10 * scale
    assert abs(td.item() - ref_td) <= 1e-10


@pytest.mark.parametrize("point", POINTS)
def test_step_closed_form_matches_angular_quadrature(point):
    t, td = A.Step().dual(*(torch.tensor(v, dtype=torch.float64) for v in point))
    assert abs(t.item() - _polar_reference(lambda x: float(x > 0), 0, *point)) <= 1e-10
    assert td.item() == 0.0


SMOOTH = ["erf", "gelu", "sin", "cos", "identity"]


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("point", [p for p in POINTS if p[0] <= 3.0])
def test_smooth_closed_forms_match_quadrature(name, point):
    act = A.get(name)
    ks = [torch.tensor(v, dtype=torch.float64) for v in point]
    t, td = act.dual(*ks)
    # an independent evaluation of the same integral: the generic quadrature at high degree
    qt, qtd = A.Activation._quadrature_dual(_with_degree(act, 96), *ks)
    scale = math.sqrt(point[0] * point[2]) + 1.0
    assert abs(t.item() - qt.item()) <= 1e-9 * scale
    assert abs(td.item() - qtd.item()) <= 1e-9 * scale


def _with_degree(act, degree):
    act = type(act)() if not isinstance(act, A.LeakyReLU) else act
    act.quadrature_degree = degree
    return act


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "abs", "erf", "gelu", "sin", "cos",
                                  "identity", "step", "tanh", "sigmoid", "softplus", "silu", "elu"])
def test_dual_diag_equals_dual_at_coincident_points(name):
    act = A.get(name)
    k = torch.tensor([0.05, 0.7, 2.5], dtype=torch.float64)
    t, td = act.dual(k, k, k)
    dt, dtd = act.dual_diag(k)
    tol = 1e-7 if name in ("relu", "step", "leaky_relu", "abs") else 1e-9  # θ = arccos(1 − ε) ~ √ε
    torch.testing.assert_close(t, dt, rtol=tol, atol=tol)
    if name != "relu":
        torch.testing.assert_close(td, dtd, rtol=tol, atol=tol)
    else:  # E[φ'(u)²] = P(u > 0) = 1/2; the dual at c = 1 agrees to arccos' rounding
        torch.testing.assert_close(td, dtd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,degree,rtol", [("erf", 32, 1e-8), ("tanh", 48, 1e-6)])
def test_quadrature_accuracy_is_as_documented(name, degree, rtol):
    """The accuracy table in the activations module docstring, checked at two rows."""
    ks = [torch.tensor(v, dtype=torch.float64) for v in (1.0, 0.6, 1.4)]
    act = A.get(name)
    exact = act.dual(*ks) if act.closed_form else A.Activation._quadrature_dual(_with_degree(act, 200), *ks)
    approx = A.Activation._quadrature_dual(_with_degree(act, degree), *ks)
    for e, a in zip(exact, approx):
        assert abs(e.item() - a.item()) <= rtol * abs(e.item())


def _nested_quad(f, k11, k12, k22):
    """E[f(u) f(v)] by adaptive quadrature over z1, z2 (scipy), independent of wideNN's rule."""
    from scipy import integrate
    a1, a2 = math.sqrt(k11), math.sqrt(k22)
    c = k12 / (a1 * a2)
    s = math.sqrt(1 - c * c)
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(z1):
        return integrate.quad(lambda z2: f(a2 * (c * z1 + s * z2)) * pdf(z2), -12, 12,
                              epsabs=1e-13, epsrel=1e-11, limit=200)[0]
    return integrate.quad(lambda z1: f(a1 * z1) * inner(z1) * pdf(z1), -12, 12,
                          epsabs=1e-13, epsrel=1e-11, limit=200)[0]


@pytest.mark.parametrize("variance", [1.0, 4.0, 16.0])
def test_tanh_quadrature_stays_accurate_at_large_variance(variance):
    """The node count grows with √k: at variance 16 a fixed degree-32 Gauss–Hermite rule was
    off by 0.4 (relative) in E[φ'φ']; the docstring table promises ≤ 4e-7 at degree 32."""
    point = (variance, 0.6 * variance, 1.4 * variance)
    t, td = A.Tanh().dual(*(torch.tensor(v, dtype=torch.float64) for v in point))
    ref_t = _nested_quad(math.tanh, *point)
    ref_td = _nested_quad(lambda x: 1.0 / math.cosh(x) ** 2, *point)
    assert abs(t.item() - ref_t) <= 1e-7 * abs(ref_t)
    assert abs(td.item() - ref_td) <= 1e-6 * abs(ref_td)
    dt, dtd = A.Tanh().dual_diag(torch.tensor([variance], dtype=torch.float64))
    assert abs(dt.item() - _nested_quad(math.tanh, variance, variance * (1 - 1e-15), variance)) <= 1e-6


def test_elementwise_uses_autograd_derivative_and_matches_named_activation():
    tanh_elem = A.Elementwise(torch.tanh)
    named = A.Tanh()
    ks = [torch.tensor(v, dtype=torch.float64) for v in (0.8, -0.3, 1.1)]
    for a, b in zip(tanh_elem.dual(*ks), named.dual(*ks)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)
    torch.testing.assert_close(tanh_elem.derivative(x), 1 - torch.tanh(x) ** 2)


def test_quadrature_monte_carlo_sanity_for_tanh():
    gen = torch.Generator().manual_seed(0)
    k11, k12, k22 = 1.5, 0.9, 0.8
    chol = torch.linalg.cholesky(torch.tensor([[k11, k12], [k12, k22]], dtype=torch.float64))
    z = torch.randn(2, 400_000, generator=gen, dtype=torch.float64)
    u, v = chol @ z
    samples = torch.tanh(u) * torch.tanh(v)
    t, _ = A.Tanh().dual(*(torch.tensor(x, dtype=torch.float64) for x in (k11, k12, k22)))
    se = samples.std() / math.sqrt(samples.numel())
    assert abs(t - samples.mean()) < 5 * se


def test_activation_forward_matches_torch():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    torch.testing.assert_close(A.get("gelu")(x), torch.nn.functional.gelu(x))
    torch.testing.assert_close(A.get("leaky_relu")(x), torch.nn.functional.leaky_relu(x, 0.01))
    torch.testing.assert_close(A.get("step")(x), (x > 0).double())
    # derivatives of closed-form activations agree with autograd
    for name in ["relu", "leaky_relu", "abs", "erf", "gelu", "sin", "cos", "identity", "sigmoid",
                 "softplus", "silu", "elu", "tanh"]:
        act = A.get(name)
        xg = (x + 0.05).requires_grad_(True)  # avoid the kink at 0
        (g,) = torch.autograd.grad(act(xg).sum(), xg)
        torch.testing.assert_close(act.derivative(x + 0.05), g, msg=name)


def test_unknown_activation_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation"):
        A.get("swishy")
    with pytest.raises(TypeError):
        A.get(3)
    with pytest.raises(ValueError, match="quadrature_degree"):
        A.Tanh(quadrature_degree=1)
    with pytest.raises(TypeError):
        A.Elementwise("tanh")
    with pytest.raises(ValueError):
        A.Elementwise(lambda x: x.sum())
    for not_elementwise in (lambda x: torch.softmax(x, -1), lambda x: torch.cumsum(x, 0), lambda x: x.flip(0)):
        with pytest.raises(ValueError, match="not elementwise"):
            A.Elementwise(not_elementwise)
    with pytest.raises(ValueError, match="alpha"):
        A.ELU(alpha=float("nan"))
    assert isinstance(wn.activations.LeakyReLU(negative_slope=0.1), torch.nn.Module)


@pytest.mark.parametrize("name", ["tanh", "softplus", "silu", "gelu", "relu"])
def test_equal_variance_table_matches_direct_duals(name):
    """The interpolated 1-D table (inputs of equal variance) against the direct duals."""
    act = A.get(name)
    k = 1.37
    c = torch.cat([torch.tensor([1.0, -1.0, 0.0, 0.99999, -0.99999]),
                   torch.linspace(-1, 1, 101)]).double()
    kk = torch.full_like(c, k)
    direct = act.dual(kk, k * c, kk)
    table = act.dual_equal_variance(k, k * c)
    for a, b in zip(table, direct):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())
