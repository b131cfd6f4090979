"""Saturating power-law fits of error against compute, with uncertainties, plots and JSON.

Zhai, Kolesnikov, Houlsby, Beyer, "Scaling Vision Transformers", CVPR 2022, §2 and Figure 2: the
compute-efficient frontier of representation quality follows a *double-saturating* power law

    E(C) = a · (C + d)^(−b) + c

``c`` is the error an infinitely large model would still make, ``d`` shifts the curve where small
compute stops paying off, ``b`` is the scaling exponent. Errors and compute come from runs (one row
each: ``compute`` in FLOPs, ``data_size`` in images, ``error`` in [0, 1]); ``shortcutlens-scaling``
(``shortcutlens/cli/scaling.py``) reads them, fits and plots.

The fit uses ``scipy.optimize.curve_fit`` (trust-region, with bounds a, b, d ≥ 0 and 0 ≤ c ≤ max E)
on compute rescaled by its smallest value (FLOP counts of 1e15 break the conditioning otherwise),
with relative residuals (so a 1-point error at 5% counts as much as 10 points at 50%, matching the
log-log plot), from a grid of starting points; the best is kept. Standard errors come from the
covariance of the estimate, mapped back to the original units by the delta method.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

PARAMS = ("a", "b", "c", "d")
COLUMNS = ("compute", "data_size", "error")
FORMULA = "E = a * (C + d)^(-b) + c"


def saturating_power_law(compute: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """``a·(C + d)^(−b) + c`` elementwise."""
    return a * np.power(np.asarray(compute, dtype=float) + d, -b) + c


@dataclass
class PowerLawFit:
    """Fitted constants, their standard errors and covariance (order ``a, b, c, d``), and fit quality."""

    a: float
    b: float
    c: float
    d: float
    stderr: dict[str, float | None]
    covariance: list[list[float | None]]
    rmse: float
    n_points: int
    starts: int

    def predict(self, compute: Sequence[float] | np.ndarray) -> np.ndarray:
        return saturating_power_law(np.asarray(compute, dtype=float), self.a, self.b, self.c, self.d)

    @property
    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARAMS}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["formula"] = FORMULA
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def fit_power_law(compute: Sequence[float], error: Sequence[float], *, relative: bool = True) -> PowerLawFit:
    """Fit ``E = a·(C + d)^(−b) + c`` from several starts and keep the lowest residual.

    Args:
        compute: ``(n,)`` positive compute values (FLOPs).
        error: ``(n,)`` positive errors.
        relative: weight residuals by ``1/E`` (default) instead of equally.
    Raises:
        ValueError: fewer than 4 points, non-positive values, or no start converged.
    """
    x = np.asarray(compute, dtype=float)
    y = np.asarray(error, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("compute and error must be 1-D sequences of the same length")
    if len(x) < 4:
        raise ValueError(f"a 4-parameter power law needs at least 4 points, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("compute and error must be finite and positive")
    scale = float(x.min())
    xs = x / scale  # E = a·s^(−b)·(x + d/s)^(−b) + c: fit a' = a·s^(−b), d' = d/s
    sigma = y if relative else None
    lower = [0.0, 1e-4, 0.0, 0.0]
    upper = [np.inf, 10.0, float(y.max()), np.inf]
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    starts = 0
    for b0, c_frac, d0 in product((0.1, 0.3, 0.6, 1.2), (0.0, 0.5, 0.9), (0.0, 1.0, 10.0)):
        c0 = c_frac * float(y.min())
        i0 = int(np.argmin(xs))
        a0 = max(float(y[i0]) - c0, 1e-12) * (xs[i0] + d0) ** b0
        starts += 1
        try:
            popt, pcov = curve_fit(saturating_power_law, xs, y, p0=[a0, b0, c0, d0], sigma=sigma,
                                   bounds=(lower, upper), method="trf", maxfev=20_000)
        except (RuntimeError, ValueError):
            continue
        resid = (saturating_power_law(xs, *popt) - y) / (y if relative else 1.0)
        sse = float(np.sum(resid**2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        raise ValueError("the power-law fit did not converge from any starting point")
    _, (a_s, b, c, d_s), pcov = best
    a, d = a_s * scale**b, d_s * scale
    # delta method: (a, b, c, d) = (a'·s^b, b, c, d'·s)
    jac = np.array([[scale**b, a * math.log(scale), 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                    [0.0, 0.0, 0.0, scale]])
    with np.errstate(invalid="ignore", over="ignore"):
        cov = jac @ pcov @ jac.T
    stderr = {k: _finite_or_none(math.sqrt(v)) if v >= 0 else None for k, v in zip(PARAMS, np.diag(cov))}
    rmse = float(np.sqrt(np.mean((saturating_power_law(x, a, b, c, d) - y) ** 2)))
    return PowerLawFit(a=float(a), b=float(b), c=float(c), d=float(d), stderr=stderr,
                       covariance=[[_finite_or_none(v) for v in row] for row in cov], rmse=rmse,
                       n_points=len(x), starts=starts)


def pareto_frontier(compute: Sequence[float], error: Sequence[float]) -> np.ndarray:
    """Boolean mask of the runs no cheaper-or-equal run beats: the compute-efficient frontier."""
    x = np.asarray(compute, dtype=float)
    y = np.asarray(error, dtype=float)
    order = np.lexsort((y, x))  # by compute, ties by error
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in order:
        if y[i] < best:
            mask[i] = True
            best = y[i]
    return mask


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV file or JSON (a list of objects, or ``{"runs": [...]}``) with numeric
    ``compute`` and ``error`` and optional ``data_size``; other columns are kept as they are."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"runs file {path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        rows = data.get("runs") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of runs or an object with a 'runs' list")
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no runs")
    runs = []
    for i, row in enumerate(rows, start=1):
        missing = [k for k in ("compute", "error") if k not in row or row[k] in ("", None)]
        if missing:
            raise ValueError(f"{path}, run {i}: missing {', '.join(missing)} (columns needed: {', '.join(COLUMNS)}; "
                             f"found: {', '.join(map(str, row))})")
        run = dict(row)
        try:
            run["compute"] = float(row["compute"])
            run["error"] = float(row["error"])
            ds = row.get("data_size")
            run["data_size"] = float(ds) if ds not in (None, "") else None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}, run {i}: non-numeric value ({err})") from None
        if not (run["compute"] > 0 and run["error"] > 0):
            raise ValueError(f"{path}, run {i}: compute and error must be positive")
        runs.append(run)
    return runs


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def undetermined(fit: PowerLawFit) -> list[str]:
    """The parameters the runs do not pin down: no standard error (as many runs as parameters, or a
    singular covariance) or a standard error larger than the value itself."""
    out = []
    for k in PARAMS:
        err, value = fit.stderr.get(k), abs(getattr(fit, k))
        if err is None or not math.isfinite(err) or err > value:
            out.append(k)
    return out


def fit_warning(fit: PowerLawFit) -> str | None:
    """One line for the figure when the fit is not determined, else None."""
    loose = undetermined(fit)
    if not loose:
        return None
    why = (f"{fit.n_points} runs for {len(PARAMS)} parameters: the curve passes through them exactly"
           if fit.n_points <= len(PARAMS) else "standard error missing or larger than the value")
    return f"fit not determined: {', '.join(loose)} ({why})"


def model_markers(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One marker per model (the runs' ``model`` column, in order of first appearance)."""
    models = list(dict.fromkeys(str(r.get("model") or "runs") for r in runs))
    return {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}


def plot_fit(
    runs: Sequence[dict[str, Any]],
    fit: PowerLawFit,
    path: str | Path,
    *,
    fitted_mask: np.ndarray | None = None,
    per_data_size: dict[Any, PowerLawFit] | None = None,
    title: str | None = None,
    error_label: str = "error E",
) -> Path:
    """Log-log plot of every run (colour: data size; marker: model), the fitted points ringed, the fit
    and its asymptote ``c``, and a red warning on the figure when the fit is not determined
    (``fit_warning``); saved as a PNG through the Agg canvas (no display needed).

    ``title`` should say which error was fitted: a sweep writes several fits (e.g. probe error and the
    pretext's own error) that must not look alike."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    x = np.array([r["compute"] for r in runs])
    y = np.array([r["error"] for r in runs])
    sizes = [r.get("data_size") for r in runs]
    markers = model_markers(runs)
    models = [str(r.get("model") or "runs") for r in runs]
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis"]
    keys = sorted({s for s in sizes if s is not None})
    colours = {k: cmap(i / max(1, len(keys) - 1)) for i, k in enumerate(keys)}
    handles = []
    for k in keys + ([None] if None in sizes else []):
        sel = np.array([s == k for s in sizes])
        for m, marker in markers.items():
            both = sel & np.array([mm == m for mm in models])
            if both.any():
                ax.scatter(x[both], y[both], s=28, marker=marker, color=colours.get(k, "tab:gray"), zorder=3)
        label = f"data {int(k):,}" if k is not None else "runs"
        handles.append(Line2D([], [], ls="", marker="o", color=colours.get(k, "tab:gray"), label=label))
        if per_data_size and k in per_data_size:
            grid = np.geomspace(x[sel].min(), x[sel].max(), 100)
            ax.plot(grid, per_data_size[k].predict(grid), color=colours.get(k, "tab:gray"), lw=0.8, alpha=0.7)
    if len(markers) > 1 or "runs" not in markers:
        handles += [Line2D([], [], ls="", marker=mk, color="dimgray", label=m) for m, mk in markers.items()]
    if fitted_mask is not None:
        handles.append(ax.scatter(x[fitted_mask], y[fitted_mask], s=90, facecolors="none", edgecolors="black", lw=1.0,
                                  label="fitted (frontier)" if not fitted_mask.all() else "fitted", zorder=4))
    grid = np.geomspace(x.min() / 2, x.max() * 4, 200)

    def pm(k: str) -> str:
        err = fit.stderr.get(k)
        return f"{getattr(fit, k):.3g}" + (f"±{err:.2g}" if err is not None else "±?")

    handles += ax.plot(grid, fit.predict(grid), color="crimson", lw=2, label=f"a(C+d)$^{{-b}}$+c: b={pm('b')}, c={pm('c')}")
    ax.axhline(fit.c, color="crimson", ls="--", lw=1, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(error_label)
    ax.set_title(title or f"{error_label}: saturating power law (Zhai et al. 2022)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7)
    warning = fit_warning(fit)
    if warning:  # below the axes, where it hides no run
        fig.text(0.5, 0.012, "\u26a0 " + warning, fontsize=8, color="firebrick", ha="center", va="bottom",
                 bbox={"facecolor": "white", "edgecolor": "firebrick", "boxstyle": "round,pad=0.3"})
    fig.tight_layout(rect=(0, 0.06 if warning else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
