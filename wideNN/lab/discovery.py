"""Where experiments and configs live, and loading an experiment module from its file.

``wideNN list`` and ``run_experiment`` find experiments as ``<experiments dir>/NAME.py`` and
configs as ``<configs dir>/*.yaml``. The built-in folders are the repository's ``experiments/``
and ``configs/``; an installed wheel ships them as ``wideNN.lab.experiments`` and
``wideNN.lab.configs`` (see setup.py), so the same names work in a checkout and after
``pip install``. Either folder can be replaced with ``$WIDENN_EXPERIMENTS_DIR`` /
``$WIDENN_CONFIGS_DIR`` or an explicit argument (``--experiments-dir``), and a config may name
its own experiment script directly (``experiment: path/to/script.py``, relative to the config).
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
    """The folder that holds the ``wideNN/`` package (in a checkout: the repository root)."""
    return Path(__file__).resolve().parents[2]


def _builtin(kind: str) -> Path:
    """The built-in ``experiments`` or ``configs`` folder: the checkout's, else the installed package data.

    A source tree (``setup.py`` next to ``wideNN/``) uses its own ``<repo>/<kind>``, so a checkout
    never runs another copy's experiments; an installed wheel has them as ``wideNN.lab.<kind>``.
    """
    root = repo_root()
    if (root / "setup.py").is_file() and (root / kind).is_dir():
        return root / kind
    try:
        spec = importlib.util.find_spec(f"wideNN.lab.{kind}")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return root / kind


def experiments_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder of experiment modules: ``override``, else ``$WIDENN_EXPERIMENTS_DIR``, else the built-in one."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WIDENN_EXPERIMENTS_DIR")
    return Path(env) if env else _builtin("experiments")


def configs_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder of configs: ``override``, else ``$WIDENN_CONFIGS_DIR``, else the built-in one."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WIDENN_CONFIGS_DIR")
    return Path(env) if env else _builtin("configs")


def find_config(config: str | os.PathLike, cfg_dir: str | os.PathLike | None = None) -> Path:
    """The config file ``config`` names: a path as given, else ``<configs dir>/<name>.yaml``.

    ``wideNN run quickstart`` and ``wideNN run configs/quickstart.yaml`` both find the
    built-in quickstart config, from any folder and after a non-editable install; a path
    that exists always wins. A miss raises :class:`ConfigError` suggesting close names.
    """
    p = Path(config)
    if p.is_file():
        return p
    d = configs_dir(cfg_dir)
    stem = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    for cand in (d / f"{stem}.yaml", d / f"{stem}.yml"):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in [*d.glob("*.yaml"), *d.glob("*.yml")]) if d.is_dir() else []
    raise ConfigError(f"config file {str(p)!r} does not exist (nor {stem!r} in {d})"
                      f"{_did_you_mean(stem, known)}")


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


def _experiment_path(name: str, exp_dir: str | os.PathLike | None, base: Path | None) -> Path:
    """The file of experiment ``name``: a ``.py`` path (relative to ``base``) or ``<experiments dir>/name.py``."""
    if not isinstance(name, str):
        raise ConfigError(f"config key 'experiment': {name!r} is not a valid experiment name")
    if name.endswith(".py"):
        path = Path(name).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise ConfigError(f"config key 'experiment': script {str(path)!r} does not exist")
        return path
    if not name.isidentifier():
        raise ConfigError(f"config key 'experiment': {name!r} is not a valid experiment name "
                          "(a module name, or a path ending in .py)")
    d = experiments_dir(exp_dir)
    path = d / f"{name}.py"
    if not path.is_file():
        known = available_experiments(d)
        raise ConfigError(
            f"config key 'experiment': no experiment {name!r} in {d}{_did_you_mean(name, known)}"
            f" (available: {', '.join(known) or 'none'})"
        )
    return path


def load_experiment(name: str, exp_dir: str | os.PathLike | None = None,
                    base: str | os.PathLike | None = None) -> ModuleType:
    """Import experiment ``name`` and check it has ``DEFAULTS`` (dict) and ``run``.

    ``name`` is a module in the experiments folder (``exp_dir``, see :func:`experiments_dir`)
    or the path of a user's own script ending in ``.py`` (relative paths are taken relative
    to ``base``, the folder of the config that names it, else the current directory). The
    module is loaded from its file, not registered in ``sys.modules``, so two experiments
    folders never shadow each other.
    """
    path = _experiment_path(name, exp_dir, Path(base) if base is not None else None)
    spec = importlib.util.spec_from_file_location(f"wideNN_experiments_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "DEFAULTS", None), dict) or not callable(getattr(module, "run", None)):
        raise ConfigError(f"experiment module {path} must define DEFAULTS: dict and run(cfg, ctx)")
    return module
