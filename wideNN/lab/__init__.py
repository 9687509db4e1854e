"""The experiment harness: configs, the runner and its results folder, experiment discovery, the CLI.

The library (everything else under :mod:`wideNN`) never imports this subpackage; it sits on
top of it, the way a user's own scripts do.

* :mod:`wideNN.lab.config` -- read a YAML config, apply ``--set`` overrides, validate it;
* :mod:`wideNN.lab.discovery` -- where experiments and configs are found, loading a module;
* :mod:`wideNN.lab.context` -- the :class:`Context` an experiment stores its results through;
* :mod:`wideNN.lab.runner` -- :func:`run_experiment`: config -> output folder, resumable;
* :mod:`wideNN.lab.results` -- JSON-safe values, atomic writes, plain-text tables;
* :mod:`wideNN.lab.machine` -- the torch device of a run and the versions it records;
* :mod:`wideNN.lab.cli` -- the ``wideNN`` command (``python -m wideNN``).
"""
from .config import ConfigError
from .context import Context
from .runner import run_experiment

__all__ = ["ConfigError", "Context", "run_experiment"]
