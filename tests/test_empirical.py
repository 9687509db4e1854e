"""Empirical NTK / NNGP: every method and mode against a float64 reference built directly
from torch.autograd Jacobians (one backward pass per example and output), convergence to the
analytic kernels, model invariance, tiling and input validation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import wideNN as wn
from wideNN import empirical as emp
from wideNN import _ntk_cost, _structured

DT = torch.float64
METHODS = ["jacobian", "ntk_vp", "structured"]
MODES = ["full", "diagonal", "trace"]


# ----------------------------------------------------------------------------- reference
def autograd_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, O, P) Jacobian of the model applied to each example alone, over trainable params."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for n in range(x.shape[0]):
        y = model(x[n:n + 1]).reshape(-1)
        for o in range(y.shape[0]):
            grads = torch.autograd.grad(y[o], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params)]))
    return torch.stack(rows).view(x.shape[0], -1, rows[0].numel())


def reference_kernels(model, x1, x2):
    """{mode: reference Θ} from one pair of autograd Jacobians."""
    j1, j2 = autograd_jacobian(model, x1), autograd_jacobian(model, x2)
    full = torch.einsum("nap,mbp->nmab", j1, j2)
    diag = full.diagonal(dim1=2, dim2=3)
    return {"full": full, "diagonal": diag, "trace": diag.mean(-1)}


def reference_ntk(model, x1, x2, mode):
    return reference_kernels(model, x1, x2)[mode]


def assert_close(a, b, tol=1e-10):
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = b.abs().max().clamp_min(1e-300)
    err = ((a - b).abs().max() / scale).item()
    assert err < tol, f"relative max error {err:.2e}"


# ----------------------------------------------------------------------------- models
def _x(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def mlp_models():
    torch.manual_seed(0)
    return {
        "wn_ntk_erf": wn.Architecture(2, "erf", 1.7, 0.3).build(5, 7, 3, seed=1, dtype=DT),
        "wn_standard_relu": wn.Architecture(2, "relu", 2.0, 0.2, "standard").build(5, [6, 4], 2, seed=2, dtype=DT),
        "wn_depth0": wn.Architecture(0, "relu", 1.0, 0.5).build(5, 3, 2, seed=3, dtype=DT),
        "seq_torch_acts": nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.GELU(),
                                        nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 4), nn.Softplus(beta=2.0),
                                        nn.Linear(4, 4), nn.ELU(0.7), nn.Linear(4, 3), nn.Sigmoid()).to(DT),
        "seq_nested_nobias": nn.Sequential(nn.Sequential(nn.Linear(5, 6, bias=False), nn.LeakyReLU(0.2)),
                                           nn.Identity(), wn.activations.Sin(),
                                           nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1)).to(DT),
        "seq_act_first": nn.Sequential(nn.Tanh(), nn.Linear(5, 4), wn.activations.GELU(),
                                       nn.Linear(4, 2)).to(DT),
    }


class BufferNet(nn.Module):
    """Linear → BatchNorm (eval, with non-trivial running statistics) → tanh → Linear, plus a
    registered buffer that scales the output: the kernel must use the buffers."""

    def __init__(self):
        super().__init__()
        self.l1, self.bn, self.l2 = nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)
        self.register_buffer("scale", torch.tensor([1.0, -2.0, 0.5]))
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.l2(torch.tanh(self.bn(self.l1(x)))) * self.scale


class ConvNet(nn.Module):
    """Not an MLP: inputs (N, 2, 7), outputs (N, 2, 3) flattened to O = 6."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.lin = nn.Linear(15, 6)

    def forward(self, x):
        return self.lin(torch.relu(self.conv(x)).flatten(1)).view(-1, 2, 3)


def frozen_network():
    net = wn.Architecture(2, "tanh", 1.5, 0.4).build(5, 6, 3, seed=4, dtype=DT)
    dense = net.dense_layers()
    dense[0].weight.requires_grad_(False)
    dense[2].bias.requires_grad_(False)
    return net


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize("name", list(mlp_models()))
@pytest.mark.parametrize("method", METHODS)
def test_mlps_match_autograd_reference(name, method):
    model = mlp_models()[name]
    x1, x2 = _x(4, 5, 10), _x(3, 5, 11)
    refs = reference_kernels(model, x1, x2)
    for mode in MODES:
        got = wn.empirical_ntk(model, x1, x2, mode=mode, method=method)
        assert_close(got, refs[mode])
        assert_close(wn.empirical_ntk(model, x1, x2, mode=mode, method=method, chunk_size=2), refs[mode])


@pytest.mark.parametrize("method", METHODS + ["auto"])
def test_x2_none_and_chunking(method):
    model = mlp_models()["wn_ntk_erf"]
    x1 = _x(5, 5, 12)
    for mode in MODES:
        ref = reference_ntk(model, x1, x1, mode) if mode == "full" else None
        same = wn.empirical_ntk(model, x1, x1, mode=mode, method=method)
        for chunk in (None, 2, 5):
            got = wn.empirical_ntk(model, x1, mode=mode, method=method, chunk_size=chunk)
            assert_close(got, same, 1e-12)
        if ref is not None:
            assert_close(same, ref)
    # the symmetric kernel is symmetric in (n, o) <-> (m, o') also when assembled from tiles
    full = wn.empirical_ntk(model, x1, mode="full", method=method, chunk_size=3)
    assert_close(full, full.permute(1, 0, 3, 2), 1e-12)


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "auto"])
def test_model_with_buffers(method):
    torch.manual_seed(1)
    model = BufferNet().to(DT).eval()
    x1, x2 = _x(4, 5, 13), _x(3, 5, 14)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    refs = reference_kernels(model, x1, x2)
    for mode in MODES:
        assert_close(wn.empirical_ntk(model, x1, x2, mode=mode, method=method, chunk_size=2), refs[mode])
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="structured"):
        wn.empirical_ntk(model, x1, method="structured")


@pytest.mark.parametrize("method", METHODS + ["auto"])
def test_frozen_parameters_are_excluded(method):
    model = frozen_network()
    x1, x2 = _x(4, 5, 15), _x(5, 5, 16)
    refs = reference_kernels(model, x1, x2)
    for mode in MODES:
        assert_close(wn.empirical_ntk(model, x1, x2, mode=mode, method=method), refs[mode])
    # and the frozen terms really are missing: unfreezing changes the kernel
    for p in model.parameters():
        p.requires_grad_(True)
    assert not torch.allclose(wn.empirical_ntk(model, x1, x2, method=method),
                              reference_ntk(frozen_network(), x1, x2, "trace"))


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp"])
def test_non_mlp_model_with_multidim_io(method):
    torch.manual_seed(2)
    model = ConvNet().to(DT)
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(3, 2, 7, generator=g, dtype=DT), torch.randn(2, 2, 7, generator=g, dtype=DT)
    refs = reference_kernels(model, x1, x2)
    for mode in MODES:
        got = wn.empirical_ntk(model, x1, x2, mode=mode, method=method, chunk_size=2)
        assert_close(got, refs[mode])
    assert got.shape == (3, 2)


def test_auto_picks_structured_for_mlps(monkeypatch):
    calls = []
    real = _structured.features
    monkeypatch.setattr(_structured, "features", lambda *a: calls.append(1) or real(*a))
    x = _x(3, 5, 17)
    wn.empirical_ntk(mlp_models()["seq_torch_acts"], x)
    assert calls, "auto did not use the structured path on an nn.Sequential MLP"
    calls.clear()
    wn.empirical_ntk(BufferNet().to(DT).eval(), x)
    assert not calls


class WideReadout(nn.Module):
    """Linear → LayerNorm → ReLU → Linear to O = 64: dense, but the LayerNorm keeps it off
    the structured path, so auto chooses between jacobian and ntk_vp."""

    def __init__(self, d=4, width=16, o=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, o))

    def forward(self, x):
        return self.net(x)


class Scale(nn.Module):
    """y = x ⊙ w: only an elementwise product, which the FLOP counter does not count."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 5, dtype=DT))

    def forward(self, x):
        return x * self.w


def _recorded_auto(monkeypatch, model, x1, x2, mode):
    """(auto's kernel, the F it used, whether it ran ntk_vp)."""
    seen = {"vp": 0}
    real_costs, real_block = emp._method_costs, emp._ntk_vp_block

    def costs(n, m, sym, o, n_params, flops, *rest):
        seen["flops"] = flops
        return real_costs(n, m, sym, o, n_params, flops, *rest)

    def block(*args):
        seen["vp"] += 1
        return real_block(*args)

    monkeypatch.setattr(emp, "_method_costs", costs)
    monkeypatch.setattr(emp, "_ntk_vp_block", block)
    out = wn.empirical_ntk(model, x1, x2, mode=mode, method="auto")
    monkeypatch.setattr(emp, "_method_costs", real_costs)
    monkeypatch.setattr(emp, "_ntk_vp_block", real_block)
    return out, seen["flops"], seen["vp"] > 0


def test_auto_flop_probe_counts_one_example_under_functional_call(monkeypatch):
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 7, generator=g, dtype=DT)
    # Conv1d(2→3, k=3) on length 7: 5·3 outputs of 2·3 multiply-adds; Linear(15→6): 15·6
    _, flops, _ = _recorded_auto(monkeypatch, ConvNet().to(DT), x, None, "full")
    assert flops == 2 * (5 * 3 * 2 * 3) + 2 * 15 * 6
    # nothing the counter knows: the floor 2P
    _, flops, _ = _recorded_auto(monkeypatch, Scale(), _x(3, 5, 18), None, "trace")
    assert flops == 2 * 5


def test_auto_cost_model_regimes():
    def pick(n, o, p, f, mode, chunk=None, keep=True):
        costs = emp._method_costs(n, n, False, o, p, f, mode, (chunk or n, keep), (chunk or n, False))
        return emp._choose_method(costs)

    # dense, many outputs (F = 2P, O = 100 > 4κ): ntk_vp in full mode only
    assert pick(32, 100, 34660, 2 * 34660, "full") == "ntk_vp"
    assert pick(32, 100, 34660, 2 * 34660, "diagonal") == "jacobian"
    assert pick(32, 100, 34660, 2 * 34660, "trace") == "jacobian"
    # the same in tiles of 8 without kept column Jacobians (rebuilt per row tile)
    assert pick(32, 100, 34660, 2 * 34660, "full", chunk=8, keep=False) == "ntk_vp"
    # dense with O = 10 < 4κ, a convolution (F ≫ P), one output: jacobian
    assert pick(32, 10, 11530, 2 * 11530, "full") == "jacobian"
    assert pick(32, 10, 13018, 370688, "full") == "jacobian"
    assert pick(32, 1, 9217, 2 * 9217, "full") == "jacobian"
    # the formula itself, by hand: N=2, M=3, O=1, P=1, F=2, one tile, κ=9, μ=100
    costs = emp._method_costs(2, 3, False, 1, 1, 2.0, "trace", (3, True), (3, False))
    assert costs == {"jacobian": (9 * 3 * 2 + 100) * 5 + 2 * 6,      # R = N + M, E = 6
                     "ntk_vp": 9 * 2 * 2 * (6 + 9) + 100 * 3}        # Σab = 6, Σb² = 9, Σb = 3
    assert emp._choose_method({"jacobian": 1.0, "ntk_vp": 1.0}) == "jacobian"


@pytest.mark.parametrize("sym", [False, True])
def test_tile_counts_match_tiled(sym):
    """The cost model's closed forms count exactly the blocks and features ``_tiled`` makes."""
    for n, m, chunk, keep in [(7, 5, 3, False), (7, 5, 3, True), (6, 9, 2, False), (4, 4, 4, False),
                              (5, 3, 8, False), (8, 8, 2, False), (8, 8, 2, True), (9, 9, 4, False),
                              (2, 7, 3, False), (10, 10, 1, False)]:
        if sym:
            m = n
        built, blocks = [0], []

        def featurize(x):
            built[0] += x.shape[0]
            return x.shape[0]

        def pair(a, b):
            blocks.append((a, b))
            return torch.zeros(a, b)

        x1, x2 = torch.zeros(n, 1), (None if sym else torch.zeros(m, 1))
        emp._tiled(x1, x2, chunk, (), featurize, pair, "trace", keep)
        counts = _ntk_cost._tile_counts(n, m, sym, chunk, keep)
        assert counts == {"pairs": sum(a * b for a, b in blocks), "built": built[0],
                          "cols": sum(b for _, b in blocks), "cols_sq": sum(b * b for _, b in blocks)}, \
            (n, m, chunk, keep)


def test_auto_takes_the_cheaper_method_and_matches_both(monkeypatch):
    torch.manual_seed(5)
    wide = WideReadout().to(DT)
    x1, x2 = _x(8, 4, 19), _x(8, 4, 20)
    for model, xs, mode, want_vp in [(wide, (x1, x2), "full", True), (wide, (x1, None), "full", True),
                                     (wide, (x1, x2), "trace", False), (wide, (x1, x2), "diagonal", False)]:
        got, _, used_vp = _recorded_auto(monkeypatch, model, *xs, mode)
        assert used_vp == want_vp, (mode, xs[1] is None)
        for method in ("jacobian", "ntk_vp"):
            assert_close(got, wn.empirical_ntk(model, *xs, mode=mode, method=method))
    g = torch.Generator().manual_seed(6)
    xc1, xc2 = torch.randn(6, 2, 7, generator=g, dtype=DT), torch.randn(5, 2, 7, generator=g, dtype=DT)
    conv = ConvNet().to(DT)
    got, _, used_vp = _recorded_auto(monkeypatch, conv, xc1, xc2, "full")
    assert not used_vp
    assert_close(got, reference_ntk(conv, xc1, xc2, "full"))


def test_model_left_unchanged_and_no_graph():
    model = mlp_models()["seq_torch_acts"].train()
    before = [p.detach().clone() for p in model.parameters()]
    x = _x(4, 5, 18)
    for method in METHODS:
        out = wn.empirical_ntk(model, x, mode="full", method=method)
        assert not out.requires_grad and out.grad_fn is None
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_float32_matches_float64():
    net = wn.Architecture(2, "relu", 2.0, 0.1).build(6, 64, 3, seed=0)
    x = _x(5, 6, 19)
    ref = wn.empirical_ntk(net.double(), x, mode="full", method="jacobian")
    net = net.float()
    for method in METHODS:
        got = wn.empirical_ntk(net, x.float(), mode="full", method=method)
        assert got.dtype == torch.float32
        assert_close(got.double(), ref, 1e-5)


def test_automatic_chunk_bounds_memory(monkeypatch):
    """With a tiny memory budget the automatic choice tiles x1 and x2, and still agrees."""
    model = mlp_models()["wn_ntk_erf"]
    x1, x2 = _x(5, 5, 20), _x(4, 5, 21)
    exact = {m: wn.empirical_ntk(model, x1, x2, mode="full", method=m) for m in METHODS}
    seen = []
    real = emp._tiled
    monkeypatch.setattr(emp, "_tiled", lambda *a: seen.append(a[2]) or real(*a))
    monkeypatch.setattr(emp, "_memory_budget", lambda device: 12000)
    for m in METHODS:
        assert_close(wn.empirical_ntk(model, x1, x2, mode="full", method=m), exact[m], 1e-12)
    assert len(seen) == len(METHODS) and all(c <= 2 for c in seen), seen


# ----------------------------------------------------------------------------- convergence
def test_ntk_converges_at_inverse_sqrt_width():
    """Relative Frobenius error of the trace-mode NTK against the analytic NTK, averaged over
    24 seeds, drops by ≈2 from width 64 to 256.  (Measured over 20 disjoint seed sets during
    development: ratio 2.01 ± 0.15, range [1.81, 2.37].)"""
    x = _x(16, 6, 123)
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    ntk = arch.ntk(x)

    def mean_err(width):
        errs = []
        for s in range(1000, 1024):
            t = wn.empirical_ntk(arch.build(6, width, 8, seed=s, dtype=DT), x)
            errs.append(((t - ntk).norm() / ntk.norm()).item())
        return sum(errs) / len(errs)

    e64, e256 = mean_err(64), mean_err(256)
    assert e256 < 0.2
    assert 1.4 < e64 / e256 < 2.9, (e64, e256)


# ----------------------------------------------------------------------------- NNGP
def test_nngp_of_one_model():
    model = mlp_models()["seq_torch_acts"]
    x1, x2 = _x(4, 5, 22), _x(3, 5, 23)
    with torch.no_grad():
        f1, f2 = model(x1), model(x2)
    full = f1[:, None, :, None] * f2[None, :, None, :]
    diag = full.diagonal(dim1=2, dim2=3)
    refs = {"full": full, "diagonal": diag, "trace": diag.mean(-1)}
    for mode in MODES:
        assert_close(wn.empirical_nngp(model, x1, x2, mode=mode, chunk_size=2), refs[mode], 1e-12)
    assert_close(wn.empirical_nngp(model, x1), wn.empirical_nngp(model, x1, x1), 1e-12)


def test_nngp_monte_carlo_equals_loop_over_seeds(monkeypatch):
    arch = wn.Architecture(2, "tanh", 1.5, 0.2)
    x1, x2 = _x(4, 3, 24), _x(2, 3, 25)
    nets = [arch.build(3, 8, 2, seed=5 + s, dtype=DT) for s in range(7)]
    monkeypatch.setattr(emp, "_memory_budget", lambda device: 20000)  # several seed groups
    for mode in MODES:
        loop = sum(wn.empirical_nngp(n, x1, x2, mode=mode) for n in nets) / len(nets)
        mc = wn.empirical_nngp(arch, x1, x2, mode=mode, width=8, out_features=2, n_samples=7, seed=5)
        assert_close(mc, loop, 1e-12)


def test_nngp_monte_carlo_matches_analytic():
    """Depth 1: the first layer is exactly Gaussian, so E[f f'] equals the analytic NNGP at any
    width and the MC estimate is unbiased.  The standard error is estimated from 16
    independent MC batches (disjoint seeds); every entry must lie within 5 of them."""
    arch = wn.Architecture(1, "relu", 2.0, 0.3)
    x = _x(6, 4, 26)
    batches = torch.stack([wn.empirical_nngp(arch, x, width=16, out_features=2, n_samples=50,
                                             seed=50 * b) for b in range(16)])
    mc, se = batches.mean(0), batches.std(0) / math.sqrt(len(batches))
    k = arch.nngp(x)
    assert ((mc - k) / se).abs().max().item() < 5
    # the test has power: a 25% error in the kernel's scale is far outside the band
    assert ((1.25 * mc - k) / se).abs().max().item() > 10


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    model = mlp_models()["wn_ntk_erf"]
    x = _x(3, 5, 27)
    with pytest.raises(ValueError, match="feature sizes"):
        wn.empirical_ntk(model, x, _x(3, 4, 0))
    with pytest.raises(ValueError, match="empty batch"):
        wn.empirical_ntk(model, x[:0])
    with pytest.raises(ValueError, match="empty batch"):
        wn.empirical_nngp(model, x, x[:0])
    with pytest.raises(ValueError, match="no trainable parameters"):
        wn.empirical_ntk(nn.Sequential(nn.ReLU()), x)
    frozen = wn.Architecture(1, "relu").build(5, 4, 2, dtype=DT).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        wn.empirical_ntk(frozen, x)
    with pytest.raises(ValueError, match="structured.*ConvNet|ConvNet.*structured"):
        wn.empirical_ntk(ConvNet().to(DT), torch.zeros(2, 2, 7, dtype=DT), method="structured")
    with pytest.raises(ValueError, match="Dropout"):
        wn.empirical_ntk(nn.Sequential(nn.Linear(5, 2), nn.Dropout()).to(DT), x, method="structured")
    with pytest.raises(ValueError, match="mode"):
        wn.empirical_ntk(model, x, mode="sum")
    with pytest.raises(ValueError, match="method"):
        wn.empirical_ntk(model, x, method="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        wn.empirical_ntk(model, x, chunk_size=0)
    with pytest.raises(TypeError, match="float32"):
        wn.empirical_ntk(model.float(), x)
    with pytest.raises(TypeError, match="nn.Module"):
        wn.empirical_ntk(lambda x: x, x)
    with pytest.raises(ValueError, match="width"):
        wn.empirical_nngp(wn.Architecture(1), x)
    with pytest.raises(ValueError, match="n_samples"):
        wn.empirical_nngp(wn.Architecture(1), x, width=4, n_samples=0)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    net = wn.Architecture(2, "relu", 2.0, 0.1).build(6, 32, 3, seed=0, dtype=DT)
    x1, x2 = _x(5, 6, 28), _x(4, 6, 29)
    for mode in MODES:
        cpu = wn.empirical_ntk(net, x1, x2, mode=mode, method=method)
        gpu = wn.empirical_ntk(net.cuda(), x1.cuda(), x2.cuda(), mode=mode, method=method, chunk_size=2)
        net.cpu()
        assert gpu.is_cuda
        assert_close(gpu.cpu(), cpu, 1e-10)
    arch = wn.Architecture(2, "relu", 2.0, 0.1)
    cpu = wn.empirical_nngp(arch, x1, width=16, out_features=2, n_samples=5)
    gpu = wn.empirical_nngp(arch, x1.cuda(), width=16, out_features=2, n_samples=5)
    assert_close(gpu.cpu(), cpu, 1e-10)
