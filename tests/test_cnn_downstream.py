"""Convolutional models downstream of the kernels: ``wn.train``, ``wn.linearize``,
``wn.Ensemble`` and ``wn.empirical_ntk`` / ``empirical_nngp`` take inputs (N, C, L) and
(N, C, H, W).  The models are plain torch CNNs written out here (and, in
``HandDescription``, a minimal object with the composed descriptions' ``.build(in_shape=...)``
signature), so these tests pin the downstream contract independently of the layer library;
every kernel is checked against Jacobians taken one example and one output at a time with
``torch.autograd.grad`` (no vmap, no torch.func), every training run against hand-written updates or
members trained one by one."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jacrev

import wideNN as wn
from _reference_ntk import flat_jacobian, reference_ntk

D64 = torch.float64
MODES = ["full", "diagonal", "trace"]

pytestmark = pytest.mark.usefixtures("one_thread")


def cnn2d(c_in=2, ch=5, hw=5, out=3, seed=0, pool=False) -> nn.Module:
    """conv 3×3 "same" → ReLU → conv 3×3 "valid" → tanh → flatten or global pool → linear."""
    torch.manual_seed(seed)
    side = hw - 2
    head = ([nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, out)] if pool
            else [nn.Flatten(), nn.Linear(ch * side * side, out)])
    return nn.Sequential(nn.Conv2d(c_in, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3), nn.Tanh(),
                         *head).to(D64)


def cnn1d(c_in=3, ch=4, length=6, out=2, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(c_in, ch, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                         nn.Flatten(), nn.Linear(ch * length, out)).to(D64)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


class HandDescription:
    """The composed descriptions' build contract, written out for a tiny CNN."""

    def __init__(self, pool: bool = False):
        self.pool = pool

    def build(self, *, in_shape, width, out_features, seed=None, dtype=torch.float32, device=None):
        c, h, w = in_shape
        assert h == w
        return cnn2d(c, width, h, out_features, seed=seed, pool=self.pool).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------- empirical NTK
@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "auto"])
@pytest.mark.parametrize("kind", ["conv2d_flatten", "conv2d_pool", "conv1d_circular"])
def test_cnn_ntk_every_method_matches_autograd(method, kind):
    if kind == "conv1d_circular":
        net, x1, x2 = cnn1d(), _x(4, 3, 6, seed=1), _x(3, 3, 6, seed=2)
    else:
        net, x1, x2 = cnn2d(pool=kind == "conv2d_pool"), _x(4, 2, 5, 5, seed=1), _x(3, 2, 5, 5, seed=2)
    for mode in MODES:
        ref = reference_ntk(net, x1, mode, x2)
        got = wn.empirical_ntk(net, x1, x2, mode=mode, method=method)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # x1 against itself, tiled into blocks of 2 (upper triangle mirrored)
    ref = reference_ntk(net, x1, "full")
    torch.testing.assert_close(wn.empirical_ntk(net, x1, mode="full", method=method, chunk_size=3), ref,
                               rtol=1e-10, atol=1e-12)


def test_structured_refuses_cnns_and_auto_routes_them():
    net, x = cnn2d(), _x(3, 2, 5, 5)
    with pytest.raises(ValueError, match=r"structured.*MLP.*Conv2d.*method='auto'"):
        wn.empirical_ntk(net, x, method="structured")
    torch.testing.assert_close(wn.empirical_ntk(net, x, method="auto"), reference_ntk(net, x, "trace"),
                               rtol=1e-10, atol=1e-12)
    # an MLP without a leading Flatten cannot take images with the MLP formula
    mlp = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).to(D64)
    with pytest.raises(ValueError, match="does not start with nn.Flatten"):
        wn.empirical_ntk(mlp, x, method="structured")


def test_mlp_on_images_takes_the_structured_path(monkeypatch):
    from wideNN import _structured

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(50, 6), nn.ReLU(), nn.Linear(6, 3)).to(D64)
    x1, x2 = _x(4, 2, 5, 5, seed=3), _x(3, 2, 5, 5, seed=4)
    calls = []
    real = _structured.features
    monkeypatch.setattr(_structured, "features", lambda *a: calls.append(1) or real(*a))
    for mode in MODES:
        got = wn.empirical_ntk(mlp, x1, x2, mode=mode)
        torch.testing.assert_close(got, reference_ntk(mlp, x1, mode, x2), rtol=1e-10, atol=1e-12)
    assert calls, "auto did not use the structured formula for Flatten → MLP"
    with pytest.raises(ValueError, match="32 features.*expects 50"):
        wn.empirical_ntk(mlp, _x(2, 2, 4, 4), method="structured")
    # a Flatten anywhere but first is not the MLP formula
    late = nn.Sequential(nn.Linear(5, 4), nn.Flatten(), nn.Linear(8, 2)).to(D64)
    assert _structured.parse(late) is None and "Flatten" in _structured.unsupported_reason(late)


def test_cnn_bad_inputs_are_named():
    net = cnn2d()
    with pytest.raises(ValueError, match=r"per-example shape \(3, 5, 5\)"):
        wn.empirical_ntk(net, _x(2, 3, 5, 5))           # wrong channel count
    with pytest.raises(ValueError, match="per-example shapes"):
        wn.empirical_ntk(net, _x(2, 2, 5, 5), _x(2, 2, 4, 5))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 4, 4\)"):
        wn.train(net, _x(2, 2, 4, 4), _x(2, 3), steps=1)  # flatten readout needs 5×5 images
    with pytest.raises(ValueError, match="NaN"):
        bad = _x(2, 2, 5, 5)
        bad[1, 0, 2, 2] = float("nan")
        wn.train(net, bad, _x(2, 3), steps=1)


# ----------------------------------------------------------------------------- empirical NNGP
def test_cnn_nngp_monte_carlo_equals_loop_over_seeds():
    desc = HandDescription(pool=True)
    x1, x2 = _x(3, 2, 5, 5, seed=5), _x(2, 2, 5, 5, seed=6)
    got = wn.empirical_nngp(desc, x1, x2, mode="full", width=4, out_features=2, n_samples=5, seed=3)
    want = 0
    for s in range(5):
        f1 = desc.build(in_shape=(2, 5, 5), width=4, out_features=2, seed=3 + s, dtype=D64)
        with torch.no_grad():
            want = want + torch.einsum("na,mb->nmab", f1(x1), f1(x2))
    torch.testing.assert_close(got, want / 5, rtol=1e-12, atol=1e-14)
    one = cnn2d()
    with torch.no_grad():
        f = one(x1)
    torch.testing.assert_close(wn.empirical_nngp(one, x1), f @ f.T / 3, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- training
def test_train_cnn_gd_equals_hand_written_update():
    net, x, y = cnn2d(), _x(6, 2, 5, 5, seed=7), _x(6, 3, seed=8)
    ref = cnn2d()
    eta = 0.3
    wn.train(net, x, y, steps=3, learning_rate=eta)
    for _ in range(3):
        loss = ((ref(x) - y) ** 2).sum() / (2 * x.shape[0])
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= eta * g
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # readout-only training moves only the last nn.Linear
    ro = cnn2d()
    wn.train(ro, x, y, steps=2, learning_rate=eta, trainable="readout")
    moved = [not torch.equal(a, b) for a, b in zip(ro.parameters(), cnn2d().parameters())]
    assert moved == [False, False, False, False, True, True]


def test_linearized_cnn_follows_its_empirical_ntk():
    """f_s = f_0 + ((I − ηΘ̂/N)^s − I)(f_0 − y) exactly, Θ̂ from jacrev over a flat θ."""
    net, x, y = cnn1d(), _x(5, 3, 6, seed=9), _x(5, 2, seed=10)
    f, th0 = flat_jacobian(net, x)
    jac = jacrev(f)(th0)
    theta = jac @ jac.T
    torch.testing.assert_close(wn.empirical_ntk(net, x, mode="full").permute(0, 2, 1, 3).reshape(10, 10),
                               theta, rtol=1e-10, atol=1e-12)
    eta, steps = 0.05, 40
    lin = wn.linearize(net)
    wn.train(lin, x, y, steps=steps, learning_rate=eta)
    eye = torch.eye(10, dtype=D64)
    f0 = f(th0).detach()
    want = f0 + (torch.linalg.matrix_power(eye - eta * theta / 5, steps) - eye) @ (f0 - y.reshape(-1))
    torch.testing.assert_close(lin(x).detach().reshape(-1), want, rtol=1e-10, atol=1e-11)


def test_max_learning_rate_of_a_cnn_and_of_a_description():
    net, x = cnn2d(), _x(6, 2, 5, 5, seed=11)
    theta = reference_ntk(net, x, "full")
    assert wn.max_learning_rate(net, x) == pytest.approx(wn.max_learning_rate(theta), rel=1e-10)

    class WithNTK:  # a description whose analytic NTK is this fixed matrix
        def ntk(self, xs):
            return theta.permute(0, 2, 1, 3).reshape(18, 18)[::3, ::3].contiguous()

    lam = float(torch.linalg.eigvalsh(WithNTK().ntk(x))[-1])
    assert wn.max_learning_rate(WithNTK(), x) == pytest.approx(2 * 6 / lam)


# ----------------------------------------------------------------------------- ensembles
def test_ensemble_of_cnns_equals_members_one_by_one():
    desc = HandDescription()
    x, y = _x(6, 2, 5, 5, seed=12), _x(6, 3, seed=13)
    ens = wn.Ensemble(desc, 4, out_features=3, size=3, seed=5, in_shape=(2, 5, 5), dtype=D64)
    assert ens.in_shape == (2, 5, 5) and ens.in_features is None
    out = ens(x)
    assert out.shape == (3, 6, 3)
    for i in range(3):
        ref = desc.build(in_shape=(2, 5, 5), width=4, out_features=3, seed=5 + i, dtype=D64)
        torch.testing.assert_close(out[i], ref(x), rtol=1e-12, atol=1e-14)
    xs = _x(3, 4, 2, 5, 5, seed=14)                       # one batch per member
    per = ens(xs)
    for i in range(3):
        torch.testing.assert_close(per[i], ens.member(i)(xs[i]), rtol=1e-12, atol=1e-14)
    for trainable in ("all", "readout"):
        e = wn.Ensemble(desc, 4, out_features=3, size=3, seed=5, in_shape=(2, 5, 5), dtype=D64)
        kw = dict(steps=5, learning_rate=0.2, trainable=trainable)
        h = e.train(x, y, eval_data=(x, y), ntk_at=[0], ntk_x=x[:3], **kw)
        assert h.ntk[0].shape == (3, 3, 3)
        for i in range(3):
            net = desc.build(in_shape=(2, 5, 5), width=4, out_features=3, seed=5 + i, dtype=D64)
            hi = wn.train(net, x, y, **kw)
            torch.testing.assert_close(h.loss[:, i], hi.loss, rtol=1e-11, atol=1e-13)
            for (k, a), (_, b) in zip(e.member(i).named_parameters(), net.named_parameters()):
                torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=k)
    assert len(e.readout_parameters()) == 2 and e.readout_parameters()[0].shape == (3, 3, 4 * 9)


def test_ensemble_shapes_are_checked():
    desc = HandDescription()
    ens = wn.Ensemble(desc, 4, out_features=3, size=2, in_shape=(2, 5, 5), dtype=D64)
    with pytest.raises(ValueError, match=r"\(N, 2, 5, 5\)"):
        ens(_x(3, 2, 4, 4))
    with pytest.raises(ValueError, match="per-member"):
        ens(_x(3, 4, 2, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, 2, 5, 5\)"):
        ens.train(_x(3, 2, 4, 4), _x(3, 3), steps=1)
    with pytest.raises(ValueError, match="ntk_x"):
        ens.train(_x(3, 2, 5, 5), _x(3, 3), steps=1, ntk_at=[0], ntk_x=_x(2, 2, 4, 4))
    with pytest.raises(TypeError, match="exactly one of in_features"):
        wn.Ensemble(desc, 4, 50, 3, size=2, in_shape=(2, 5, 5))
    with pytest.raises(TypeError, match="exactly one of in_features"):
        wn.Ensemble(desc, 4, out_features=3, size=2)
    with pytest.raises(TypeError, match="in_shape"):
        wn.Ensemble(desc, 4, out_features=3, size=2, in_shape=7)
    with pytest.raises(ValueError, match=r"in_shape\[1\]"):
        wn.Ensemble(desc, 4, out_features=3, size=2, in_shape=(2, 0, 5))
    with pytest.raises(TypeError, match="build"):
        wn.Ensemble(object(), 4, out_features=3, size=2, in_shape=(2, 5, 5))
    # the MLP shorthand accepts in_shape=(d,) and builds exactly the positional members
    arch = wn.Architecture(1, "relu", 2.0, 0.1)
    a = wn.Ensemble(arch, 8, out_features=2, size=2, seed=3, in_shape=(5,), dtype=D64)
    b = wn.Ensemble(arch, 8, 5, 2, size=2, seed=3, dtype=D64)
    x = _x(4, 5)
    assert torch.equal(a(x), b(x)) and a.in_features == 5


# ----------------------------------------------------------------------------- posterior
def test_posterior_takes_a_composed_description():
    """NNGP posterior mean K_xX K⁻¹ Y and NTK-GP at t = ∞ Θ_xX Θ⁻¹ Y, from the description's own
    kernels and a dense solve."""
    arch = wn.Serial(wn.Conv(3), "relu", wn.Conv(3, padding="circular"), "relu", wn.GlobalAvgPool(),
                     wn.Dense(), weight_variance=2.0, bias_variance=0.05)
    x, xt, y = _x(6, 1, 5, 5, seed=15), _x(3, 1, 5, 5, seed=16), _x(6, 2, seed=17)
    k, th = arch.kernels(x)
    kt, tht = arch.kernels(xt, x)
    for kernel, (a, b) in (("nngp", (kt, k)), ("ntk", (tht, th))):
        post = wn.posterior(arch, x, y, xt, kernel=kernel, compute_variance=False)
        torch.testing.assert_close(post.mean, a @ torch.linalg.solve(b, y), rtol=1e-8, atol=1e-10)


def test_built_flatten_mlp_takes_the_structured_path(monkeypatch):
    """Serial(Flatten, Dense, φ, Dense).build on images: the structured MLP formula, equal to the
    Jacobian contraction; a built CNN goes to jacobian / ntk_vp under 'auto'."""
    from wideNN import _structured

    desc = wn.Serial(wn.Flatten(), wn.Dense(), "tanh", wn.Dense(), weight_variance=1.5, bias_variance=0.1)
    net = desc.build((2, 4, 4), 6, 3, seed=0, dtype=D64)
    x1, x2 = _x(3, 2, 4, 4, seed=20), _x(2, 2, 4, 4, seed=21)
    calls = []
    real = _structured.features
    monkeypatch.setattr(_structured, "features", lambda *a: calls.append(1) or real(*a))
    for mode in MODES:
        torch.testing.assert_close(wn.empirical_ntk(net, x1, x2, mode=mode),
                                   wn.empirical_ntk(net, x1, x2, mode=mode, method="jacobian"),
                                   rtol=1e-10, atol=1e-12)
    assert calls
    cnn = wn.Serial(wn.Conv(3), "relu", wn.GlobalAvgPool(), wn.Dense()).build((2, 4, 4), 5, 2, seed=0, dtype=D64)
    torch.testing.assert_close(wn.empirical_ntk(cnn, x1, x2, mode="full"), reference_ntk(cnn, x1, "full", x2),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        wn.empirical_ntk(cnn, x1, method="structured")


def test_ensemble_and_monte_carlo_nngp_of_a_serial():
    desc = wn.Serial(wn.Conv(3), wn.Residual(wn.Serial("relu", wn.Conv(3), "relu", wn.Conv(3))), "relu",
                     wn.GlobalAvgPool(), wn.Dense(), weight_variance=2.0, bias_variance=0.1)
    x, y = _x(5, 1, 4, 4, seed=22), _x(5, 2, seed=23)
    ens = wn.Ensemble(desc, 3, in_shape=(1, 4, 4), out_features=2, size=2, seed=4, dtype=D64)
    h = ens.train(x, y, steps=3, learning_rate=0.1, trainable="readout")
    for i in range(2):
        net = desc.build((1, 4, 4), 3, 2, seed=4 + i, dtype=D64)
        hi = wn.train(net, x, y, steps=3, learning_rate=0.1, trainable="readout")
        torch.testing.assert_close(h.loss[:, i], hi.loss, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(ens.member(i)(x), net(x), rtol=1e-11, atol=1e-13)
    got = wn.empirical_nngp(desc, x, width=3, out_features=2, n_samples=3, seed=1)
    want = sum(f @ f.T for f in (desc.build((1, 4, 4), 3, 2, seed=1 + s, dtype=D64)(x).detach()
                                 for s in range(3))) / (3 * 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
