"""``shortcutlens-scaling``: fit ``E = a·(C + d)^(−b) + c`` to runs and plot it (Zhai et al., CVPR 2022).

Usage::

    shortcutlens-scaling runs.csv                        # -> runs_fit.png, runs_fit.json beside it
    shortcutlens-scaling runs.json --out-dir runs/scaling --all-points --per-data-size

The runs file is CSV or JSON with one row per training run: ``compute`` (training FLOPs, e.g.
``shortcutlens.flops.count_step_flops(...).total × steps``), ``data_size`` (images seen or dataset
size) and ``error`` (e.g. 1 − linear-probe accuracy). By default the fit uses the compute-efficient
frontier, as the paper does; ``--all-points`` fits every run. An optional ``model`` column gives each
model its own marker. The figure's title says which error was fitted (``--error-label``; by default
read from the runs' columns: ``1 − probe accuracy`` when ``error`` is ``1 − probe_acc``, the pretext's
error when it is ``pretext_error``) and the runs file, so two fits of one sweep are told apart; a fit
that the runs do not determine carries a red warning on the figure. A plain argparse tool: it has no
components to configure, so Hydra would add nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shortcutlens.scaling import (
    FORMULA,
    PARAMS,
    fit_power_law,
    fit_warning,
    load_runs,
    pareto_frontier,
    plot_fit,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shortcutlens-scaling", description=__doc__.split("\n")[0])
    p.add_argument("runs", help="CSV or JSON file of runs with columns compute, data_size, error")
    p.add_argument("--out-dir", default=None, help="where the PNG and JSON go (default: beside the runs file)")
    p.add_argument("--name", default=None, help="output file stem (default: <runs stem>_fit)")
    p.add_argument("--all-points", action="store_true", help="fit every run, not only the compute frontier")
    p.add_argument("--per-data-size", action="store_true",
                   help="also fit each data size that has at least 4 runs (its own frontier)")
    p.add_argument("--absolute", action="store_true", help="unweighted residuals instead of relative ones")
    p.add_argument("--error-label", default=None, help="what the error column is (figure title and y axis)")
    p.add_argument("--title", default=None, help="figure title (default: the error, the fitted runs and the file)")
    return p


def describe_error(runs: Sequence[dict]) -> str:
    """What ``error`` holds, read from the other columns a sweep writes (``probe_acc``, ``pretext_error``)."""
    def matches(column: str, flip: bool) -> bool:
        try:
            return all(abs(r["error"] - ((1.0 - float(r[column])) if flip else float(r[column]))) < 1e-6 for r in runs)
        except (KeyError, TypeError, ValueError):
            return False

    if matches("pretext_error", flip=False):
        return "pretext error (test images)"
    if matches("probe_acc", flip=True):
        return "1 − linear-probe accuracy"
    return "error E"


def run(args: argparse.Namespace) -> dict:
    runs_path = Path(args.runs)
    runs = load_runs(runs_path)
    compute = np.array([r["compute"] for r in runs])
    error = np.array([r["error"] for r in runs])
    mask = np.ones(len(runs), dtype=bool) if args.all_points else pareto_frontier(compute, error)
    if mask.sum() < 4:
        raise ValueError(f"only {int(mask.sum())} runs lie on the compute frontier; a 4-parameter fit needs 4 "
                         "(add runs or pass --all-points)")
    fit = fit_power_law(compute[mask], error[mask], relative=not args.absolute)
    per_size = {}
    if args.per_data_size:
        for size in sorted({r["data_size"] for r in runs if r["data_size"] is not None}):
            sel = np.array([r["data_size"] == size for r in runs])
            front = sel.copy()
            front[sel] = pareto_frontier(compute[sel], error[sel])
            if front.sum() >= 4:
                per_size[size] = fit_power_law(compute[front], error[front], relative=not args.absolute)
    out_dir = Path(args.out_dir) if args.out_dir else runs_path.parent
    stem = args.name or f"{runs_path.stem}_fit"
    label = args.error_label or describe_error(runs)
    fitted_on = "all runs" if args.all_points else "compute frontier"
    title = args.title or (f"{label} vs compute\n{runs_path.name}: power law fitted to the {fitted_on} "
                           f"({int(mask.sum())} of {len(runs)} runs)")
    png = plot_fit(runs, fit, out_dir / f"{stem}.png", fitted_mask=mask, per_data_size=per_size, title=title,
                   error_label=label)
    result = {
        "formula": FORMULA,
        "fit": fit.to_dict(),
        "fitted_on": fitted_on,
        "error_label": label,
        "title": title,
        "warning": fit_warning(fit),
        "fitted_runs": [int(i) for i in np.flatnonzero(mask)],
        "per_data_size": {str(k): v.to_dict() for k, v in per_size.items()},
        "runs": runs,
        "png": str(png),
        "config": {k: v for k, v in vars(args).items()},
    }
    json_path = out_dir / f"{stem}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(json_path)
    result["json"] = str(json_path)
    return result


def _fmt(value: float, err: float | None) -> str:
    return f"{value:.4g} ± {err:.2g}" if err is not None else f"{value:.4g} ± ?"


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except ValueError as err:  # a malformed runs file (JSON errors are ValueErrors), too few runs
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a folder given as the runs file, an output folder that cannot be written
        print(f"error: cannot use {err.filename or args.runs} ({err.strerror or err})", file=sys.stderr)
        sys.exit(2)
    fit = result["fit"]
    print(f"{FORMULA}  ({fit['n_points']} runs, {result['fitted_on']}, rmse {fit['rmse']:.3g})")
    print("| parameter | value ± std. error |\n|---|---|")
    for k in PARAMS:
        print(f"| {k} | {_fmt(fit[k], fit['stderr'][k])} |")
    for size, f in result["per_data_size"].items():
        print(f"data_size {size}: b = {_fmt(f['b'], f['stderr']['b'])}, c = {_fmt(f['c'], f['stderr']['c'])}")
    if result["warning"]:
        print(f"warning: {result['warning']}")
    print(f"wrote {result['png']} and {result['json']}")


if __name__ == "__main__":
    main()
