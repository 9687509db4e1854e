"""What a reader sees: the README's taste snippet runs as printed, public help shows formulas."""
from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path

import pytest

import wideNN as wn

ROOT = Path(wn.__file__).resolve().parents[1]


def _taste() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A taste"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # ~5 s of CPU (a width-1024 net trained 100 steps)
def test_readme_taste_snippet_prints_what_the_readme_says():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_taste(), "README.md", "exec"), {})
    printed = out.getvalue()
    readme = (ROOT / "README.md").read_text()
    distance = re.search(r"‖Θ̂ − Θ‖/‖Θ‖ = ([0-9.]+)", printed).group(1)
    assert f"‖Θ̂ − Θ‖/‖Θ‖ = {distance}`" in readme  # the quoted value is this run's value
    start, end = re.search(r"training loss ([0-9.]+) → ([0-9.]+)", printed).groups()
    assert f"from {start} to {end}" in readme
    assert "torch.Size([20, 10]) torch.Size([20])" in printed


# each public callable's own help must carry its formula (a '=' with math on both sides),
# not send the reader elsewhere
FORMULA = re.compile(r"[=≈]")
MATH = re.compile(r"[ΣσθΘKφηλ∂‖√∇]|log |exp|e\^")


@pytest.mark.parametrize("obj", [
    wn.Architecture, wn.Architecture.kernels, wn.Architecture.nngp, wn.Architecture.ntk, wn.Dense,
    wn.NNGPKernel, wn.NTKKernel, wn.empirical_ntk, wn.empirical_nngp, wn.log_marginal_likelihood,
    wn.fit_hyperparameters, wn.train, wn.max_learning_rate, wn.linearize, wn.taylor,
], ids=lambda o: o.__qualname__)
def test_public_help_shows_its_formula(obj):
    doc = inspect.getdoc(obj) or ""
    assert FORMULA.search(doc) and MATH.search(doc), f"{obj.__qualname__}: no formula in its docstring"
    assert "see the module docstring" not in doc
