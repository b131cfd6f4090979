"""Print the erase-lens pilot's table from the metrics.json copies in this folder, against the benchmark's own
seed-0/1 runs of the same rows (experiments/results/shortcut_benchmark_runs; the patch tasks' aberration rows,
which the benchmark has since replaced by the position tint). Run from the repository root:

    python experiments/results/erase_lens_pilot/table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # experiments/, for the benchmark's own run-folder names
from shortcut_benchmark import slug

BENCHMARK = HERE.parent / "shortcut_benchmark_runs"
# The benchmark's runs this pilot was compared with, archived when the benchmark moved on: the residual
# lens's clean patch-task runs (the folders now hold the erase lens's) and the linear-head rotation runs.
ARCHIVES = [HERE.parent / "archive" / name / "runs" for name in ("patch_tasks_aberration", "rotation_linear_head")]
# the benchmark's rows this pilot compares with: the patch tasks on seeds 0 and 1, rotation on seed 0
COMPARED = [(f"{task} {cue} / {lens}", seeds) for task in ("relative_location", "jigsaw")
            for cue in ("clean", "chromatic_aberration") for lens in ("no lens", "lens") for seeds in [(0, 1)]]
COMPARED += [(f"rotation {cue} / {lens}", (0,)) for cue, lens in (("clean", "no lens"), ("arrow", "no lens"),
                                                                   ("arrow", "lens"), ("clean", "lens"))]



def lens_settings(metrics: dict) -> str:
    lens = metrics["config"]["lens"]
    if lens.get("name") == "none":
        pretext = metrics["config"]["pretext"]
        return f"no lens, grayscale p={pretext.get('grayscale_probability')}"
    edit = lens.get("edit", "residual")
    fill = f", fill {lens['fill_size']}" if edit == "erase" else ""
    return f"{edit}{fill}, {metrics['lens_mode']}, budget {lens['budget']}"


def row(name: str, metrics: dict, note: str = "") -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    train = metrics.get("train", {})
    edit = train.get("edit")
    ratio = metrics.get("edit_ratio")
    return (f"| {name} | {lens_settings(metrics)}{note} | {pct(metrics.get('pretext_acc'))} | "
            f"{pct(metrics.get('pretext_acc_lensed'))} | {'-' if edit is None else f'{edit:.3f}'} | "
            f"{'-' if ratio is None else f'{ratio:.1f}x'} | {pct(metrics['probe_acc'])} |")


def main() -> None:
    print("| run (seed) | lens | pretext acc, raw views (%) | through the lens (%) | mean edit, last batch | "
          "edit in/out | probe (%) |")
    print("|---|---|---|---|---|---|---|")
    for name, seeds in COMPARED:
        for seed in seeds:
            folder = next((a / slug(name) for a in ARCHIVES if (a / slug(name)).is_dir()), BENCHMARK / slug(name))
            r = json.loads((folder / f"seed{seed}" / "metrics.json").read_text())
            ratio = "-" if r.get("edit_ratio") is None else f"{r['edit_ratio']:.1f}x"
            pretext = "-" if r.get("pretext_acc") is None else f"{100 * r['pretext_acc']:.1f}"
            lensed = "-" if r.get("pretext_acc_lensed") is None else f"{100 * r['pretext_acc_lensed']:.1f}"
            print(f"| {name} ({seed}) | benchmark | {pretext} | {lensed} | - | {ratio} | "
                  f"{100 * r['probe_acc']:.1f} |")
    for path in sorted(HERE.glob("*_seed*.json")):
        metrics = json.loads(path.read_text())
        note = " (plain clamp)" if "clampgrad" in path.name else ""
        print(row(f"{path.stem.rsplit('_seed', 1)[0]} ({metrics['config']['seed']})", metrics, note))


if __name__ == "__main__":
    main()
