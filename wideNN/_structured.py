"""Structured empirical NTK of multilayer perceptrons.

For an MLP f = L_D ∘ φ ∘ … ∘ φ ∘ L_0 with dense layers z_l = c_l · a_{l-1} W_lᵀ + s_l · b_l, the
Jacobian of output o with respect to W_l is c_l · G_l[o] ⊗ a_{l-1} and with respect to b_l is
s_l · G_l[o], where G_l[n, o, :] = ∂f_o(x_n)/∂z_l.  Hence

    Θ(x, x')[o, o'] = Σ_l (G_l[o] · G_l'[o']) · (c_l² a_{l-1} · a_{l-1}' + s_l²)

and the whole kernel is a few matrix products per layer: (N·O × n_l) @ (n_l × M·O) for the
gradient Gram, N×M for the input Gram, then a Hadamard product.  G is obtained by one
backward recursion G_{l-1} = (G_l · c_l W_l) ⊙ φ'(z_{l-1}), batched over the O outputs.
Above the last dense layer G is the identity (or, with a trailing activation, the diagonal
φ'(z_D)), which is kept implicit so the readout costs O(N·M·O) instead of O(N·M·O²·n).

Supported models: ``wideNN.Network`` and any ``nn.Sequential`` (nested ones are flattened) of
``nn.Linear`` / ``wideNN.networks.Dense`` and elementwise activations (``wideNN.activations`` and the
torch modules in ``_TORCH_ELEMENTWISE``, whose φ' comes from the matching wideNN activation).  Parameters with ``requires_grad=False`` drop their
term.  ``parse`` returns None for anything else; the caller decides whether that is an error.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from . import activations
from .activations import Activation
from .networks import Dense

__all__ = ["Layer", "parse", "features", "contract", "unsupported_reason"]

def _autograd_prime(m: nn.Module, x: Tensor) -> Tensor:
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(m(xg).sum(), xg, create_graph=x.requires_grad)
    return g


def _same_activation(m: nn.Module) -> Activation | None:
    """The ``wideNN.activations`` object computing the same function as the torch module ``m``,
    so that φ' has one source (the activation's own ``derivative``); None when there is none
    (e.g. tanh-approximated GELU, a softplus with other β/threshold), and φ' is then autograd's."""
    t = type(m)
    if t is nn.LeakyReLU:
        return activations.LeakyReLU(m.negative_slope)
    if t is nn.ELU:
        return activations.ELU(m.alpha)
    if t is nn.GELU:
        return activations.GELU() if m.approximate == "none" else None
    if t is nn.Softplus:
        return activations.Softplus() if (m.beta, m.threshold) == (1.0, 20.0) else None
    plain = {nn.ReLU: activations.ReLU, nn.Tanh: activations.Tanh, nn.Sigmoid: activations.Sigmoid,
             nn.SiLU: activations.SiLU, nn.Identity: activations.Identity}
    return plain[t]() if t in plain else None


# the torch elementwise modules accepted (φ' from ``_same_activation``, else autograd)
_TORCH_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.ELU,
                      nn.GELU, nn.Identity)


@dataclasses.dataclass
class Layer:
    """One step of the flattened MLP: a dense layer or an elementwise map."""

    kind: str                        # "dense" | "elementwise"
    module: nn.Module
    weight_scale: float = 1.0
    bias_scale: float = 1.0
    train_weight: bool = False
    train_bias: bool = False
    phi: Activation | None = None  # an elementwise layer's activation (for φ')

    def weight(self) -> Tensor:
        return self.module.weight.detach()

    def bias(self) -> Tensor | None:
        b = self.module.bias
        return None if b is None else b.detach()

    def forward(self, h: Tensor) -> Tensor:
        if self.kind == "elementwise":
            return self.module(h)
        w, b = self.weight(), self.bias()
        if h.dim() == 2 and b is not None:  # fold the scales into addmm instead of copying W
            return torch.addmm(b * self.bias_scale, h, w.T, alpha=self.weight_scale)
        return torch.nn.functional.linear(h, w * self.weight_scale, None if b is None else b * self.bias_scale)

    def prime(self, h: Tensor) -> Tensor:
        """φ'(h) of an elementwise layer: the activation's own ``derivative`` where one exists."""
        if self.phi is not None:
            return self.phi.derivative(h)
        return _autograd_prime(self.module, h)


def _flatten(model: nn.Module) -> list[nn.Module]:
    if type(model) in (nn.Sequential,) or isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out.extend(_flatten(m))
        return out
    return [model]


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``parse`` rejects ``model`` (None if it is supported)."""
    if not isinstance(model, nn.Sequential):
        return f"{type(model).__name__} is not an nn.Sequential"
    mods = _flatten(model)
    if not any(isinstance(m, (nn.Linear, Dense)) for m in mods):
        return "it has no nn.Linear / Dense layer"
    for m in mods:
        if isinstance(m, (nn.Linear, Dense, Activation)):
            if isinstance(m, Activation) and any(True for _ in m.parameters()):
                return f"activation {m!r} has parameters"
            continue
        if type(m) in _TORCH_ELEMENTWISE:
            continue
        return (f"layer {m!r} is neither a dense layer nor a supported elementwise activation "
                f"(supported: nn.Linear, wideNN Dense, wideNN activations, "
                f"{', '.join(t.__name__ for t in _TORCH_ELEMENTWISE)})")
    # every other parameter of the model must live in a dense layer, or the sum would miss it
    dense_params = {id(p) for m in mods if isinstance(m, (nn.Linear, Dense)) for p in m.parameters()}
    if any(id(p) not in dense_params for p in model.parameters()):
        return "it has parameters outside its dense layers"
    return None


def parse(model: nn.Module) -> list[Layer] | None:
    """The model as a list of ``Layer``s, or None if the structured formula does not apply."""
    if unsupported_reason(model) is not None:
        return None
    layers: list[Layer] = []
    for m in _flatten(model):
        if isinstance(m, Dense):
            layers.append(Layer("dense", m, float(m.weight_scale), float(m.bias_scale),
                                m.weight.requires_grad, m.bias.requires_grad))
        elif isinstance(m, nn.Linear):
            layers.append(Layer("dense", m, 1.0, 1.0, m.weight.requires_grad,
                                m.bias is not None and m.bias.requires_grad))
        else:
            phi = m if isinstance(m, Activation) else _same_activation(m)
            layers.append(Layer("elementwise", m, phi=phi))
    return layers


def n_outputs(layers: list[Layer]) -> int:
    last = [l for l in layers if l.kind == "dense"][-1]
    return int(last.module.weight.shape[0])


@dataclasses.dataclass
class Features:
    """What one batch contributes to the kernel: per trainable dense layer, its input ``a``
    (N, n_in) and output gradient ``g`` — (N, O, n_out), or for the top layer the diagonal
    (N, O) (``g_diag``) meaning G[n, o, k] = δ_ok g[n, o]."""

    a: list[Tensor]
    g: list[Tensor]
    g_diag: list[bool]
    layer: list[Layer]


def features(layers: list[Layer], x: Tensor) -> Features:
    """Forward pass storing dense-layer inputs, then the backward recursion for G."""
    h = x
    inputs: list[Tensor] = []
    for layer in layers:
        inputs.append(h)
        h = layer.forward(h)
    n, o = h.shape[0], h.shape[-1]
    # G is kept as a diagonal (N, O) while no dense layer has been crossed yet
    g: Tensor = torch.ones(n, o, dtype=h.dtype, device=h.device)
    diag = True
    feats = Features([], [], [], [])
    trainable = [i for i, l in enumerate(layers) if l.kind == "dense" and (l.train_weight or l.train_bias)]
    lowest = trainable[0] if trainable else len(layers)
    for i in range(len(layers) - 1, lowest - 1, -1):
        layer, inp = layers[i], inputs[i]
        if layer.kind == "elementwise":
            d = layer.prime(inp)
            g = g * d if diag else g * d.unsqueeze(1)
            continue
        if layer.train_weight or layer.train_bias:
            feats.a.append(inp)
            feats.g.append(g)
            feats.g_diag.append(diag)
            feats.layer.append(layer)
        if i == lowest:
            break  # nothing below this layer has trainable parameters
        w = layer.weight()                                 # (n_out, n_in)
        # diagonal G: row o of G·W is g[n, o] W[o]
        if diag:
            g = (g * layer.weight_scale).unsqueeze(-1) * w
        else:
            g = torch.matmul(g, w)
            if layer.weight_scale != 1.0:
                g.mul_(layer.weight_scale)
        diag = False
    return feats


def contract(f1: Features, f2: Features, mode: str) -> Tensor:
    """Θ between the two batches: (N, M, O, O) ``full``, (N, M, O) ``diagonal``, (N, M) ``trace``
    (trace is the SUM over outputs here; the caller divides by O)."""
    out: Tensor | None = None
    for a1, g1, d1, a2, g2, layer in zip(f1.a, f1.g, f1.g_diag, f2.a, f2.g, f1.layer):
        k = _input_gram(a1, a2, layer)
        n, m = k.shape
        o = g1.shape[1]
        if d1:  # G = diag: the term is δ_oo' g1[n,o] g2[m,o] k[n,m]
            if mode == "trace":
                term = (g1 @ g2.T) * k
            else:
                term = g1.unsqueeze(1) * g2.unsqueeze(0) * k.unsqueeze(-1)      # (N, M, O)
                if mode == "full":
                    term = torch.diag_embed(term)
        elif mode == "trace":
            term = (g1.reshape(n, -1) @ g2.reshape(m, -1).T) * k
        elif mode == "diagonal":
            term = torch.bmm(g1.transpose(0, 1), g2.permute(1, 2, 0)).permute(1, 2, 0) * k.unsqueeze(-1)
        else:
            s = g1.reshape(n * o, -1) @ g2.reshape(m * o, -1).T                # (N·O, M·O)
            # Hadamard in the GEMM's own (N, O, M, O) layout; permuted once by the caller
            term = (s.view(n, o, m, o).mul_(k[:, None, :, None])).permute(0, 2, 1, 3)
        out = term if out is None else out + term
    assert out is not None
    return out


def _input_gram(a1: Tensor, a2: Tensor, layer: Layer) -> Tensor:
    """c² a1·a2ᵀ (if W is trainable) + s² (if b is trainable)."""
    if layer.train_weight:
        k = (a1 @ a2.T) * (layer.weight_scale ** 2)
        if layer.train_bias:
            k = k + layer.bias_scale ** 2
        return k
    return torch.full((a1.shape[0], a2.shape[0]), layer.bias_scale ** 2, dtype=a1.dtype, device=a1.device)
