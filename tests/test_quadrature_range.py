"""Out-of-range quadrature variances are refused before the N×M work (wideNN._quadrature_range)."""
import pytest
import torch

import wideNN as wn
from wideNN import activations as A
from wideNN import analytic
from wideNN._quadrature_range import check_quadrature_range

F64 = torch.float64


def _x(n=6, d=5, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_deep_refusal_comes_before_any_two_dimensional_dual(monkeypatch):
    """softplus with σ_w² = 200 grows past its rule's range at the third layer: the error must
    come before a single 2-D dual (these used to take minutes at N = 100 before the refusal)."""
    act = A.Softplus()

    def no_pairs(*args, **kwargs):
        raise AssertionError("the N×M recursion started before the range check")

    monkeypatch.setattr(act, "_quadrature_dual", no_pairs)
    monkeypatch.setattr(A.Softplus, "mehler", False)
    with pytest.raises(ValueError, match="estimated relative error"):
        wn.analytic.kernels(_x(50), depth=3, activation=act, weight_variance=200.0, bias_variance=0.1)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "silu"])
def test_the_up_front_check_refuses_exactly_what_the_recursion_refuses(name, monkeypatch):
    """Over a grid of σ_w² and depths, the 1-D check raises iff the kernel itself (with the
    check switched off) raises: it neither refuses a kernel the layers would compute (where
    Mehler's series covers large variances) nor lets one through that they refuse."""
    x = _x(4)
    cls = type(A.get(name))
    outcomes = set()
    for w in (1.0, 40.0, 120.0, 400.0):
        for depth in (1, 3):
            early = late = None
            try:
                check_quadrature_range(cls(), depth, w, 0.1, (x, None))
            except ValueError as e:
                early = str(e)
            with monkeypatch.context() as m:
                m.setattr(analytic, "check_quadrature_range", lambda *a, **k: None)
                try:
                    wn.analytic.kernels(x, depth=depth, activation=cls(), weight_variance=w, bias_variance=0.1)
                except ValueError as e:
                    late = str(e)
            assert (early is None) == (late is None), (name, w, depth, early, late)
            outcomes.add(early is None)
    assert outcomes == {True, False}  # the grid holds both kinds


def test_batched_variances_are_checked_per_batch_element():
    """σ_w² of shape (2, 1): only the large one is out of range, and the check sees it."""
    w = torch.tensor([[1.0], [400.0]], dtype=F64)
    with pytest.raises(ValueError, match="estimated relative error"):
        check_quadrature_range(A.Softplus(), 3, w, 0.1, (_x(4),))
    check_quadrature_range(A.Softplus(), 3, torch.tensor([[1.0], [2.0]], dtype=F64), 0.1, (_x(4),))


def test_closed_forms_and_depth_zero_are_not_checked():
    """No activation at depth 0, and none to integrate for a closed form: nothing is refused
    (softplus at variance ~1e6 would be, at depth ≥ 1)."""
    assert check_quadrature_range(A.get("relu"), 3, 1e6, 0.1, (_x(),)) is None
    assert check_quadrature_range(A.Softplus(), 0, 1e6, 0.1, (_x(),)) is None
    with pytest.raises(ValueError, match="estimated relative error"):
        check_quadrature_range(A.Softplus(), 1, 1e6, 0.1, (_x(),))
