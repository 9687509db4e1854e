"""Small plotting helpers so every experiment's figures look alike.

Figures are plain :class:`matplotlib.figure.Figure` objects drawn by the Agg
canvas; nothing here imports ``pyplot`` or changes matplotlib's global rcParams
(the house style is applied through :func:`style`, a context manager). Inputs may
be lists, numpy arrays or torch tensors.

Typical use::

    from wideNN import plotting as wp
    fig, ax = wp.figure()
    slope = wp.loglog_fit(ax, widths, errors, label="|K_emp - K|")
    wp.finish(ax, xlabel="width", ylabel="error")
    ctx.savefig(fig, "convergence")
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: rcParams applied (only) inside :func:`style` / :func:`figure`.
STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def to_numpy(x: Any) -> np.ndarray:
    """A float numpy array from a list, array or (possibly CUDA, possibly requiring grad) tensor.

    Lists and tuples may hold tensors too (e.g. a list of 0-d CUDA losses): numpy would
    convert each through ``Tensor.__array__``, which fails for CUDA tensors."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif isinstance(x, (list, tuple)) and any(hasattr(v, "detach") or isinstance(v, (list, tuple)) for v in x):
        x = [to_numpy(v) for v in x]
    return np.asarray(x, dtype=float)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply :data:`STYLE` for the duration of the block (rcParams are restored afterwards)."""
    with matplotlib.rc_context(STYLE):
        yield


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] | None = None,
           squeeze: bool = True, **subplot_kw: Any) -> tuple[Figure, Any]:
    """A new Agg-backed figure and its axes (``squeeze`` as in ``plt.subplots``).

    ``size`` defaults to 4.2 x 3.2 inches per panel. The axes are created inside
    :func:`style`, so they carry the house style without touching global state.
    """
    if size is None:
        size = (4.2 * ncols, 3.2 * nrows)
    with style():
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=squeeze, subplot_kw=subplot_kw or None)
    return fig, axes


def finish(ax: Axes, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
           legend: bool = True, legend_loc: str = "best") -> Axes:
    """Label ``ax`` and add a legend when any artist has a label. Returns ``ax``.

    ``legend_loc="outside"`` puts the legend to the right of the axes (for long legends).
    """
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            with style():
                if legend_loc == "outside":
                    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
                else:
                    ax.legend(loc=legend_loc)
    return ax


def power_law_fit(x: Any, y: Any) -> tuple[float, float]:
    """Least-squares fit of ``log y = intercept + slope * log x``; returns ``(slope, intercept)``.

    Points with a non-positive or non-finite coordinate are ignored; fewer than two
    usable points gives ``(nan, nan)``.
    """
    x, y = to_numpy(x).ravel(), to_numpy(y).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(intercept)


def loglog_fit(ax: Axes, x: Any, y: Any, label: str | None = None, fit: bool = True,
               fit_range: tuple[float, float] | None = None, color: Any = None,
               marker: str = "o", **kwargs: Any) -> float:
    """Plot ``y`` against ``x`` on log-log axes with a dashed fitted power law; return the slope.

    ``fit_range=(lo, hi)`` restricts the fit to ``lo <= x <= hi``; the legend entry
    of the fit reads ``slope = s``. With ``fit=False`` nothing is fitted and NaN is
    returned.
    """
    xa, ya = to_numpy(x).ravel(), to_numpy(y).ravel()
    with style():
        (line,) = ax.plot(xa, ya, marker=marker, linestyle="-", color=color, label=label, **kwargs)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if not fit:
            return float("nan")
        sel = np.ones_like(xa, dtype=bool)
        if fit_range is not None:
            sel = (xa >= fit_range[0]) & (xa <= fit_range[1])
        slope, intercept = power_law_fit(xa[sel], ya[sel])
        if np.isfinite(slope):
            xs = xa[sel & (xa > 0)]
            grid = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(grid, np.exp(intercept) * grid**slope, linestyle="--", linewidth=1.0,
                    color=line.get_color(), label=f"slope = {slope:.2f}")
    return slope


def band(ax: Axes, x: Any, mean: Any, std: Any, label: str | None = None, color: Any = None,
         alpha: float = 0.25, n_std: float = 1.0, outline: bool = False, **kwargs: Any) -> None:
    """Draw ``mean`` as a line and shade ``mean ± n_std * std`` in the same colour.

    ``outline=True`` draws the band's edges as thin lines in the line's style instead of
    shading it, so that a second band drawn over a shaded one stays readable.
    """
    xa, m, s = to_numpy(x).ravel(), to_numpy(mean).ravel(), to_numpy(std).ravel()
    with style():
        (line,) = ax.plot(xa, m, color=color, label=label, **kwargs)
        if outline:
            for edge in (m - n_std * s, m + n_std * s):
                ax.plot(xa, edge, color=line.get_color(), linestyle=line.get_linestyle(), linewidth=0.9,
                        alpha=0.9)
        else:
            ax.fill_between(xa, m - n_std * s, m + n_std * s, color=line.get_color(), alpha=alpha, linewidth=0)


def resolution_norm(values: Any, resolution: float, max_levels: int = 16) -> Any:
    """A ``BoundaryNorm`` whose colour steps are whole multiples of ``resolution`` (e.g. 1/N_test
    for an accuracy), so a colour bar never suggests differences finer than the data can show."""
    from matplotlib.colors import BoundaryNorm

    v = to_numpy(values)
    v = v[np.isfinite(v)]
    lo, hi = np.floor(v.min() / resolution), np.ceil(v.max() / resolution)
    step = max(1, int(np.ceil((hi - lo + 1) / max_levels)))
    edges = (np.arange(lo, hi + step + 1, step) - 0.5) * resolution
    return BoundaryNorm(edges, ncolors=256)


def signed_zero_free(value: float, digits: int = 2) -> str:
    """``f"{value:.{digits}f}"`` without a "-0.00" for values that round to zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def heatmap(ax: Axes, values: Any, x: Any, y: Any, mark: tuple[float, float] | None = None,
            mark_label: str | None = None, logx: bool = False, logy: bool = False,
            colorbar_label: str | None = None, cmap: str | None = None, **kwargs: Any) -> Any:
    """``values[i, j]`` at ``(x[j], y[i])`` as a colour map, optionally with a star at ``mark=(x0, y0)``.

    ``x``/``y`` are the grid centres (len ``values.shape[1]`` / ``values.shape[0]``).
    Returns the mesh (for a shared colour bar); a colour bar is added when
    ``colorbar_label`` is given.
    """
    v, xa, ya = to_numpy(values), to_numpy(x).ravel(), to_numpy(y).ravel()
    if v.shape != (ya.size, xa.size):
        raise ValueError(f"values has shape {v.shape}, expected (len(y), len(x)) = {(ya.size, xa.size)}")
    with style():
        mesh = ax.pcolormesh(xa, ya, v, shading="nearest", cmap=cmap, **kwargs)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(False)
        if mark is not None:
            ax.plot([mark[0]], [mark[1]], marker="*", markersize=14, color="red",
                    markeredgecolor="white", linestyle="none", label=mark_label)
        if colorbar_label is not None:
            bar = ax.figure.colorbar(mesh, ax=ax, label=colorbar_label)
            bounds = getattr(kwargs.get("norm"), "boundaries", None)
            if bounds is not None:  # stepped colours (``resolution_norm``): label each step's centre
                bar.set_ticks(0.5 * (bounds[1:] + bounds[:-1]))
                bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3f"))
                bar.ax.minorticks_off()
    return mesh


def colors(n: int, cmap: str = "viridis") -> list[tuple[float, float, float, float]]:
    """``n`` colours evenly spaced along ``cmap`` (for a sequence of depths, widths, ...)."""
    cm = matplotlib.colormaps[cmap]
    return [cm(v) for v in (np.linspace(0.0, 0.9, n) if n > 1 else [0.0])]


def angle_axis(ax: Axes, upper: float = np.pi, step: float = np.pi / 4) -> Axes:
    """Ticks in multiples of π/4 (or ``step``) on the x axis from 0 to ``upper``."""
    ticks = np.arange(0.0, upper + 1e-9, step)
    names = {0: "0", 1: "π/4", 2: "π/2", 3: "3π/4", 4: "π", 6: "3π/2", 8: "2π"}
    ax.set_xticks(ticks)
    ax.set_xticklabels([names.get(int(round(t / (np.pi / 4))), f"{t / np.pi:.2g}π") for t in ticks])
    ax.set_xlim(0.0, upper)
    return ax


__all__: Sequence[str] = ["STYLE", "to_numpy", "style", "figure", "finish", "power_law_fit", "loglog_fit",
                          "band", "heatmap", "colors", "angle_axis", "resolution_norm", "signed_zero_free"]
