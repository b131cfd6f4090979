"""Where the lens spent its budget while it trained: the edit ratio (mean |edit| inside the cue's region
over outside it, on the training batch) and the pretext accuracy, as each run's ``train.log`` logged them.

The benchmark's tables give the edit ratio at the end of training, on test images. A lens that erased a
cue early and then, once the network had stopped reading it, moved its budget elsewhere ends with a low
ratio although it did the work; this script shows the path.

    python experiments/edit_ratio_trajectory.py runs/shortcut_benchmark/contrastive_instance_code__lens_full \
        --windows 1-900 1201-1500 --out experiments/results/edit_ratio_trajectory/contrastive.json

Each argument is a run directory or a folder of ``seed*`` run directories. Prints a table (the ratio
every ``--every`` logged steps) and writes JSON: per run, the logged steps with their ``edit``,
``edit_ratio`` and ``acc`` (training-batch pretext accuracy), the maximum and final ratio, and the
median ratio over each ``--windows`` step range (e.g. ``--windows 1-900 1201-1500``).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"step (\d+)/(\d+) .*?acc ([0-9.e-]+) .*?edit ([0-9.e-]+) edit_ratio ([0-9.e+-]+|nan)")


def read_log(run: Path) -> list[dict]:
    """The logged steps of one run: ``[{"step", "acc", "edit", "edit_ratio"}, ...]`` in order."""
    log = run / "train.log"
    if not log.is_file():
        raise FileNotFoundError(f"{run}: no train.log (is it a run directory?)")
    rows = []
    for line in log.read_text().splitlines():
        m = LINE.search(line)
        if m:
            rows.append({"step": int(m[1]), "acc": float(m[3]), "edit": float(m[4]), "edit_ratio": float(m[5])})
    if not rows:
        raise ValueError(f"{log}: no logged step with an edit ratio (a run without a lens or a cue region?)")
    return rows


def window_medians(rows: list[dict], windows: list[str]) -> dict[str, float]:
    """Median edit ratio of the logged steps inside each ``"first-last"`` step range (inclusive)."""
    out = {}
    for window in windows:
        try:
            first, last = (int(x) for x in window.split("-"))
        except ValueError:
            raise ValueError(f"--windows takes step ranges like 1-900, got {window!r}") from None
        inside = [r["edit_ratio"] for r in rows if first <= r["step"] <= last]
        if not inside:
            raise ValueError(f"no logged step in {window}")
        out[window] = statistics.median(inside)
    return out


def runs_of(path: Path) -> list[Path]:
    if (path / "train.log").is_file():
        return [path]
    runs = sorted(p for p in path.glob("seed*") if (p / "train.log").is_file())
    if not runs:
        raise FileNotFoundError(f"{path}: neither a run directory nor a folder of seed* run directories")
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (refused if it exists)")
    parser.add_argument("--every", type=int, default=6, help="print every N-th logged step")
    parser.add_argument("--windows", nargs="*", default=[], help="step ranges for the median ratio, e.g. 1-900")
    args = parser.parse_args(argv)
    if args.out.exists():
        sys.exit(f"{args.out} exists: name another --out")
    result = {}
    for path in args.paths:
        for run in runs_of(path):
            rows = read_log(run)
            key = f"{run.parent.name}/{run.name}"
            medians = window_medians(rows, args.windows)
            result[key] = {"max_edit_ratio": max(r["edit_ratio"] for r in rows),
                           "final_edit_ratio": rows[-1]["edit_ratio"], "median_edit_ratio": medians, "log": rows}
            shown = rows[args.every - 1::args.every]
            print(f"{key}: " + "  ".join(f"{r['step']}:{r['edit_ratio']:.3g}" for r in shown)
                  + "".join(f"  | median {w}: {m:.3g}" for w, m in medians.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
