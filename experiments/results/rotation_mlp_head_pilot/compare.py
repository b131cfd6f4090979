"""Print this folder's README table from the committed runs: clean rotation with the linear head
(seeds 0-4: ``../archive/rotation_linear_head/runs``; seeds 5, 6: ``../rotation_weight_decay_pilot``) and
with the 256-wide hidden layer (seeds 0-4: ``../shortcut_benchmark_runs``; seeds 5, 6: this folder),
paired by seed, with 95% t intervals over the seeds."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # experiments/, for the benchmark's own interval
from shortcut_benchmark import t_interval

ROW = "rotation_clean__no_lens"


def runs(seed: int) -> tuple[dict, dict]:
    """(linear head, hidden-layer head) metrics of one seed."""
    if seed < 5:
        linear = HERE.parent / "archive" / "rotation_linear_head" / "runs" / ROW / f"seed{seed}" / "metrics.json"
        hidden = HERE.parent / "shortcut_benchmark_runs" / ROW / f"seed{seed}" / "metrics.json"
    else:
        linear = HERE.parent / "rotation_weight_decay_pilot" / f"{ROW}_s56_seed{seed}.json"
        hidden = HERE / f"{ROW}_mlp256_seed{seed}.json"
    a, b = (json.loads(p.read_text()) for p in (linear, hidden))
    assert a["config"]["pretext"].get("hidden_dim", 0) == 0 and b["config"]["pretext"]["hidden_dim"] == 256
    assert a["config"]["trainer"]["weight_decay"] == b["config"]["trainer"]["weight_decay"] == 1e-4
    return a, b


def interval(values: list[float]) -> str:
    m, lo, hi = t_interval(values)
    return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    print("| seed | untrained probe | linear head | hidden layer 256 | difference | pretext acc (linear / hidden) |")
    print("|---|---|---|---|---|---|")
    diffs, gain_linear, gain_hidden = [], [], []
    for seed in range(7):
        a, b = runs(seed)
        d = 100 * (b["probe_acc"] - a["probe_acc"])
        diffs.append(d)
        if seed < 5:  # the table's seeds: each run's own untrained probe, as the benchmark pairs them
            gain_linear.append(100 * (a["probe_acc"] - a["probe_untrained_acc"]))
            gain_hidden.append(100 * (b["probe_acc"] - b["probe_untrained_acc"]))
        print(f"| {seed} | {100 * b['probe_untrained_acc']:.2f}% | {100 * a['probe_acc']:.2f}% | {100 * b['probe_acc']:.2f}% "
              f"| {d:+.2f} | {100 * a['pretext_acc']:.1f}% / {100 * b['pretext_acc']:.1f}% |")
    print(f"\nhidden - linear, seeds 0-6: {interval(diffs)}; seeds 0-4: {interval(diffs[:5])}")
    print(f"gain over the untrained backbone, seeds 0-4: linear {interval(gain_linear)}, hidden {interval(gain_hidden)}")


if __name__ == "__main__":
    main()
