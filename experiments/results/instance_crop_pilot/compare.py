"""Print this folder's README tables from the committed runs: clean exemplar and contrastive under the
library's crop (``../archive/instance_crop_default/runs``) and under the benchmark's crop of at least 0.2
(``../shortcut_benchmark_runs``), paired by seed, with 95% t intervals over the seeds; then the held-out
exemplar seeds 5 and 6 from this folder's JSONs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # experiments/, for the benchmark's own interval
from shortcut_benchmark import t_interval

OLD, NEW = HERE.parent / "archive" / "instance_crop_default" / "runs", HERE.parent / "shortcut_benchmark_runs"


def interval(values: list[float]) -> str:
    m, lo, hi = t_interval(values)
    return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    summary = []
    for task in ("exemplar", "contrastive"):
        diffs, gains_old, gains_new = [], [], []
        for seed in range(5):
            old = json.loads((OLD / f"{task}_clean__no_lens" / f"seed{seed}" / "metrics.json").read_text())
            new = json.loads((NEW / f"{task}_clean__no_lens" / f"seed{seed}" / "metrics.json").read_text())
            assert new["config"]["pretext"]["crop_scale"] == [0.2, 1.0], "not a crop >= 0.2 run"
            d = 100 * (new["probe_acc"] - old["probe_acc"])
            diffs.append(d)
            gains_old.append(100 * (old["probe_acc"] - old["probe_untrained_acc"]))
            gains_new.append(100 * (new["probe_acc"] - new["probe_untrained_acc"]))
            print(f"| {task} | {seed} | {100 * new['probe_untrained_acc']:.2f}% | {100 * old['probe_acc']:.2f}% | "
                  f"{100 * new['probe_acc']:.2f}% | {d:+.2f} | {100 * old['pretext_acc']:.1f}% / {100 * new['pretext_acc']:.1f}% |")
        summary.append(f"| {task} | {interval(diffs)} | {interval(gains_old)} | {interval(gains_new)} |")
    print("\n| pretext | crop >= 0.2 - library crop | gain over untrained, library crop | gain over untrained, crop >= 0.2 |")
    print("\n".join(summary))
    print("\nheld-out exemplar seeds (this folder's JSONs):")
    for seed in (5, 6):
        old, new = (json.loads((HERE / f"exemplar_clean__no_lens_crop_{v}_seed{seed}.json").read_text()) for v in ("old", "new"))
        assert new["config"]["pretext"]["crop_scale"] == [0.2, 1.0] and old["config"]["pretext"]["crop_scale"] == [0.05, 1.0]
        print(f"| {seed} | {100 * new['probe_untrained_acc']:.2f}% | {100 * old['probe_acc']:.2f}% | {100 * new['probe_acc']:.2f}% | "
              f"{100 * (new['probe_acc'] - old['probe_acc']):+.2f} | {100 * old['pretext_acc']:.1f}% / {100 * new['pretext_acc']:.1f}% |")


if __name__ == "__main__":
    main()
