"""Analytic NNGP/NTK: Monte Carlo over random networks, Jacobian NTKs of wide networks,
homogeneity identities, gradients, tiling, numerical safety and bad input."""
import math

import pytest
import torch
from torch.func import functional_call, jacrev

import wideNN as wn
from wideNN import activations as A
from wideNN.analytic import _Recursion, _generic_tiled

F64 = torch.float64


def _inputs(n=4, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64)


# ----------------------------------------------------------------------------- Monte Carlo
def _penultimate_nngp_samples(arch, x, width, nets, seed):
    """Per network, E_readout[f(x) f(x')] given the hidden layers (exact over the readout):
    σ_b² + σ_w² φ(h)·φ(h')/n.  Networks are sampled in a batch (vectorized over nets)."""
    g = torch.Generator().manual_seed(seed)
    w, b = arch.weight_variance, arch.bias_variance
    h = x.expand(nets, *x.shape)
    fan_in = x.shape[-1]
    for _ in range(arch.depth):
        W = torch.randn(nets, fan_in, width, generator=g, dtype=F64)
        bias = torch.randn(nets, 1, width, generator=g, dtype=F64)
        h = math.sqrt(w / fan_in) * torch.bmm(h, W) + math.sqrt(b) * bias
        h = arch.phi(h)
        fan_in = width
    return b + w * torch.bmm(h, h.transpose(1, 2)) / fan_in  # (nets, N, N)


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh", "sin", "gelu", "abs", "elu"])
def test_nngp_recursion_equals_monte_carlo_over_wide_networks(activation):
    arch = wn.Architecture(depth=3, activation=activation, weight_variance=1.7, bias_variance=0.2)
    x = _inputs(4, 6)
    samples = _penultimate_nngp_samples(arch, x, width=256, nets=120, seed=1)
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    k = arch.nngp(x)
    # 5 standard errors of the sample mean, plus the O(1/width) finite-width bias (≤ 2%)
    assert bool(((mean - k).abs() <= 5 * se + 0.02 * k.abs().max()).all()), (mean - k) / se


def _jacobian_ntk(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)  # (N, O, *shape)
    flat = torch.cat([j.reshape(x.shape[0], net.out_features, -1) for j in jac.values()], -1)
    return torch.einsum("nop,mop->nm", flat, flat) / net.out_features  # trace mode: mean over outputs


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mean_empirical_ntk_over_networks_equals_analytic(parameterization):
    arch = wn.Architecture(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.3,
                           parameterization=parameterization)
    x = _inputs(5, 8, seed=3)
    width, nets = 256, 32
    theta = arch.ntk(x, widths=[width, width])
    samples = torch.stack([_jacobian_ntk(arch.build(8, width, 1, seed=s, dtype=F64), x)
                           for s in range(nets)])
    se = samples.std(0) / math.sqrt(nets)
    # 5 standard errors plus the O(depth/width) finite-width bias (measured ~2% at width 256)
    assert bool(((samples.mean(0) - theta).abs() <= 5 * se + 0.04 * theta.abs()).all())


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_empirical_ntk_of_one_very_wide_network_approaches_analytic(parameterization):
    arch = wn.Architecture(depth=1, activation="erf", weight_variance=1.5, bias_variance=0.3,
                           parameterization=parameterization)
    x = _inputs(6, 8, seed=4)
    errors = {}
    for width in (128, 8192):
        theta = arch.ntk(x, widths=[width])
        errs = [(torch.linalg.norm(_jacobian_ntk(arch.build(8, width, 3, seed=s, dtype=F64), x) - theta)
                 / torch.linalg.norm(theta)).item() for s in range(3)]
        errors[width] = sum(errs) / len(errs)
    # relative error ~ 1/√width: 64× wider should be ~8× closer; 3× keeps statistical margin
    assert errors[8192] < 0.05, errors
    assert errors[8192] < errors[128] / 3, errors


def test_standard_parameterization_has_same_nngp_and_width_dependent_ntk():
    x = _inputs()
    ntk_arch = wn.Architecture(depth=2, activation="erf", weight_variance=1.5, bias_variance=0.1)
    std_arch = ntk_arch.replace(parameterization="standard")
    torch.testing.assert_close(std_arch.nngp(x), ntk_arch.nngp(x))
    with pytest.raises(ValueError, match="widths"):
        std_arch.ntk(x)
    # depth 1 written out: Θ = n·T(K¹) + 1 + σ_w² Ṫ(K¹)·(x·x' + 1)
    one = std_arch.replace(depth=1)
    k1 = 0.1 + 1.5 * x @ x.T / x.shape[1]
    d = k1.diagonal()
    t, td = A.Erf().dual(d[:, None], k1, d[None, :])
    expected = 37 * t + 1 + 1.5 * td * (x @ x.T + 1)
    torch.testing.assert_close(one.ntk(x, widths=37), expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- identities
def test_relu_arccos_kernel_homogeneity_identities():
    """Seed notes: for κ = E[ψ(Z_p)ψ(Z_q)] (ReLU, Σ the Gram of x_p, x_q),
    x_p ∂²κ/∂x_p∂x_qᵀ x_q = κ and x_p ∂²κ/∂x_p∂x_pᵀ x_p = 0."""
    relu = A.ReLU()

    def kappa(xp, xq):
        return relu.dual(xp @ xp, xp @ xq, xq @ xq)[0]

    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        xp, xq = torch.randn(2, 7, generator=g, dtype=F64)
        hpq = torch.func.jacfwd(torch.func.grad(kappa, argnums=0), argnums=1)(xp, xq)
        hpp = torch.func.hessian(kappa, argnums=0)(xp, xq)
        hqq = torch.func.hessian(kappa, argnums=1)(xp, xq)
        k = kappa(xp, xq)
        torch.testing.assert_close(xp @ hpq @ xq, k, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xp @ hpp @ xp, torch.zeros((), dtype=F64), atol=1e-10, rtol=0)
        torch.testing.assert_close(xq @ hqq @ xq, torch.zeros((), dtype=F64), atol=1e-10, rtol=0)


def test_relu_closed_form_recursion_by_hand():
    """Depth 1, one pair of points: Cho & Saul's arc-cosine formula written out."""
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64)
    w, b = 2.0, 0.1
    k11 = b + w * 1.0 / 2
    k12 = b + w * 0.6 / 2
    theta = math.acos(k12 / k11)
    expected = b + w / (2 * math.pi) * k11 * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
    expected_ntk = expected + w * (math.pi - theta) / (2 * math.pi) * k12
    nngp, ntk = wn.Architecture(1, "relu", w, b).kernels(x)
    assert abs(nngp[0, 1].item() - expected) < 1e-14
    assert abs(ntk[0, 1].item() - expected_ntk) < 1e-14


# ----------------------------------------------------------------------------- paths agree
@pytest.mark.parametrize("symmetric", [True, False])
def test_fused_relu_path_equals_generic_recursion(symmetric):
    arch = wn.Architecture(depth=4, activation="relu", weight_variance=2.0, bias_variance=0.05)
    x1, x2 = _inputs(70, 9, seed=1), _inputs(33, 9, seed=2)
    other = None if symmetric else x2
    fast = arch.kernels(x1, other, block_size=16)
    slow = _generic_tiled(_Recursion(arch.phi, 4, 2.0, 0.05), x1, other, 7)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_tiling_diag_batching_and_x2_none_are_consistent():
    arch = wn.Architecture(depth=2, activation="gelu", weight_variance=1.3, bias_variance=0.2)
    x1, x2 = _inputs(20, 4, seed=1), _inputs(11, 4, seed=2)
    full = arch.kernels(x1, x2)
    tiled = arch.kernels(x1, x2, block_size=3)
    for a, b in zip(full, tiled):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    self_none, self_same = arch.kernels(x1), arch.kernels(x1, x1)
    for a, b in zip(self_none, self_same):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    diag = arch.kernels(x1, diag=True)
    for a, b in zip(diag, self_none):
        torch.testing.assert_close(a, b.diagonal(), rtol=1e-10, atol=1e-12)
    paired = arch.kernels(x1[:11], x2, diag=True)
    for a, b in zip(paired, full):
        torch.testing.assert_close(a, b[:11].diagonal(), rtol=1e-12, atol=1e-12)
    batched = arch.kernels(torch.stack([x1[:5], x1[5:10]]), torch.stack([x2[:3], x2[3:6]]))
    torch.testing.assert_close(batched[0][1], arch.nngp(x1[5:10], x2[3:6]))


def test_float32_agrees_with_float64():
    arch = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
    x = _inputs(50, 30)
    k64, t64 = arch.kernels(x)
    k32, t32 = arch.kernels(x.float())
    assert k32.dtype == torch.float32
    torch.testing.assert_close(k32.double(), k64, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t32.double(), t64, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- safety
@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "tanh", "leaky_relu", "sin", "step"])
def test_gradients_wrt_variances_pass_gradcheck_including_coincident_points(activation):
    x = _inputs(3, 4)
    x2 = torch.cat([x[:2], _inputs(2, 4, seed=9)])  # rows 0,1 coincide with x1's

    def f(w, b):
        k, t = wn.analytic.kernels(x, x2, depth=2, activation=activation,
                                   weight_variance=w, bias_variance=b)
        return k, t

    w = torch.tensor(1.6, dtype=F64, requires_grad=True)
    b = torch.tensor(0.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w, b), eps=1e-6, atol=1e-6, rtol=1e-5)
    k, t = f(w, b)
    grads = torch.autograd.grad((k.sum() + t.sum()), (w, b))
    assert all(bool(torch.isfinite(g_).all()) for g_ in grads)


def test_gradients_finite_at_exactly_coincident_inputs_and_zero_bias():
    x = _inputs(4, 3)
    w = torch.tensor(2.0, dtype=F64, requires_grad=True)
    b = torch.tensor(0.0, dtype=F64, requires_grad=True)
    k, t = wn.analytic.kernels(x, None, depth=5, activation="relu", weight_variance=w, bias_variance=b)
    gw, gb = torch.autograd.grad(k.sum() + t.sum(), (w, b))
    assert math.isfinite(gw.item()) and math.isfinite(gb.item())


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh", "gelu", "sin", "identity"])
def test_depth_100_stays_finite_and_flattens(activation):
    act = A.Tanh(quadrature_degree=16) if activation == "tanh" else activation  # 100 quadrature layers
    arch = wn.Architecture(depth=100, activation=act, weight_variance=1.0 if activation != "relu" else 2.0,
                           bias_variance=0.05)
    x = _inputs(6, 5)
    k, t = arch.kernels(x)
    assert bool(torch.isfinite(k).all()) and bool(torch.isfinite(t).all())
    corr = k / torch.sqrt(k.diagonal()[:, None] * k.diagonal()[None, :])
    assert bool((corr <= 1 + 1e-9).all())


def test_memory_of_tiled_kernel_is_bounded(tmp_path):
    """Peak RSS of a 2000×2000 float64 NNGP+NTK stays near the size of the two outputs."""
    import subprocess, sys, textwrap
    script = textwrap.dedent("""
        import resource, torch, wideNN as wn
        torch.set_num_threads(1)
        x = torch.randn(2000, 64, dtype=torch.float64)
        arch = wn.Architecture(2, "relu", 2.0, 0.1)
        arch.kernels(x[:64])  # warm up the allocator
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        k, t = arch.kernels(x)
        k2, t2 = wn.Architecture(1, "erf", 1.5, 0.1).kernels(x)
        del k2, t2
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024 / (2 * k.numel() * 8))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    ratio = float(out.stdout.strip().splitlines()[-1])
    # outputs of both calls: up to 2× one pair; tiles add a few percent
    assert ratio < 2.5, ratio


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    arch = wn.Architecture(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    x = _inputs()
    with pytest.raises(ValueError, match="NaN or inf"):
        arch.nngp(torch.tensor([[1.0, float("nan")]], dtype=F64))
    with pytest.raises(ValueError, match="NaN or inf"):
        arch.ntk(x, torch.full((2, 5), float("inf"), dtype=F64))
    with pytest.raises(ValueError, match="feature sizes"):
        arch.kernels(x, _inputs(3, 4))
    with pytest.raises(ValueError, match="2-D|shape"):
        arch.nngp(torch.ones(5, dtype=F64))
    with pytest.raises(TypeError, match="dtypes"):
        arch.nngp(x, x.float())
    with pytest.raises(TypeError, match="floating"):
        arch.nngp(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        arch.nngp(x.numpy())
    with pytest.raises(ValueError, match="diag"):
        arch.kernels(x, _inputs(3), diag=True)
    with pytest.raises(ValueError, match="block_size"):
        arch.kernels(x, block_size=0)
    for empty in (x[:0], torch.zeros(3, 0, dtype=F64)):
        for activation in ("relu", "erf", "tanh"):
            with pytest.raises(ValueError, match="empty batch|no features"):
                wn.Architecture(2, activation, 1.5, 0.1).kernels(empty)


def test_quadrature_kernels_are_exactly_symmetric():
    x = _inputs(7, 3) * 2  # larger variances: the quadrature's own asymmetry grows with them
    for activation in ("tanh", "elu"):
        k, t = wn.Architecture(2, activation, 2.0, 0.1).kernels(x)
        assert torch.equal(k, k.T) and torch.equal(t, t.T)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_rejects_mixed_devices():
    arch = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
    x = _inputs(300, 20)
    cpu = arch.kernels(x)
    gpu = arch.kernels(x.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="devices"):
        arch.nngp(x, x.cuda())
    erf = wn.Architecture(depth=2, activation="erf", weight_variance=1.5, bias_variance=0.1)
    torch.testing.assert_close(erf.nngp(x.cuda().float()).cpu().double(), erf.nngp(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_relu_path_equals_eager():
    """compile=True (torch.compile of the fused layer) computes the same numbers."""
    arch = wn.Architecture(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1)
    x1, x2 = _inputs(90, 12, seed=1), _inputs(41, 12, seed=2)
    for other in (None, x2):
        for a, b in zip(arch.kernels(x1, other, compile=True, block_size=32), arch.kernels(x1, other)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_equal_norm_inputs_use_the_table_and_agree_with_direct_quadrature(monkeypatch):
    import wideNN.analytic as analytic
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(6)  # equal norms: one variance per layer
    arch = wn.Architecture(depth=4, activation="tanh", weight_variance=1.7, bias_variance=0.2)
    via_table = arch.kernels(x[:5], x[5:])
    monkeypatch.setattr(analytic, "_common_variance", lambda *args: None)
    direct = arch.kernels(x[:5], x[5:])
    for a, b in zip(via_table, direct):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation, parameterization", [("relu", "ntk"), ("tanh", "ntk"), ("erf", "standard")])
@pytest.mark.parametrize("symmetric", [True, False])
def test_ntk_alone_equals_the_pair_without_storing_k(activation, parameterization, symmetric):
    """``Architecture.ntk`` skips the K output (compute_nngp=False) and returns the same Θ."""
    g = torch.Generator().manual_seed(3)
    # small (24 × 16) but tiled (blocks of 8): the tanh quadrature made a 70 × 40 version the
    # slowest test of the default run
    x = torch.randn(24, 5, dtype=torch.float64, generator=g)
    x2 = None if symmetric else torch.randn(16, 5, dtype=torch.float64, generator=g)
    arch = wn.Architecture(3, activation, 1.7, 0.2, parameterization=parameterization)
    widths = [64, 32, 16] if parameterization == "standard" else None
    _, pair = arch.kernels(x, x2, widths=widths, block_size=8)
    alone = arch.ntk(x, x2, widths=widths, block_size=8)
    assert torch.equal(alone, pair)
    k, t = wn.kernels(x, x2, depth=3, activation=activation, weight_variance=1.7, bias_variance=0.2,
                      parameterization=parameterization, widths=widths, compute_nngp=False, block_size=8)
    assert k is None and torch.equal(t, pair)
    with pytest.raises(ValueError, match="compute_nngp=False needs compute_ntk"):
        wn.kernels(x, depth=1, activation="relu", weight_variance=1.0, bias_variance=0.0,
                   compute_ntk=False, compute_nngp=False)
