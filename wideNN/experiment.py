"""Experiment harness: find experiment modules, run one into an output folder, keep its results resumable.

An experiment is a module ``experiments/NAME.py`` that declares

* ``DEFAULTS: dict`` -- every allowed config key with its default; the defaults'
  types are the config schema (see :mod:`wideNN.config`).
* ``run(cfg: dict, ctx: Context) -> None`` -- reads the resolved config, calls the
  library, stores every measured number through ``ctx`` and writes figures.

A config YAML is ``experiment: NAME`` plus keys. :func:`run_experiment` resolves
and validates it, creates the output folder, and hands the experiment a
:class:`Context`. Results live in ``results.json``; each write is atomic, so a
killed run keeps every finished measurement, and a rerun into the same folder with
the same resolved config skips them (see :meth:`Context.cached`).

Conventions:

* optional keys ``seed`` (int, default 0) and ``dtype`` (``"float32"`` or
  ``"float64"``, default ``"float64"``) feed ``ctx.seed`` / ``ctx.dtype``;
* an optional ``num_threads`` key (int > 0) pins torch's CPU threads for the run;
* non-finite floats are stored as JSON ``null`` (results.json stays strict JSON).
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

import yaml

# The config, output and device helpers live in their own modules; they are imported
# here under their old names too, so ``wideNN.experiment.X`` keeps working for callers.
from ._discovery import (available_experiments, configs_by_experiment, configs_dir, experiment_summary,
                         experiments_dir, load_experiment, repo_root)
from ._machine import device_name, resolve_device, versions
from ._results import atomic_write_bytes, format_table, to_jsonable
from .config import ConfigError, apply_overrides, load_config, resolve_config

if TYPE_CHECKING:
    import torch

__all__ = [
    "Context", "run_experiment", "RESULTS_FILE", "CONFIG_FILE", "TABLE_FILE",
    # re-exported from _discovery, config, _results and _machine
    "repo_root", "experiments_dir", "configs_dir", "available_experiments", "experiment_summary",
    "configs_by_experiment", "load_experiment", "ConfigError", "load_config", "apply_overrides",
    "resolve_config", "to_jsonable", "atomic_write_bytes", "format_table", "resolve_device",
    "device_name", "versions",
]

T = TypeVar("T")

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
TABLE_FILE = "table.txt"


# --------------------------------------------------------------------------- context


class Context:
    """What an experiment's ``run(cfg, ctx)`` uses to store results, figures and the final table.

    Attributes: ``out_dir`` (Path), ``config`` (the resolved config), ``device``
    (torch.device), ``dtype`` (torch.dtype), ``seed`` (int).

    Results are JSON values stored under string keys in ``results.json``
    (section ``"results"``; table rows in section ``"rows"``). Every write is
    atomic. A key that is present is *done*: a resumed run gets its stored value
    back instead of recomputing it.
    """

    def __init__(self, out_dir: Path, config: dict, device: torch.device, state: dict,
                 quiet: bool = False) -> None:
        import torch

        self.out_dir = Path(out_dir)
        self.config = config
        self.device = device
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[config.get("dtype", "float64")]
        self.seed = int(config.get("seed", 0))
        self.quiet = quiet
        self._state = state
        self._table: tuple[list[dict], list[str] | None] | None = None
        self._t0 = time.perf_counter()

    # ---- results

    @property
    def results(self) -> dict:
        """All results recorded so far (read-only view by convention; use :meth:`record`)."""
        return self._state["results"]

    def done(self, key: str) -> bool:
        """Whether ``key`` already has a stored result (from this run or a previous one)."""
        return key in self._state["results"]

    def get(self, key: str, default: Any = None) -> Any:
        """The stored result under ``key``, or ``default``."""
        return self._state["results"].get(key, default)

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` (converted by :func:`to_jsonable`) under ``key`` and write results.json atomically.

        Overwrites an existing value. Returns the stored (JSON) form.
        """
        stored = to_jsonable(value)
        self._state["results"][str(key)] = stored
        self.flush()
        return stored

    def cached(self, key: str, fn: Callable[[], T]) -> Any:
        """Return the stored result under ``key`` if done; otherwise call ``fn()``, record it and return it.

        The return value is always the stored JSON form (tensors/arrays become nested
        lists, NaN becomes None), so the code after it behaves the same on a fresh
        run and on a resumed one.
        """
        key = str(key)
        if key in self._state["results"]:
            return self._state["results"][key]
        return self.record(key, fn())

    # ---- rows

    @property
    def rows(self) -> list[dict]:
        """Rows added with :meth:`add_row`, in insertion order (including rows from a resumed run)."""
        return list(self._state["rows"].values())

    def add_row(self, key: str, row: Mapping) -> dict:
        """Store a table row under ``key`` (replacing one with the same key, keeping its position)."""
        stored = to_jsonable(dict(row))
        self._state["rows"][str(key)] = stored
        self.flush()
        return stored

    def has_row(self, key: str) -> bool:
        """Whether a row with ``key`` is stored."""
        return str(key) in self._state["rows"]

    # ---- outputs

    def path(self, name: str) -> Path:
        """A path inside the output folder (for files an experiment writes itself)."""
        return self.out_dir / name

    def savefig(self, fig: Any, name: str, dpi: int = 150) -> Path:
        """Write ``fig`` as PNG ``<out_dir>/<name>`` (``.png`` added if missing) atomically, then close it."""
        import io

        if not name.endswith(".png"):
            name += ".png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = self.out_dir / name
        atomic_write_bytes(path, buf.getvalue())
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
        figures = self._state["figures"]
        if name not in figures:
            figures.append(name)
            self.flush()
        return path

    def table(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
        """Set the final table (printed at the end and saved as table.txt); returns its text.

        Without a call, the rows from :meth:`add_row` are used.
        """
        self._table = ([dict(r) for r in rows], list(columns) if columns is not None else None)
        return format_table(*self._table)

    def progress(self, iterable: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterable[T]:
        """``tqdm`` over ``iterable``; silent when stderr is not a TTY or ``WIDENN_NO_PROGRESS=1``."""
        from tqdm.auto import tqdm

        disable = self.quiet or os.environ.get("WIDENN_NO_PROGRESS") == "1" or not sys.stderr.isatty()
        return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)

    def log(self, msg: str) -> None:
        """Print a line (unless quiet)."""
        if not self.quiet:
            print(msg, flush=True)

    def generator(self, offset: int = 0, device: Any = None) -> torch.Generator:
        """A fresh ``torch.Generator`` on ``device`` (default ``ctx.device``) seeded with ``seed + offset``."""
        import torch

        g = torch.Generator(device=device if device is not None else self.device)
        g.manual_seed(self.seed + offset)
        return g

    # ---- internal

    def flush(self) -> None:
        """Write results.json now (atomic)."""
        meta = self._state["metadata"]
        meta["wall_time_s"] = time.perf_counter() - self._t0
        data = json.dumps(self._state, indent=1, allow_nan=False).encode()
        atomic_write_bytes(self.out_dir / RESULTS_FILE, data)

    def final_table(self) -> str | None:
        if self._table is not None:
            return format_table(*self._table)
        if self._state["rows"]:
            return format_table(self.rows)
        return None


# --------------------------------------------------------------------------- runner


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
    import torch

    if isinstance(config, Mapping):
        raw, stem = dict(config), str(config.get("experiment"))
    else:
        raw, stem = load_config(config), Path(config).stem
    raw = apply_overrides(raw, overrides)
    if "experiment" not in raw:
        raise ConfigError(f"config {stem!r} has no 'experiment' key (the name of a module in experiments/)")
    module = load_experiment(raw["experiment"], experiments_dir)
    resolved = resolve_config(raw, module.DEFAULTS)
    dev = resolve_device(device)

    out = Path(out_dir) if out_dir is not None else Path("runs") / stem
    out.mkdir(parents=True, exist_ok=True)
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
    elif fresh:
        for name in (RESULTS_FILE, TABLE_FILE):
            (out / name).unlink(missing_ok=True)

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

    atomic_write_bytes(out / CONFIG_FILE, yaml.safe_dump(to_jsonable(resolved), sort_keys=False).encode())
    ctx = Context(out, resolved, dev, state, quiet=quiet)
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
    if table is not None:
        atomic_write_bytes(out / TABLE_FILE, (table + "\n").encode())
    ctx.flush()
    if table is not None:
        ctx.log(table)
    ctx.log(f"results in {out} ({meta['wall_time_s']:.1f} s)")
    return ctx
