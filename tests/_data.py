"""Where the tests find the real data sets (MNIST, CIFAR-10, UCI): ``$WIDENN_DATA`` if set, else
``../shared/data`` next to the checkout. Tests that need a set skip, saying where they looked."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The folder holding ``mnist/``, ``cifar10/``, ``uci/`` (it may not exist)."""
    env = os.environ.get("WIDENN_DATA")
    return Path(env).expanduser() if env else ROOT.parent / "shared" / "data"


DATA = data_dir()


def missing(sub: str) -> str:
    """Why a test needing ``DATA/sub`` is skipped."""
    return (f"needs the real data {DATA / sub} (set WIDENN_DATA to the folder holding mnist/, "
            f"cifar10/, uci/; default ../shared/data next to the checkout)")


def needs(sub: str) -> pytest.MarkDecorator:
    """A skip marker for tests that need ``DATA/sub``."""
    return pytest.mark.skipif(not (DATA / sub).exists(), reason=missing(sub))
