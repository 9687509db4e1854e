"""φ' of torch activation modules in the structured empirical NTK comes from wideNN's own
activations (one source), and equals autograd's derivative of the torch module everywhere."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wideNN import _structured, activations

MODULES = [nn.ReLU(), nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid(), nn.SiLU(), nn.Softplus(),
           nn.Softplus(beta=2.0), nn.ELU(0.7), nn.GELU(), nn.GELU(approximate="tanh"), nn.Identity()]


@pytest.mark.parametrize("module", MODULES, ids=repr)
def test_prime_matches_autograd_of_the_module(module):
    x = torch.linspace(-40, 40, 4001, dtype=torch.float64)
    x = x[x != 0]  # the kinks of ReLU-like functions
    (layer,) = [l for l in _structured.parse(nn.Sequential(nn.Linear(1, 1), module)) if l.kind == "elementwise"]
    want = _structured._autograd_prime(module, x)
    torch.testing.assert_close(layer.prime(x), want, rtol=1e-12, atol=1e-15)
    shared = _structured._same_activation(module)
    if shared is not None:  # same function, so φ' may come from it
        assert isinstance(shared, activations.Activation) and type(layer.phi) is type(shared)
        torch.testing.assert_close(shared(x), module(x), rtol=1e-14, atol=0)
    elif not isinstance(module, nn.Identity):
        assert layer.phi is None  # no wideNN twin: autograd


def test_twins_cover_the_common_modules():
    for m in (nn.ReLU(), nn.GELU(), nn.ELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.Softplus()):
        assert _structured._same_activation(m) is not None, m
