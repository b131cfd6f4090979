"""A small scaling sweep: ViT and MLP-Mixer sizes × pretraining data sizes × training lengths, then a
saturating power-law fit of error against compute.

Zhai, Kolesnikov, Houlsby, Beyer, "Scaling Vision Transformers", CVPR 2022, fit
``E = a·(C + d)^(−b) + c`` to the compute-efficient frontier of many (model, data, steps) runs. Here
every run is a job of a ``shortcutlens-train --multirun`` (the library's own training entry point):
rotation pretraining on Fashion-MNIST at 16 px on a
seeded ``data.train_size`` subset of the train split, then the loop's linear probe on the whole
labelled train split (``probe.max_train`` images) and the 10,000 test images. Each run writes
``metrics.json`` with its counted compute (``torch.utils.flop_counter`` FLOPs of one step × steps);
the sweep collects ``compute``, ``data_size`` and ``error = 1 − probe_acc`` (and the rotation task's own
test error) into CSV/JSON and hands them to ``shortcutlens-scaling``, which fits and plots.

    python experiments/scaling_sweep.py            # the README's 24 runs: 27 min of runs on one CPU core
    python experiments/scaling_sweep.py --quick    # 8 tiny runs and both fits, about 4 min: a smoke test
    python experiments/scaling_sweep.py --models vit-Ti/8 --data-sizes 2000 8000 54000 --steps 50 200 800

Each training length is one Hydra multirun of ``shortcutlens-train`` over models × data sizes. A model is
a config of the ``scaling_model`` group (``experiments/conf/scaling_model/<model without '/'>.yaml``, an
"experiment" file that overrides ``backbone`` and sets its variant and extra keys), and each job's run
directory is ``hydra.sweep.dir/hydra.sweep.subdir`` = ``--out/<model>/n<data size>_s<steps>``. The first of
the README's four multiruns (cheapest first) is::

    shortcutlens-train -m +scaling_model=vit-Ti8,mixer-S8,vit-S8 data.train_size=2000,54000 trainer.steps=25 \\
        trainer.batch_size=32 trainer.warmup_steps=2 trainer.log_every=25 trainer.ckpt_every=25 \\
        probe.max_train=2000 resume=true data=fashion_mnist data.image_size=16 pretext=rotation \\
        pretext.all_rotations=false lens=none shortcut=none trainer.optimizer=adamw trainer.lr=1e-3 \\
        trainer.weight_decay=0.05 trainer.schedule=cosine trainer.image_every=0 trainer.progress=false \\
        probe.untrained=false device=auto seed=0 hydra.sweep.dir=runs/scaling_sweep \\
        'hydra.sweep.subdir=${hydra:runtime.choices.scaling_model}/n${data.train_size}_s${trainer.steps}'

One multirun per length because the warm-up (10% of the steps), logging and checkpoint intervals go with
the length and Hydra's sweeper only takes products. Finished runs (a ``metrics.json`` in their directory)
are left out of the multiruns it launches: the unfinished (model, data size) pairs of a length are swept
as products (models with the same unfinished data sizes together), so an interrupted sweep resumes and a
widened grid only trains the new runs; ``--collect`` only tabulates and fits. ``--jobs N`` runs N
multiruns at a time (one per model and length). Writes ``experiments/results/scaling_sweep[_quick].{csv,json}``,
the probe-error fit ``scaling_sweep[_quick]_fit.{png,json}`` and the rotation-error fit
``scaling_sweep[_quick]_pretext_fit.*``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Sizes from the variant tables (shortcutlens/backbones/{vit,mixer}.py) at 16-px images. Patches of 8 px
# (4 tokens) keep the loop's probe — a forward pass over 10,000 test images in every run — affordable on
# one core. Mixer-S's token-mixing MLP has D_S = 256 hidden units for the paper's 196 tokens; for 4 tokens
# it is scaled to 16 (everything else is the S row): at D_S = 256 the element-wise work the FLOP counter
# does not see made Mixer-S/8 3.5× slower per step than at D_S = 16, for about the same counted FLOPs.
# Each model is the config experiments/conf/scaling_model/<name>.yaml (an override of the backbone group
# plus its keys); the name is also its folder under --out.
MODELS: dict[str, str] = {
    "vit-Ti/8": "vit-Ti8",        # backbone=vit backbone.variant=Ti/8
    "vit-S/8": "vit-S8",          # backbone=vit backbone.variant=S/8
    "mixer-S/8": "mixer-S8",      # backbone=mixer backbone.variant=S/8 +backbone.tokens_mlp=16
    # --quick: two blocks deep (+backbone.depth=2)
    "vit-Ti/8-d2": "vit-Ti8-d2",
    "mixer-S/8-d2": "mixer-S8-d2",
}

# Rotation (one random rotation per image, as in shortcut_benchmark.py), AdamW with a cosine schedule
# and 10% warm-up: each training length is its own fully annealed run.
COMMON = [
    "data=fashion_mnist", "data.image_size=16", "pretext=rotation", "pretext.all_rotations=false", "lens=none",
    "shortcut=none", "trainer.optimizer=adamw", "trainer.lr=1e-3", "trainer.weight_decay=0.05",
    "trainer.schedule=cosine", "trainer.image_every=0", "trainer.progress=false", "probe.untrained=false",
    "device=auto", "seed=0",
]
# Four lengths give the frontier its points; a third data size (8,000) would add 12 runs (~13 min) and no
# compute level: at ≤ 6,400 images seen per run the data axis barely moves the error.
FULL = {"models": ["vit-Ti/8", "mixer-S/8", "vit-S/8"], "data_sizes": [2000, 54000], "steps": [25, 50, 100, 200],
        "batch_size": 32, "probe_max_train": 2000}
QUICK = {"models": ["vit-Ti/8-d2", "mixer-S/8-d2"], "data_sizes": [500, 2000], "steps": [10, 40],
         "batch_size": 16, "probe_max_train": 500}
# Each job's output folder (its run_dir): --out/<scaling_model>/n<data size>_s<steps>, i.e. Run.slug.
SUBDIR = "${hydra:runtime.choices.scaling_model}/n${data.train_size}_s${trainer.steps}"


@dataclass(frozen=True)
class Run:
    model: str
    data_size: int
    steps: int
    batch_size: int
    probe_max_train: int

    @property
    def slug(self) -> str:
        return f"{MODELS.get(self.model, self.model.replace('/', ''))}/n{self.data_size}_s{self.steps}"


@dataclass(frozen=True)
class Multirun:
    """One ``shortcutlens-train -m``: every model × every data size at one training length."""
    models: tuple[str, ...]
    data_sizes: tuple[int, ...]
    steps: int
    batch_size: int
    probe_max_train: int

    @property
    def runs(self) -> list[Run]:
        return [Run(m, n, self.steps, self.batch_size, self.probe_max_train) for m in self.models for n in self.data_sizes]


def plan(preset: dict) -> list[Run]:
    """Every (model, data size, steps) of the preset, cheapest first, so a cut-short sweep has a frontier."""
    runs = [Run(m, n, s, preset["batch_size"], preset["probe_max_train"])
            for m in preset["models"] for n in preset["data_sizes"] for s in preset["steps"]]
    return sorted(runs, key=lambda r: (r.steps, preset["models"].index(r.model), r.data_size))


def multiruns(runs: list[Run], *, per_model: bool = False) -> list[Multirun]:
    """The fewest products of (models × data sizes) per training length that cover exactly ``runs``
    (the unfinished ones), cheapest length first; ``per_model``: one multirun per model and length."""
    out = []
    for steps in sorted({r.steps for r in runs}):
        sizes: dict[tuple[str, int, int], list[int]] = {}  # (model, batch, probe images) -> data sizes, in order
        for r in runs:
            if r.steps == steps:
                sizes.setdefault((r.model, r.batch_size, r.probe_max_train), []).append(r.data_size)
        merged: dict[tuple, list[str]] = {}
        for (model, batch, probe), ns in sizes.items():
            key = (model,) if per_model else ()
            merged.setdefault((*key, tuple(ns), batch, probe), []).append(model)
        out += [Multirun(tuple(models), key[-3], steps, key[-2], key[-1]) for key, models in merged.items()]
    return out


def _value(path: Path) -> str:
    """A path as a Hydra override value (quoted unless it is plain)."""
    text = str(path)
    return text if re.fullmatch(r"[\w./-]+", text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def multirun_overrides(group: Multirun, out: Path, extra: list[str]) -> list[str]:
    """The command line of one multirun: the swept lists, the length's settings, the common settings and
    the sweep folder layout (each job's run_dir is ``out / Run.slug``)."""
    for m in group.models:
        if m not in MODELS:
            raise ValueError(f"Unknown model '{m}'. Valid models: {', '.join(MODELS)}")
    steps = group.steps
    return [
        "+scaling_model=" + ",".join(MODELS[m] for m in group.models),
        "data.train_size=" + ",".join(str(n) for n in group.data_sizes),
        f"trainer.steps={steps}", f"trainer.batch_size={group.batch_size}",
        f"trainer.warmup_steps={max(1, steps // 10)}", f"trainer.log_every={max(1, min(25, steps))}",
        f"trainer.ckpt_every={steps}", f"probe.max_train={group.probe_max_train}", "resume=true",
        *COMMON, f"hydra.sweep.dir={_value(out)}", f"hydra.sweep.subdir={SUBDIR}", *extra,
    ]


def command(group: Multirun, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "shortcutlens.cli.train", "--multirun", *multirun_overrides(group, out, extra)]


def run_dir(run: Run, out: Path) -> Path:
    return out / run.slug


def launch(cmd: list[str], threads: int) -> int:
    """Run one multirun (a ``shortcutlens-train`` process that trains its jobs one after another)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run(cmd, check=False, env=env).returncode


def finish(run: Run, out: Path) -> dict:
    """After its multirun: the run's time (Hydra writes ``.hydra/`` just before the job starts, the loop
    ``metrics.json`` at its end) into ``sweep_run.json``, its checkpoints deleted, its table row."""
    folder = run_dir(run, out)
    if not (folder / "metrics.json").is_file():
        raise SystemExit(f"{folder}: the multirun ended without its metrics.json")
    started = folder / ".hydra" / "overrides.yaml"
    seconds = (folder / "metrics.json").stat().st_mtime - started.stat().st_mtime if started.is_file() else None
    (folder / "sweep_run.json").write_text(json.dumps({**asdict(run), "seconds": seconds}))
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # ViT-S with AdamW state: ~250 MB a run
    return collect(run, out)


def collect(run: Run, out: Path) -> dict:
    """One row of the runs table from a finished run's ``metrics.json``."""
    folder = run_dir(run, out)
    metrics = json.loads((folder / "metrics.json").read_text())
    side = folder / "sweep_run.json"
    seconds = json.loads(side.read_text()).get("seconds") if side.is_file() else None
    return {
        "model": run.model, "data_size": run.data_size, "steps": run.steps, "batch_size": run.batch_size,
        "compute": metrics["compute"], "flops_per_step": metrics["flops_per_step"],
        "error": 1.0 - metrics["probe_acc"], "pretext_error": 1.0 - metrics["pretext_acc"],
        "probe_acc": metrics["probe_acc"], "pretext_acc": metrics["pretext_acc"],
        "probe_train_images": metrics["probe"]["train_images"], "seconds": seconds, "run_dir": str(folder),
    }


def write_table(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fit(csv_path: Path, name: str) -> dict:
    """Run ``shortcutlens-scaling`` on ``csv_path`` (the compute frontier; every run if it has under 4)."""
    import numpy as np

    from shortcutlens.cli import scaling
    from shortcutlens.scaling import load_runs, pareto_frontier

    runs = load_runs(csv_path)
    front = int(pareto_frontier(np.array([r["compute"] for r in runs]), np.array([r["error"] for r in runs])).sum())
    argv = [str(csv_path), "--out-dir", str(csv_path.parent), "--name", name]
    if front < 4:
        print(f"{csv_path.name}: only {front} runs on the compute frontier; fitting every run (--all-points)")
        argv.append("--all-points")
    print(f"\nshortcutlens-scaling {' '.join(argv)}")
    scaling.main(argv)
    return json.loads((csv_path.parent / f"{name}.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 tiny runs (two-block models, 10 and 40 steps)")
    parser.add_argument("--models", nargs="*", default=None, help=f"from: {', '.join(MODELS)}")
    parser.add_argument("--data-sizes", nargs="*", type=int, default=None, help="pretraining images (data.train_size)")
    parser.add_argument("--steps", nargs="*", type=int, default=None, help="training lengths")
    parser.add_argument("--out", type=Path, default=None, help="run directories (default runs/scaling_sweep[_quick])")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables, fits and plots go")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="multiruns in parallel (then one per model and length)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--collect", action="store_true", help="only tabulate and fit the runs finished under --out")
    args = parser.parse_args(argv)
    preset = dict(QUICK if args.quick else FULL)
    for key in ("models", "data_sizes", "steps"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    for m in preset["models"]:
        if m not in MODELS:
            parser.error(f"unknown model '{m}'; valid: {', '.join(MODELS)}")
    tag = "scaling_sweep_quick" if args.quick else "scaling_sweep"
    out = args.out or Path("runs") / tag
    runs = plan(preset)
    done = [r for r in runs if (run_dir(r, out) / "metrics.json").is_file()]
    todo = [] if args.collect else [r for r in runs if r not in done]
    groups = multiruns(todo, per_model=args.jobs > 1)
    print(f"{len(runs)} runs ({len(preset['models'])} models × {len(preset['data_sizes'])} data sizes × "
          f"{len(preset['steps'])} lengths): {len(done)} finished, {len(todo)} to train in {len(groups)} "
          f"multiruns, {args.jobs} at a time")
    start = time.perf_counter()
    rows = [collect(r, out) for r in done]
    commands = [command(g, out, args.extra) for g in groups]
    shown = ["shortcutlens-train " + shlex.join(c[3:]) for c in commands]

    def one(i: int) -> tuple[int, int]:
        print(f"\n[multirun {i + 1}/{len(groups)}] {shown[i]}", flush=True)
        return i, launch(commands[i], args.threads)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for i, rc in pool.map(one, range(len(groups))):
            if rc != 0:
                raise SystemExit(f"multirun {i + 1} failed (exit status {rc}): {shown[i]}")
            for run in groups[i].runs:
                row = finish(run, out)
                rows.append(row)
                print(f"[{len(rows) - len(done)}/{len(todo)} {time.perf_counter() - start:.0f}s] {row['model']} "
                      f"n={row['data_size']} steps={row['steps']}: compute {row['compute']:.3g} FLOPs, probe error "
                      f"{row['error']:.4f}, rotation error {row['pretext_error']:.4f} ({row['seconds'] or 0:.0f} s)", flush=True)
    if not rows:
        raise SystemExit("no finished runs to tabulate")
    rows.sort(key=lambda r: (r["compute"], r["data_size"]))
    results = args.results
    write_table(rows, results / f"{tag}.csv")
    # The rotation task's own test error, as a second "error" column for the tool.
    write_table([{**r, "error": r["pretext_error"]} for r in rows], results / f"{tag}_pretext.csv")
    train_seconds = sum(r["seconds"] or 0.0 for r in rows)
    summary = {
        "settings": {**preset, "common_overrides": COMMON, "extra": args.extra, "models": {m: [f"+scaling_model={MODELS[m]}"] for m in preset["models"]},
                     "command": "python experiments/scaling_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
                     "threads": args.threads, "jobs": args.jobs, "multiruns": shown},
        "seconds_this_invocation": time.perf_counter() - start,
        "seconds_all_runs": train_seconds,
        "runs": rows,
    }
    fits = {}
    if len(rows) >= 4:
        fits["probe_error"] = fit(results / f"{tag}.csv", f"{tag}_fit")
        fits["pretext_error"] = fit(results / f"{tag}_pretext.csv", f"{tag}_pretext_fit")
    else:
        print(f"only {len(rows)} runs: a 4-parameter fit needs at least 4")
    summary["fits"] = {k: {"fit": v["fit"], "fitted_on": v["fitted_on"], "png": v["png"]} for k, v in fits.items()}
    (results / f"{tag}.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {results / (tag + '.csv')} and .json; all runs together took {train_seconds:.0f} s")
    return summary


if __name__ == "__main__":
    main()
