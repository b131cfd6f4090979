"""The shortcut benchmark: a pretext task latches onto a shortcut, the lens finds and erases it,
and the representation gets better for it — on Fashion-MNIST, over several seeds.

Rows are (pretext, shortcut, lens) settings; columns are the pretext accuracy on shortcut-bearing
test images (raw, no lens), the linear probe on clean test images, and the mean lens edit inside the
shortcut's region over the mean outside. Each cell is mean ± std over seeds. The recovery of a lens
row is (lens − shortcut) / (clean − shortcut) on the probe, against the rows of the same pretext.

    python experiments/shortcut_benchmark.py --rows rotation   # the README table (about 1.5 h of 2 CPU cores)
    python experiments/shortcut_benchmark.py --quick    # 4 rows, 1 seed, 200 steps
    python experiments/shortcut_benchmark.py --rows arrow --seeds 0 1 2 --jobs 2
    python experiments/shortcut_benchmark.py --rows "relative_location chromatic aberration / lens" \
        --lens-extra lens.budget=0.01 --out runs/rl_budget_0.01    # a lens setting against the same baselines

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
    secondary: bool = False          # run with the preset's secondary seeds only (a comparison, not a headline)

    @property
    def group(self) -> str:
        return self.pretext


# Patch tasks: Kolesnikov et al.'s random grayscale (p = 0.66) is a hand-made cure for chromatic aberration,
# off here so that the lens has to remove the cue; a 1024-wide head (paper: 4096) keeps a step affordable.
PATCH_EXTRA = ("pretext.grayscale_probability=0.0", "pretext.hidden_dim=1024")
# Instance tasks: 128 views per step like the rotation rows (32 images x 4 copies; 64 images x 2 views).
EXEMPLAR_EXTRA = ("trainer.batch_size=32", "pretext.copies=4")
CONTRASTIVE_EXTRA = ("trainer.batch_size=64",)

ROWS = [
    Row("clean / no lens", "rotation", "none", extra=("probe.untrained=true",)),
    Row("arrow / no lens", "rotation", "arrow"),
    Row("arrow / lens (least_likely)", "rotation", "arrow", "least_likely", secondary=True),
    Row("arrow / lens (full)", "rotation", "arrow", "full", secondary=True),
    Row("arrow / lens (random_wrong)", "rotation", "arrow", "random_wrong"),
    Row("gradient / no lens", "rotation", "gradient", secondary=True),
    Row("gradient / lens (random_wrong)", "rotation", "gradient", "random_wrong", secondary=True),
    Row("clean / lens (random_wrong)", "rotation", "none", "random_wrong"),
    Row("clean / lens (least_likely)", "rotation", "none", "least_likely", secondary=True),
    # The other pretext tasks (issue 4): clean and with a shortcut that fits the task, without and with the
    # lens; full for the two non-classification tasks, random_wrong (DESIGN.md's lead) for the others.
    Row("relative_location clean / no lens", "relative_location", "none", extra=PATCH_EXTRA),
    Row("relative_location chromatic aberration / no lens", "relative_location", "chromatic_aberration", extra=PATCH_EXTRA),
    Row("relative_location chromatic aberration / lens (random_wrong)", "relative_location", "chromatic_aberration",
        "random_wrong", PATCH_EXTRA),
    Row("relative_location clean / lens (random_wrong)", "relative_location", "none", "random_wrong", PATCH_EXTRA),
    Row("jigsaw clean / no lens", "jigsaw", "none", extra=PATCH_EXTRA),
    Row("jigsaw chromatic aberration / no lens", "jigsaw", "chromatic_aberration", extra=PATCH_EXTRA),
    Row("jigsaw chromatic aberration / lens (random_wrong)", "jigsaw", "chromatic_aberration", "random_wrong", PATCH_EXTRA),
    Row("jigsaw clean / lens (random_wrong)", "jigsaw", "none", "random_wrong", PATCH_EXTRA),
    Row("exemplar clean / no lens", "exemplar", "none", extra=EXEMPLAR_EXTRA),
    Row("exemplar watermark / no lens", "exemplar", "watermark", extra=EXEMPLAR_EXTRA),
    Row("exemplar watermark / lens (full)", "exemplar", "watermark", "full", EXEMPLAR_EXTRA),
    Row("exemplar clean / lens (full)", "exemplar", "none", "full", EXEMPLAR_EXTRA),
    Row("contrastive clean / no lens", "contrastive", "none", extra=CONTRASTIVE_EXTRA),
    Row("contrastive watermark / no lens", "contrastive", "watermark", extra=CONTRASTIVE_EXTRA),
    Row("contrastive watermark / lens (full)", "contrastive", "watermark", "full", CONTRASTIVE_EXTRA),
    Row("contrastive clean / lens (full)", "contrastive", "none", "full", CONTRASTIVE_EXTRA),
]

# Settings shared by every row. The backbone is the library's default (ResNet-18 v1 at width 0.125);
# one random rotation per image keeps a step affordable on 2 CPU cores.
COMMON = [
    "data=fashion_mnist", "pretext.all_rotations=false", "trainer.batch_size=128", "trainer.warmup_steps=25",
    "trainer.log_every=25", "probe.untrained=false", "probe.max_train=10000", "trainer.progress=false", "device=auto",
]
FULL = {"steps": 500, "seeds": [0, 1, 2], "secondary_seeds": [0], "rows": None, "extra": []}
QUICK = {"steps": 200, "seeds": [0], "secondary_seeds": [0], "rows": ["clean / no lens", "arrow / no lens", "arrow / lens (random_wrong)",
                                              "clean / lens (random_wrong)"], "extra": []}


def overrides(row: Row, *, seed: int, steps: int, extra: list[str], out: Path) -> list[str]:
    common = [o for o in COMMON if row.pretext == "rotation" or not o.startswith("pretext.")]  # rotation's settings
    ov = common + extra + [f"pretext={row.pretext}", f"shortcut={row.shortcut}", f"seed={seed}",
                           f"trainer.steps={steps}", f"trainer.ckpt_every={steps}", f"trainer.image_every={max(100, steps // 5)}",
                           f"run_dir={run_dir(row, seed, out)}"]
    ov += ["lens=unet", "lens.width=8", f"lens.mode={row.mode}"] if row.mode else ["lens=none"]
    return ov + list(row.extra)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").replace("__", "_")


def run_dir(row: Row, seed: int, out: Path) -> Path:
    return out / slug(row.name) / f"seed{seed}"


def summary(row: Row, seed: int, metrics: dict) -> dict:
    """The columns the table needs from one run's ``metrics.json``."""
    keep = ("pretext_acc", "pretext_acc_clean", "pretext_acc_lensed", "edit_ratio", "probe_acc", "edit_png")
    return {"row": row.name, "seed": seed, "steps": metrics.get("step"), **{k: metrics.get(k) for k in keep}}


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
    return summary(row, seed, res)


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
                 "seeds": [r["seed"] for r in mine], "steps": sorted({r.get("steps") for r in mine if r.get("steps")})}
        for key in ("pretext_acc", "pretext_acc_clean", "probe_acc", "edit_ratio"):
            entry[key], entry[key + "_std"] = mean_std([r[key] for r in mine])
        table.append(entry)
    # Recovery of each lens row against the clean and no-lens rows of its pretext and shortcut, and the
    # cost of a lens on clean data, paired by seed: only seeds that all rows involved share are used
    # (seeds move these baselines by several points, so unpaired means would mislead).
    probe = {(r["row"], r["seed"]): r["probe_acc"] for r in runs}
    names = {(row.pretext, row.shortcut, row.mode or "none"): row.name for row in rows}
    for e in table:
        clean = names.get((e["pretext"], "none", "none"))
        short = names.get((e["pretext"], e["shortcut"], "none"))
        if e["lens"] == "none" or clean is None:
            continue
        involved = [e["row"], clean] + ([short] if e["shortcut"] != "none" and short else [])
        seeds = [s for s in e["seeds"] if all((n, s) in probe for n in involved)]
        if not seeds:
            continue
        def mean(name: str, seeds: list[int] = seeds) -> float:
            return statistics.fmean(probe[(name, s)] for s in seeds)

        e["paired_seeds"] = seeds
        if e["shortcut"] != "none" and short:
            gap = mean(clean) - mean(short)
            e["recovery"] = (mean(e["row"]) - mean(short)) / gap if gap > 0 else None
        elif e["shortcut"] == "none":
            e["clean_cost_points"] = 100 * (mean(clean) - mean(e["row"]))
    return table


def markdown(table: list[dict]) -> str:
    def pct(e: dict, k: str) -> str:
        return f"{100 * e[k]:.1f} ± {100 * e[k + '_std']:.1f}" if e[k] == e[k] else "-"

    header = ("| pretext | row | steps | seeds | pretext acc (raw, %) | linear probe (clean test, %) | edit in/out | "
              "recovery (paired by seed) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for e in table:
        ratio = f"{e['edit_ratio']:.1f}× ± {e['edit_ratio_std']:.1f}" if e["edit_ratio"] == e["edit_ratio"] else "-"
        paired = f" (seeds {','.join(map(str, e['paired_seeds']))})" if "paired_seeds" in e else ""
        rec = f"{100 * e['recovery']:.0f}%{paired}" if e.get("recovery") is not None else (
            f"cost {e['clean_cost_points']:+.1f} pt{paired}" if "clean_cost_points" in e else "-")
        steps = "/".join(map(str, e.get("steps") or [])) or "-"
        lines.append(f"| {e['pretext']} | {e['row']} | {steps} | {len(e['seeds'])} | {pct(e, 'pretext_acc')} | "
                     f"{pct(e, 'probe_acc')} | {ratio} | {rec} |")
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
    parser.add_argument("--lens-extra", nargs="*", default=[],
                        help="more Hydra overrides for the lens rows only (e.g. lens.budget=0.01); use a new --out")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--collect", action="store_true", help="only tabulate the runs already finished under --out")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    steps = args.steps or preset["steps"]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    tag = "shortcut_benchmark_quick" if args.quick else "shortcut_benchmark"
    out = args.out or Path("runs") / tag
    if args.rows is not None:  # a pretext's name, a row's exact name, or else a substring of row names
        names = {r.name for r in ROWS}
        rows = [r for r in ROWS if any(s == r.pretext or s == r.name or (s not in names and s in r.name) for s in args.rows)]
    else:
        rows = [r for r in ROWS if preset["rows"] is None or r.name in preset["rows"]]
    # Lens rows need their pretext's clean and no-lens rows for the recovery column.
    for r in list(rows):
        for needed in ROWS:
            if needed.pretext == r.pretext and needed.mode is None and needed.shortcut in ("none", r.shortcut) and needed not in rows:
                rows.append(needed)
    rows.sort(key=ROWS.index)

    import os

    threads = args.threads or max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    secondary_seeds = args.seeds if args.seeds is not None else preset["secondary_seeds"]
    # Headline rows first, seed by seed, so a cut-short run still has complete headline seeds.
    plan = sorted(((row.secondary, seed, ROWS.index(row), row) for row in rows
                   for seed in (secondary_seeds if row.secondary else seeds)), key=lambda t: t[:3])
    jobs = [(row, seed, steps, preset["extra"] + args.extra + (args.lens_extra if row.mode else []), out, threads)
            for _, seed, _, row in plan]
    print(f"{len(jobs)} runs ({len(rows)} rows; seeds {seeds}, secondary rows {secondary_seeds}), {steps} steps each, "
          f"{args.jobs} at a time")
    start = time.perf_counter()
    runs: list[dict] = []
    if args.collect:  # tabulate finished runs (e.g. from several benchmark processes sharing --out), here
        done = [(row, seed) for row, seed, *_ in jobs if (run_dir(row, seed, out) / "metrics.json").is_file()]
        print(f"collecting {len(done)} of {len(jobs)} runs; missing: "
              + (", ".join(f"{row.name} seed {seed}" for row, seed, *_ in jobs if (row, seed) not in done) or "none"))
        runs = [summary(row, seed, json.loads((run_dir(row, seed, out) / "metrics.json").read_text())) for row, seed in done]
        jobs = []
    if jobs:
        with get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for i, res in enumerate(pool.imap_unordered(run_one, jobs), 1):
                runs.append(res)
                print(f"[{i}/{len(jobs)} {time.perf_counter() - start:.0f}s] {res['row']} seed {res['seed']}: "
                      f"pretext {res['pretext_acc']:.3f} probe {res['probe_acc']:.4f} edit ratio {res.get('edit_ratio')}",
                      flush=True)
    table = summarise(rows, runs)
    md = markdown(table)
    print("\n" + md)

    RESULTS.mkdir(parents=True, exist_ok=True)
    best = max((r for r in runs if r.get("edit_png") and "arrow" in r["row"]), key=lambda r: r.get("edit_ratio") or 0, default=None)
    if best is not None:
        shutil.copy(best["edit_png"], RESULTS / f"{tag}_edits.png")
    settings = {"steps": steps, "seeds": seeds, "common_overrides": COMMON + preset["extra"] + args.extra,
                "lens_overrides": args.lens_extra,
                "command": "python experiments/shortcut_benchmark.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                "seconds": time.perf_counter() - start}
    (RESULTS / f"{tag}.json").write_text(json.dumps({"settings": settings, "table": table, "runs": runs}, indent=2))
    (RESULTS / f"{tag}.md").write_text(md + "\n")
    print(f"\nwrote {RESULTS / (tag + '.json')} and .md ({settings['seconds']:.0f} s)")
    return table


if __name__ == "__main__":
    main()
