"""What the lens costs on clean data, erase lens against the benchmark's residual lens, paired by seed with
95% t intervals (the benchmark's own ``t_interval``). Reads ``clean_erase/<row>/seed<N>/metrics.json`` here and
the benchmark's committed runs in ``../shortcut_benchmark_runs`` (its residual-lens clean runs in
``../archive/patch_tasks_aberration/runs``). Run from the repository root:

    python experiments/results/erase_lens_pilot/clean_cost.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # experiments/, for the benchmark's own interval
from shortcut_benchmark import t_interval

BENCH = HERE.parent / "shortcut_benchmark_runs"
# the residual lens's clean runs, archived when the benchmark's patch tasks took the erase lens
RESIDUAL = HERE.parent / "archive" / "patch_tasks_aberration" / "runs"


def probe(path: Path) -> float:
    return json.loads(path.read_text())["probe_acc"]


def interval(values: list[float]) -> str:
    found = t_interval(values)
    if found is None:
        return f"{values[0]:+.1f} (n = 1)"
    m, lo, hi = found
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def main() -> None:
    print("| task | seeds | erase lens on clean data (pt) | residual lens, same seeds (pt) | erase by seed | residual by seed |")
    print("|---|---|---|---|---|---|")
    for task in ("relative_location", "jigsaw"):
        seeds, erase, residual = [], [], []
        for run in sorted((HERE / "clean_erase" / f"{task}_clean__lens").glob("seed*/metrics.json")):
            metrics = json.loads(run.read_text())
            lens = metrics["config"]["lens"]
            assert (lens["edit"], lens["fill_size"]) == ("erase", 3), f"{run}: not an erase lens with fill 3"
            seed = int(run.parent.name.removeprefix("seed"))
            clean = probe(BENCH / f"{task}_clean__no_lens" / f"seed{seed}" / "metrics.json")
            seeds.append(seed)
            erase.append(100 * (metrics["probe_acc"] - clean))
            residual.append(100 * (probe(RESIDUAL / f"{task}_clean__lens" / f"seed{seed}" / "metrics.json") - clean))
        if seeds:
            print(f"| {task} | {', '.join(map(str, seeds))} | {interval(erase)} | {interval(residual)} | "
                  f"{', '.join(f'{v:+.1f}' for v in erase)} | {', '.join(f'{v:+.1f}' for v in residual)} |")


if __name__ == "__main__":
    main()
