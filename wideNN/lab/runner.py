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
* an optional ``num_threads`` key (int > 0) pins torch's CPU threads for the run.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from .config import ConfigError, apply_overrides, load_config, resolve_config
from .context import CONFIG_FILE, RESULTS_FILE, TABLE_FILE, Context
from .discovery import find_config, load_experiment
from .distributed_grid import SHARD_DIR, finish, launch_group
from .machine import device_name, resolve_device, versions
from .results import atomic_write_bytes, to_jsonable

__all__ = ["run_experiment"]


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


def run_experiment(
    config: str | os.PathLike | Mapping,
    out_dir: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    device: str | None = "cpu",
    fresh: bool = False,
    experiments_dir: str | os.PathLike | None = None,
    quiet: bool = False,
) -> Context:
    """Validate ``config`` (a YAML path or a dict), run its experiment into ``out_dir`` and return the Context.

    ``out_dir`` defaults to ``runs/<config stem>`` (relative to the current
    directory; for a dict config, ``runs/<experiment name>``). If the folder holds
    a results.json from an earlier run, the run resumes: keys already recorded are
    not recomputed. A different resolved config raises :class:`ConfigError` unless
    ``fresh=True``, which discards the old results. On an exception inside the
    experiment, results.json is kept with ``metadata.status == "failed"`` and the
    exception propagates.
    """

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
    dev = resolve_device(device)
    group = launch_group(dev)               # None unless launched by torchrun with > 1 rank
    try:
        return _run_resolved(module, resolved, stem, dev, group, out_dir, fresh, quiet)
    finally:
        finish(group)


def _run_resolved(module, resolved: dict, stem: str, dev, group, out_dir, fresh: bool, quiet: bool) -> Context:
    """The run itself, once the config is resolved (only rank 0 of a launch writes)."""
    import torch

    writer = group is None or group.rank == 0
    if group is not None:
        group.same_on_all_ranks("resolved configs", _canonical(resolved))

    out = Path(out_dir) if out_dir is not None else Path("runs") / stem
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    if group is not None:
        group.barrier()
    results_path = out / RESULTS_FILE
    prior: dict | None = None
    if results_path.exists() and not fresh:
        try:
            prior = json.loads(results_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{results_path} is unreadable ({e}); rerun with --fresh to start over") from None
        if _canonical(prior.get("config", {})) != _canonical(resolved):
            diff = "\n  ".join(_config_diff(prior.get("config", {}), to_jsonable(resolved)))
            raise ConfigError(
                f"{out} holds results of a different config:\n  {diff}\n"
                "use another --out folder, or --fresh to discard the old results"
            )
    elif fresh and writer:
        for name in (RESULTS_FILE, TABLE_FILE):
            (out / name).unlink(missing_ok=True)
        for shard in (out / SHARD_DIR).glob("rank*.json"):   # cells of an unfinished launch
            shard.unlink()

    meta = {
        "experiment": resolved["experiment"],
        "status": "running",
        "seed": int(resolved.get("seed", 0)),
        "dtype": resolved.get("dtype", "float64"),
        "device": str(dev),
        "device_name": device_name(dev),
        "versions": versions(),
        "host": platform.node(),
        "argv": sys.argv,
        "start_time": _now(),
        "wall_time_s": 0.0,
    }
    if prior is not None:
        old = prior.get("metadata", {})
        meta["first_start_time"] = old.get("first_start_time", old.get("start_time"))
        meta["sessions"] = int(old.get("sessions", 1)) + 1
        meta["previous_wall_time_s"] = float(old.get("previous_wall_time_s", 0.0)) + float(old.get("wall_time_s", 0.0))
    else:
        meta["first_start_time"] = meta["start_time"]
        meta["sessions"] = 1
        meta["previous_wall_time_s"] = 0.0
    state = {
        "config": to_jsonable(resolved),
        "metadata": meta,
        "results": dict(prior.get("results", {})) if prior else {},
        "rows": dict(prior.get("rows", {})) if prior else {},
        "figures": list(prior.get("figures", [])) if prior else [],
    }

    if writer:
        atomic_write_bytes(out / CONFIG_FILE, yaml.safe_dump(to_jsonable(resolved), sort_keys=False).encode())
    ctx = Context(out, resolved, dev, state, quiet=quiet or not writer, group=group)
    ctx.flush()
    if prior is not None:
        ctx.log(f"resuming {out}: {len(state['results'])} result(s), {len(state['rows'])} row(s) already done")

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
        raise
    finally:
        torch.set_num_threads(prev_threads)
    meta["status"] = "complete"
    meta.pop("error", None)
    meta["end_time"] = _now()
    table = ctx.final_table()
    if table is not None and writer:
        atomic_write_bytes(out / TABLE_FILE, (table + "\n").encode())
    ctx.flush()
    if table is not None:
        ctx.log(table)
    ctx.log(f"results in {out} ({meta['wall_time_s']:.1f} s)")
    return ctx
