"""Run an experiment from its config into an output folder, resuming what an earlier run finished.

An experiment is a module ``NAME.py`` in an experiments folder (see :mod:`wideNN.lab.discovery`)
that declares

* ``DEFAULTS: dict`` -- every allowed config key with its default; the defaults'
  types are the config schema (see :mod:`wideNN.lab.config`).
* ``run(cfg: dict, ctx: Context) -> None`` -- reads the resolved config, calls the
  library, stores every measured number through ``ctx`` and writes figures.

A config YAML is ``experiment: NAME`` plus keys. :func:`run_experiment` resolves
and validates it, creates the output folder, and hands the experiment a
:class:`~wideNN.lab.context.Context`.

Conventions:

* optional keys ``seed`` (int, default 0) and ``dtype`` (``"float32"`` or
  ``"float64"``, default ``"float64"``) feed ``ctx.seed`` / ``ctx.dtype``;
* an optional ``num_threads`` key (int > 0) pins torch's CPU threads for the run;
* an experiment may define ``validate(cfg)``, raising :class:`ConfigError` for values its
  ``DEFAULTS`` cannot express (e.g. a required ``data_dir``); it runs before the output
  folder is created;
* a result ``"skipped"`` (a dict: what -> why) with no table row at the end means the run
  measured nothing: :class:`RunIncomplete` (``wideNN run`` exits 3).
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterable, Mapping

import yaml

from .config import ConfigError, apply_overrides, load_config, resolve_config
from .context import CHECKPOINT_DIR, CONFIG_FILE, RESULTS_FILE, TABLE_FILE, Context
from .discovery import find_config, load_experiment
from .distributed_grid import SHARD_DIR, finish, launch_group
from .machine import device_name, resolve_device, versions
from .._io import atomic_write_bytes
from .results import to_jsonable

if TYPE_CHECKING:
    import torch

__all__ = ["run_experiment", "RunInterrupted", "RunIncomplete"]


class RunInterrupted(Exception):
    """The run was interrupted (Ctrl-C); results.json keeps every finished result."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(f"interrupted; finished results are kept in {out_dir}: "
                         "rerun the same command to resume")
        self.out_dir = out_dir


class RunIncomplete(Exception):
    """The experiment finished but measured nothing: every row was skipped (e.g. missing data)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _canonical(cfg: Mapping) -> str:
    return json.dumps(to_jsonable(cfg), sort_keys=True)


def _config_diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    lines = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _config_diff(a, b, f"{prefix}{k}.")
        elif to_jsonable(a) != to_jsonable(b):
            lines.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return lines


def _prepare(config: str | os.PathLike | Mapping, overrides: Iterable[str],
             experiments_dir: str | os.PathLike | None) -> tuple[ModuleType, dict, str]:
    """Load, override and validate the config (values too) before anything touches the disk."""
    if isinstance(config, Mapping):
        raw, stem, base = dict(config), Path(str(config.get("experiment"))).stem, None
    else:
        path = find_config(config)
        raw, stem, base = load_config(path), path.stem, path.parent
    raw = apply_overrides(raw, overrides)
    if "experiment" not in raw:
        raise ConfigError(f"config {stem!r} has no 'experiment' key (the name of a module in experiments/)")
    module = load_experiment(raw["experiment"], experiments_dir, base=base)
    resolved = resolve_config(raw, module.DEFAULTS)
    validate = getattr(module, "validate", None)
    if callable(validate):
        validate(copy.deepcopy(resolved))
    return module, resolved, stem


def _open_out(out: Path, resolved: dict, fresh: bool) -> dict | None:
    """Create (or reuse) the output folder; return the earlier results to resume, if any.

    Folders that cannot hold the results (a file, a path under a file, a read-only folder) and
    results.json files of another shape or config are refused with a ConfigError before any
    file in the folder is changed.
    """
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {str(out)!r}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {str(out)!r}: the folder is not writable")
    results_path = out / RESULTS_FILE
    if fresh or not results_path.exists():
        return None
    try:
        prior = json.loads(results_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{results_path} is unreadable ({type(e).__name__}); rerun with --fresh to start "
                          "over, or use another --out") from None
    shapes = {"config": dict, "metadata": dict, "results": dict, "rows": dict, "figures": list}
    if not isinstance(prior, dict) or any(not isinstance(prior.get(k, t()), t) for k, t in shapes.items()):
        raise ConfigError(f"{results_path} is not a wideNN results file (unexpected structure); rerun with "
                          "--fresh to start over, or use another --out")
    if _canonical(prior.get("config", {})) != _canonical(resolved):
        diff = "\n  ".join(_config_diff(prior.get("config", {}), to_jsonable(resolved)))
        raise ConfigError(f"{out} holds results of a different config:\n  {diff}\n"
                          "use another --out folder, or --fresh to discard the old results")
    return prior


def _metadata(resolved: dict, dev: torch.device, prior: dict | None) -> dict:
    meta = {
        "experiment": resolved["experiment"], "status": "running", "seed": int(resolved.get("seed", 0)),
        "dtype": resolved.get("dtype", "float64"), "device": str(dev), "device_name": device_name(dev),
        "versions": versions(), "host": platform.node(), "argv": sys.argv, "start_time": _now(),
        "wall_time_s": 0.0,
    }
    old = (prior or {}).get("metadata", {})
    meta["first_start_time"] = old.get("first_start_time", old.get("start_time", meta["start_time"]))
    meta["sessions"] = int(old.get("sessions", 0)) + 1
    meta["previous_wall_time_s"] = float(old.get("previous_wall_time_s", 0.0)) + float(old.get("wall_time_s", 0.0))
    return meta


def _execute(module: ModuleType, resolved: dict, ctx: Context) -> None:
    """``module.run`` with the seed and thread settings; the failure (or interruption) recorded."""
    import torch

    meta = ctx._state["metadata"]
    # Seeding the global RNG too makes library code that draws from it (without a
    # generator argument) reproducible from the config's seed.
    torch.manual_seed(ctx.seed)
    # an optional ``num_threads`` key (> 0) pins torch's CPU threads for the run: small loops on
    # a busy 2-core machine are much faster on one thread than on two spinning ones
    prev_threads = torch.get_num_threads()
    threads = resolved.get("num_threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
        torch.set_num_threads(threads)
    try:
        module.run(copy.deepcopy(resolved), ctx)
    except BaseException as e:
        meta["status"] = "failed" if not isinstance(e, KeyboardInterrupt) else "interrupted"
        meta["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
        try:
            ctx.flush()
        except Exception:  # e.g. the disk is what failed; the original error matters more
            pass
        if isinstance(e, KeyboardInterrupt):
            raise RunInterrupted(ctx.out_dir) from None
        raise
    finally:
        torch.set_num_threads(prev_threads)


def run_experiment(
    config: str | os.PathLike | Mapping,
    out_dir: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    device: str | None = "cpu",
    fresh: bool = False,
    experiments_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> Context:
    """Validate ``config`` (a YAML path or name, or a dict), run its experiment into ``out_dir``.

    ``out_dir`` defaults to ``runs/<config stem>`` (relative to the current
    directory; for a dict config, ``runs/<experiment name>``). If the folder holds
    a results.json from an earlier run, the run resumes: keys already recorded are
    not recomputed. A different resolved config raises :class:`ConfigError` unless
    ``fresh=True``, which discards the old results. Every check of the config, its values
    and the output folder happens before the folder is created or changed. On an exception
    inside the experiment, results.json is kept with ``metadata.status == "failed"`` and the
    exception propagates; Ctrl-C becomes :class:`RunInterrupted`. Returns the Context.
    """
    module, resolved, stem = _prepare(config, overrides, experiments_dir)
    dev = resolve_device(device)
    group = launch_group(dev)               # None unless launched by torchrun with > 1 rank
    try:
        return _run(module, resolved, dev, group,
                    Path(out_dir) if out_dir is not None else Path("runs") / stem, fresh, quiet)
    finally:
        finish(group)


def _open_out_on_ranks(out: Path, resolved: dict, fresh: bool, group) -> dict | None:
    """``_open_out`` on rank 0 (the other ranks then only read the folder); a refusal raises
    on every rank of a launch."""
    if group is None:
        return _open_out(out, resolved, fresh)
    group.same_on_all_ranks("resolved configs", _canonical(resolved))
    prior, err = None, None
    if group.rank == 0:
        try:
            prior = _open_out(out, resolved, fresh)
        except ConfigError as e:
            err = e
    group.agree(err)
    return prior if group.rank == 0 else _open_out(out, resolved, fresh)


def _run(module: ModuleType, resolved: dict, dev, group, out: Path, fresh: bool, quiet: bool) -> Context:
    """The run once the config is resolved; in a launch only rank 0 writes the folder."""
    writer = group is None or group.rank == 0
    prior = _open_out_on_ranks(out, resolved, fresh, group)
    if fresh and writer:
        for name in (RESULTS_FILE, TABLE_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)   # cells of an unfinished launch
    meta = _metadata(resolved, dev, prior)
    state = {"config": to_jsonable(resolved), "metadata": meta,
             "results": dict(prior.get("results", {})) if prior else {},
             "rows": dict(prior.get("rows", {})) if prior else {},
             "figures": list(prior.get("figures", [])) if prior else []}

    if writer:
        atomic_write_bytes(out / CONFIG_FILE, yaml.safe_dump(to_jsonable(resolved), sort_keys=False).encode())
    ctx = Context(out, resolved, dev, state, quiet=quiet or not writer, group=group)
    ctx.flush()
    if prior is not None:
        ctx.log(f"resuming {out}: {len(state['results'])} result(s), {len(state['rows'])} row(s) already done")
    _execute(module, resolved, ctx)
    meta.pop("error", None)
    meta["end_time"] = _now()
    skipped = state["results"].get("skipped")
    if skipped and not state["rows"]:
        meta["status"] = "incomplete"
        ctx.flush()
        reasons = "; ".join(f"{k}: {str(v)[:120]}" for k, v in list(skipped.items())[:3])
        raise RunIncomplete(f"nothing was measured: every row was skipped ({reasons})")
    meta["status"] = "complete"
    table = ctx.final_table()
    if table is not None and writer:
        atomic_write_bytes(out / TABLE_FILE, (table + "\n").encode())
    ctx.flush()
    if table is not None:
        ctx.log(table)
    ctx.log(f"results in {out} ({meta['wall_time_s']:.1f} s)")
    return ctx
