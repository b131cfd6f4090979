"""The shortcut benchmark: a pretext task latches onto a shortcut, the lens finds and erases it,
and the representation gets better for it — on Fashion-MNIST, over several seeds.

Rows are (pretext, shortcut, lens) settings; columns are the pretext accuracy on shortcut-bearing
test images (raw, no lens), the linear probe on clean test images, and the mean lens edit inside the
shortcut's region over the mean outside. Each cell is mean ± std over seeds. The recovery of a lens
row is (lens − shortcut) / (clean − shortcut) on the probe, against the rows of the same pretext.

    python experiments/shortcut_benchmark.py            # the README table (long: ~1-2 h on 2 CPU cores)
    python experiments/shortcut_benchmark.py --quick    # fewer steps and seeds (~10-15 min on 2 cores)
    python experiments/shortcut_benchmark.py --rows arrow --seeds 0 1 2 --jobs 2

Writes experiments/results/shortcut_benchmark[_quick].{json,md} and the lens-edit PNG of the best
arrow row; every run's directory (metrics.json with its resolved config, TensorBoard, checkpoints)
is kept under --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    name: str
    pretext: str
    shortcut: str
    mode: str | None = None          # None = no lens
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def group(self) -> str:
        return self.pretext


ROWS = [
    Row("clean / no lens", "rotation", "none"),
    Row("arrow / no lens", "rotation", "arrow"),
    Row("arrow / lens (least_likely)", "rotation", "arrow", "least_likely"),
    Row("arrow / lens (full)", "rotation", "arrow", "full"),
    Row("arrow / lens (random_wrong)", "rotation", "arrow", "random_wrong"),
    Row("gradient / no lens", "rotation", "gradient"),
    Row("gradient / lens (random_wrong)", "rotation", "gradient", "random_wrong"),
    Row("clean / lens (random_wrong)", "rotation", "none", "random_wrong"),
]

# Settings shared by every row. The backbone is the library's default ResNet-18 at width 0.25;
# one random rotation per image keeps a step affordable on 2 CPU cores.
COMMON = [
    "data=fashion_mnist", "pretext.all_rotations=false", "trainer.batch_size=128", "trainer.warmup_steps=25",
    "trainer.log_every=25", "probe.untrained=false", "probe.max_train=10000", "trainer.progress=false", "device=auto",
]
FULL = {"steps": 1500, "seeds": [0, 1, 2], "extra": []}
QUICK = {"steps": 400, "seeds": [0, 1], "extra": ["backbone.width=0.125"]}


def overrides(row: Row, *, seed: int, steps: int, extra: list[str], out: Path) -> list[str]:
    ov = COMMON + extra + [f"pretext={row.pretext}", f"shortcut={row.shortcut}", f"seed={seed}",
                           f"trainer.steps={steps}", f"trainer.ckpt_every={steps}", f"trainer.image_every={max(100, steps // 5)}",
                           f"run_dir={out / slug(row.name) / f'seed{seed}'}"]
    ov += ["lens=unet", "lens.width=8", f"lens.mode={row.mode}"] if row.mode else ["lens=none"]
    return ov + list(row.extra)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").replace("__", "_")


def run_one(args: tuple[Row, int, int, list[str], Path, int]) -> dict:
    row, seed, steps, extra, out, threads = args
    import torch

    torch.set_num_threads(threads)
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    cfg = compose(overrides(row, seed=seed, steps=steps, extra=extra, out=out))
    metrics_path = Path(cfg["run_dir"]) / "metrics.json"
    if metrics_path.is_file():  # finished earlier: the benchmark itself resumes
        res = json.loads(metrics_path.read_text())
    else:
        cfg["resume"] = True
        res = run(cfg, cfg["run_dir"])
    keep = ("pretext_acc", "pretext_acc_clean", "pretext_acc_lensed", "edit_ratio", "probe_acc", "edit_png")
    return {"row": row.name, "seed": seed, **{k: res.get(k) for k in keep}}


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[Row], runs: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        mine = [r for r in runs if r["row"] == row.name]
        entry = {"row": row.name, "pretext": row.pretext, "shortcut": row.shortcut, "lens": row.mode or "none",
                 "seeds": [r["seed"] for r in mine]}
        for key in ("pretext_acc", "pretext_acc_clean", "probe_acc", "edit_ratio"):
            entry[key], entry[key + "_std"] = mean_std([r[key] for r in mine])
        table.append(entry)
    # Recovery of each lens row against the clean and no-lens rows of its pretext and shortcut.
    by = {(e["pretext"], e["shortcut"], e["lens"]): e for e in table}
    for e in table:
        clean, short = by.get((e["pretext"], "none", "none")), by.get((e["pretext"], e["shortcut"], "none"))
        if e["lens"] != "none" and e["shortcut"] != "none" and clean and short:
            gap = clean["probe_acc"] - short["probe_acc"]
            e["recovery"] = (e["probe_acc"] - short["probe_acc"]) / gap if gap > 0 else None
        if e["lens"] != "none" and e["shortcut"] == "none" and clean:
            e["clean_cost_points"] = 100 * (clean["probe_acc"] - e["probe_acc"])
    return table


def markdown(table: list[dict]) -> str:
    def pct(e: dict, k: str) -> str:
        return f"{100 * e[k]:.1f} ± {100 * e[k + '_std']:.1f}" if e[k] == e[k] else "-"

    lines = ["| pretext | row | pretext acc (raw, %) | linear probe (clean test, %) | edit in/out | recovery |",
             "|---|---|---|---|---|---|"]
    for e in table:
        ratio = f"{e['edit_ratio']:.1f}× ± {e['edit_ratio_std']:.1f}" if e["edit_ratio"] == e["edit_ratio"] else "-"
        rec = f"{100 * e['recovery']:.0f}%" if e.get("recovery") is not None else (
            f"cost {e['clean_cost_points']:+.1f} pt" if "clean_cost_points" in e else "-")
        lines.append(f"| {e['pretext']} | {e['row']} | {pct(e, 'pretext_acc')} | {pct(e, 'probe_acc')} | {ratio} | {rec} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and seeds, narrower backbone")
    parser.add_argument("--rows", nargs="*", default=None, help="substrings selecting rows (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (each with cores/jobs threads)")
    parser.add_argument("--out", type=Path, default=None, help="run directories (default runs/shortcut_benchmark[_quick])")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    steps = args.steps or preset["steps"]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    tag = "shortcut_benchmark_quick" if args.quick else "shortcut_benchmark"
    out = args.out or Path("runs") / tag
    rows = [r for r in ROWS if args.rows is None or any(s in r.name or s == r.pretext for s in args.rows)]
    # Lens rows need their pretext's clean and no-lens rows for the recovery column.
    for r in list(rows):
        for needed in ROWS:
            if needed.pretext == r.pretext and needed.mode is None and needed.shortcut in ("none", r.shortcut) and needed not in rows:
                rows.append(needed)
    rows.sort(key=ROWS.index)

    import os

    threads = max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    jobs = [(row, seed, steps, preset["extra"] + args.extra, out, threads) for row in rows for seed in seeds]
    print(f"{len(jobs)} runs ({len(rows)} rows x {len(seeds)} seeds), {steps} steps each, {args.jobs} at a time")
    start = time.perf_counter()
    runs: list[dict] = []
    with get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        for i, res in enumerate(pool.imap_unordered(run_one, jobs), 1):
            runs.append(res)
            print(f"[{i}/{len(jobs)} {time.perf_counter() - start:.0f}s] {res['row']} seed {res['seed']}: "
                  f"pretext {res['pretext_acc']:.3f} probe {res['probe_acc']:.4f} edit ratio {res.get('edit_ratio')}", flush=True)
    table = summarise(rows, runs)
    md = markdown(table)
    print("\n" + md)

    RESULTS.mkdir(parents=True, exist_ok=True)
    best = max((r for r in runs if r.get("edit_png") and "arrow" in r["row"]), key=lambda r: r.get("edit_ratio") or 0, default=None)
    if best is not None:
        shutil.copy(best["edit_png"], RESULTS / f"{tag}_edits.png")
    settings = {"steps": steps, "seeds": seeds, "common_overrides": COMMON + preset["extra"] + args.extra,
                "command": "python experiments/shortcut_benchmark.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                "seconds": time.perf_counter() - start}
    (RESULTS / f"{tag}.json").write_text(json.dumps({"settings": settings, "table": table, "runs": runs}, indent=2))
    (RESULTS / f"{tag}.md").write_text(md + "\n")
    print(f"\nwrote {RESULTS / (tag + '.json')} and .md ({settings['seconds']:.0f} s)")
    return table


if __name__ == "__main__":
    main()
