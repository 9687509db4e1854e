"""Where experiments and configs live, and loading an experiment module from its file.

``wideNN list`` and ``run_experiment`` find experiments as ``<experiments dir>/NAME.py`` and
configs as ``<configs dir>/*.yaml``; both folders default to the repository's and can be moved
with ``$WIDENN_EXPERIMENTS_DIR`` / ``$WIDENN_CONFIGS_DIR`` (or an explicit argument).
"""
from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import yaml

from .config import ConfigError, _did_you_mean


def repo_root() -> Path:
    """The repository root (the folder that holds ``wideNN/``, ``experiments/``, ``configs/``)."""
    return Path(__file__).resolve().parents[2]


def experiments_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder of experiment modules: ``override``, else ``$WIDENN_EXPERIMENTS_DIR``, else ``<repo>/experiments``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WIDENN_EXPERIMENTS_DIR")
    return Path(env) if env else repo_root() / "experiments"


def configs_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder of configs: ``override``, else ``$WIDENN_CONFIGS_DIR``, else ``<repo>/configs``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WIDENN_CONFIGS_DIR")
    return Path(env) if env else repo_root() / "configs"


def available_experiments(exp_dir: str | os.PathLike | None = None) -> list[str]:
    """Sorted names of the experiment modules in ``exp_dir`` (files ``NAME.py``, not ``_*.py``)."""
    d = experiments_dir(exp_dir)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.py") if not p.stem.startswith("_"))


def experiment_summary(name: str, exp_dir: str | os.PathLike | None = None) -> str:
    """First line of the module docstring of experiment ``name``, read without importing it."""
    path = experiments_dir(exp_dir) / f"{name}.py"
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def configs_by_experiment(cfg_dir: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """Map experiment name -> config files (``*.yaml``/``*.yml`` in ``cfg_dir``) whose ``experiment:`` names it.

    Unreadable configs are grouped under the key ``"<unreadable>"``.
    """
    d = configs_dir(cfg_dir)
    out: dict[str, list[Path]] = {}
    if not d.is_dir():
        return out
    for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
        try:
            data = yaml.safe_load(p.read_text())
            name = data.get("experiment") if isinstance(data, dict) else None
        except (OSError, yaml.YAMLError):
            name = None
        out.setdefault(str(name) if name else "<unreadable>", []).append(p)
    return out


def load_experiment(name: str, exp_dir: str | os.PathLike | None = None) -> ModuleType:
    """Import ``<experiments dir>/<name>.py`` and check it has ``DEFAULTS`` (dict) and ``run``.

    The module is loaded from its file, not registered in ``sys.modules``, so two
    experiments dirs never shadow each other.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"config key 'experiment': {name!r} is not a valid experiment name")
    d = experiments_dir(exp_dir)
    path = d / f"{name}.py"
    if not path.is_file():
        known = available_experiments(d)
        hint = _did_you_mean(name, known)
        raise ConfigError(
            f"config key 'experiment': no experiment {name!r} in {d}{hint}"
            f" (available: {', '.join(known) or 'none'})"
        )
    spec = importlib.util.spec_from_file_location(f"wideNN_experiments_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "DEFAULTS", None), dict) or not callable(getattr(module, "run", None)):
        raise ConfigError(f"experiment module {path} must define DEFAULTS: dict and run(cfg, ctx)")
    return module
