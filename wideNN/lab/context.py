"""What an experiment's ``run(cfg, ctx)`` receives: the :class:`Context` that stores results, rows and figures.

Results live in ``results.json``; each write is atomic, so a killed run keeps every
finished measurement, and a rerun into the same folder with the same resolved config
skips them (see :meth:`Context.cached`). Non-finite floats are stored as JSON ``null``.
A unit too long to redo after every kill (a training loop, a hyperparameter fit) passes
``checkpoint=ctx.checkpoint_path(key)`` to the library call, so that a rerun continues it from
its last checkpoint; the unit's checkpoint files are deleted once its result or row is stored.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

from .._io import atomic_write_bytes
from .results import format_table, to_jsonable

if TYPE_CHECKING:
    import torch

__all__ = ["Context", "RESULTS_FILE", "CONFIG_FILE", "TABLE_FILE", "CHECKPOINT_DIR"]

T = TypeVar("T")

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
TABLE_FILE = "table.txt"
CHECKPOINT_DIR = "checkpoints"


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
                 quiet: bool = False, group: Any = None) -> None:
        import torch

        self.out_dir = Path(out_dir)
        self.config = config
        self.device = device
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[config.get("dtype", "float64")]
        self.seed = int(config.get("seed", 0))
        self.quiet = quiet
        self._state = state
        self._table: tuple[list[dict], list[str] | None] | None = None
        self._title: str | None = None
        self._t0 = time.perf_counter()
        # the process group of a torchrun launch (wideNN.distributed.Group) or None; only
        # rank 0 writes the output folder
        self.group = group
        self.writer = group is None or group.rank == 0

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
        self.drop_checkpoints(key)  # the unit is done
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

    def grid(self, cells: Mapping[str, Callable[[], Any]], desc: str | None = None) -> dict[str, Any]:
        """``{key: stored value}`` for independent cells ``{key: fn}`` (e.g. widths × seeds):
        ``cached(key, fn)`` for each, except that under ``torchrun`` the cells left to compute
        are split over the ranks and gathered (see :mod:`wideNN.lab.distributed_grid`)."""
        from .distributed_grid import run_cells

        return run_cells(self, cells, desc)

    def checkpoint_path(self, key: str, create: bool = True, part: str | None = None) -> Path:
        """Where a long unit computing result (or row) ``key`` keeps its checkpoint
        (``checkpoints/`` in the output folder), e.g. ``wn.train(...,
        checkpoint=ctx.checkpoint_path(key))``: a run killed inside the unit resumes inside it.
        A unit made of several loops (a network and its linearization, training in segments)
        gives each its own ``part`` name.  The files go when ``key`` is recorded (:meth:`record`,
        :meth:`add_row`)."""
        folder, stem = self._checkpoint_stem(key)
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        if part is None:
            return folder / f"{stem}.pt"
        # "+" never occurs in a stem, so one key's parts cannot match another key's files
        return folder / f"{stem}+{re.sub(r'[^A-Za-z0-9._=-]+', '_', str(part))[:60]}.pt"

    def drop_checkpoints(self, key: str) -> None:
        """Delete the checkpoints of unit ``key`` (all its parts): its result is stored."""
        folder, stem = self._checkpoint_stem(key)
        if folder.is_dir():
            for path in [folder / f"{stem}.pt", *folder.glob(f"{stem}+*.pt")]:
                path.unlink(missing_ok=True)

    def _checkpoint_stem(self, key: str) -> tuple[Path, str]:
        safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(key))[:120]
        digest = hashlib.sha1(str(key).encode()).hexdigest()[:8]  # distinct keys, distinct files
        folder = self.out_dir / CHECKPOINT_DIR
        if not self.writer:       # a launch's other ranks redo non-grid units: their own files
            folder = folder / f"rank{self.group.rank}"
        return folder, f"{safe}-{digest}"

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
        self.drop_checkpoints(key)  # a row is a finished unit too
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
        if self.writer:
            atomic_write_bytes(path, buf.getvalue())
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
        figures = self._state["figures"]
        if name not in figures:
            figures.append(name)
            self.flush()
        return path

    def table(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
              title: str | None = None) -> str:
        """Set the final table (printed at the end and saved as table.txt); returns its text.

        ``title`` is a first line above the table: say there when it shows only some rows.
        Without a call, the rows from :meth:`add_row` are used.
        """
        self._table = ([dict(r) for r in rows], list(columns) if columns is not None else None)
        self._title = title
        return self.final_table()

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
        if not self.writer:
            return
        data = json.dumps(self._state, indent=1, allow_nan=False).encode()
        atomic_write_bytes(self.out_dir / RESULTS_FILE, data)

    def final_table(self) -> str | None:
        if self._table is not None:
            text = format_table(*self._table)
            return f"{self._title}\n{text}" if self._title else text
        if self._state["rows"]:
            return format_table(self.rows)
        return None
