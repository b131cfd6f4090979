"""The main job (``make demo``): does a pretext task latch onto a shortcut, and does the lens fix it?

Rotation prediction on Fashion-MNIST, three runs with the same seed:

    clean images      the reference: what rotation learns on its own (and, before training, the
                      probe of the untrained backbone, so that "training helps" can be read off)
    arrow, no lens    a small upward arrow drawn before the flip, shift and rotation gives the rotation away
    arrow, lens       the same, with the U-Net lens playing against the network (lens.mode=auto)

It prints pretext accuracy (on arrow images, and on the same images without the arrow) and the linear
probe on clean test images, then what the arrow cost the probe, what the lens got back, the lens's edit
inside/outside the arrow, and the path of the lens-edit grid (input / lensed / amplified |edit|).

The settings are the shortcut benchmark's rotation protocol (experiments/shortcut_benchmark.py,
``PROTOCOLS["rotation"]`` and ``COMMON``) as it was measured over five seeds at 500 steps (the benchmark
now runs 1,500, with a hidden layer in the rotation head; the 500-step runs are kept in
experiments/results/archive/rotation_500_steps): batch 128, flips and shifts, one rotation per image,
a linear head, warm-up 25 steps. Another change keeps the demo to
minutes: the probe trains on a fixed 10,000-image subset with a fixed L2 (the benchmark: all 54,000
images, L2 chosen on a grid), so its numbers are a little lower (0.7-0.9 points on seed 0).

Fashion-MNIST is read from disk only (``data.download`` stays false, so the demo never waits on the
network): ``--data-root``, else $SHORTCUTLENS_DATA, ~/.cache/shortcutlens and Debian's
``dataset-fashion-mnist``. Without it the demo says so and runs on scikit-learn's bundled digits.

    python experiments/demo.py                      # two runs at a time, one per core (~4.5 min on 2 idle cores)
    python experiments/demo.py --steps 4 --quick    # the code path at tiny size on digits (used by the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import torch

from shortcutlens.cli.common import compose
from shortcutlens.cli.train import run

CLEAN, ARROW, LENS = "rotation, clean images", "rotation + arrow, no lens", "rotation + arrow, lens"
# Longest first: with two workers the lens run takes one and the two shorter runs follow each other on
# the other, which balances the two (the lens run costs about two no-lens runs' steps).
ORDER = (LENS, CLEAN, ARROW)
DIGITS_NOTE = ("Digits are so easy that an untrained backbone already probes near 98%, so expect the untrained "
               "row to be high and training not to beat it; install Fashion-MNIST for the real comparison.")


def choose_data(root: str | None) -> tuple[list[str], str | None]:
    """Fashion-MNIST if the library finds it on disk, else digits; returns the data overrides and, on
    fallback, why. The check loads the files the runs will load (about a second), so a corrupt file falls
    back here instead of failing inside a worker; with ``download=False`` nothing is fetched."""
    from shortcutlens.data.base import DataNotFoundError
    from shortcutlens.data.fashion_mnist import fashion_mnist

    try:
        fashion_mnist(root=root, download=False)
    except DataNotFoundError as err:
        return ["data=digits"], str(err)
    return ["data=fashion_mnist", "data.download=false"] + ([f"data.root={root}"] if root else []), None


def run_overrides(name: str, *, data: list[str], steps: int, seed: int, out: Path, quick: bool,
                  progress: bool) -> list[str]:
    """One run's Hydra overrides: the benchmark's rotation protocol, the cue and lens of ``name``."""
    out_dir = out / {CLEAN: "clean", ARROW: "arrow_no_lens", LENS: "arrow_lens"}[name]
    ov = [
        *data, "pretext=rotation", "pretext.all_rotations=false", "trainer.augment=[flip,crop]",
        f"trainer.batch_size={32 if quick else 128}", f"trainer.steps={steps}", f"trainer.warmup_steps={min(25, steps // 4)}",
        f"trainer.log_every={max(1, min(25, steps // 4))}", f"trainer.image_every={steps}", f"trainer.ckpt_every={steps}",
        f"trainer.progress={str(progress).lower()}", f"probe.max_train={256 if quick else 10_000}", "probe.l2_grid=[]",
        f"seed={seed}", f"run_dir={out_dir}", "device=auto",
    ]
    ov += ["shortcut=none", "probe.untrained=true"] if name == CLEAN else ["shortcut=arrow", "probe.untrained=false"]
    ov += (["lens=unet"] + (["lens.width=4"] if quick else [])) if name == LENS else ["lens=none"]
    return ov


def train_one(job: tuple[list[str], int]) -> dict:
    """One training run from Hydra overrides, with ``threads`` torch threads (a worker process); adds its
    wall and CPU seconds (the CPU seconds of a one-thread run are about its wall time on an idle core)."""
    overrides, threads = job
    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    cfg = compose(overrides)
    results = run(cfg, cfg["run_dir"])
    return {**results, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def points(a: float, b: float) -> float:
    """An accuracy difference in percentage points."""
    return 100 * (a - b)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--data-root", default=None,
                        help="folder holding the Fashion-MNIST idx files (default: the library's search path)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on digits (smoke test)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: 2 when the machine has 2 cores or more, else 1)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    jobs = args.jobs or (2 if cores >= 2 else 1)
    threads = max(1, cores // jobs)

    if args.quick:
        data, fallback = ["data=digits"], None
    else:
        data, fallback = choose_data(args.data_root)
        if fallback is not None:
            print(f"Fashion-MNIST is not on disk, so the demo runs on scikit-learn's bundled digits instead. "
                  f"{DIGITS_NOTE} ({fallback})", flush=True)
    dataset = data[0].removeprefix("data=")
    # In parallel only the lens run (the longest) draws a progress bar, so the runs do not overwrite each other's line.
    overrides = {name: run_overrides(name, data=data, steps=args.steps, seed=args.seed, out=args.out, quick=args.quick,
                                     progress=jobs == 1 or name == LENS) for name in ORDER}
    load_start = os.getloadavg()
    start = time.perf_counter()
    print(f"=== rotation on {dataset}: clean, arrow without the lens, arrow with the lens; "
          f"{jobs} at a time, {threads} thread(s) each ===", flush=True)
    if jobs == 1:
        results = {name: train_one((overrides[name], threads)) for name in ORDER}
    else:
        with get_context("spawn").Pool(jobs) as pool:
            handles = {name: pool.apply_async(train_one, ((overrides[name], threads),)) for name in ORDER}
            results = {name: handles[name].get() for name in ORDER}
    elapsed = time.perf_counter() - start
    load_end = os.getloadavg()

    clean, arrow, lens = results[CLEAN], results[ARROW], results[LENS]
    rows = [
        {"model": "untrained backbone", "pretext_acc": None, "pretext_acc_clean": None,
         "probe_acc": clean["probe_untrained_acc"]},
        # The clean run's test images carry no arrow: its pretext accuracy is the clean-image one.
        {"model": CLEAN, "pretext_acc": None, "pretext_acc_clean": clean["pretext_acc"], "probe_acc": clean["probe_acc"]},
        *({"model": name, "pretext_acc": r["pretext_acc"], "pretext_acc_clean": r["pretext_acc_clean"],
           "probe_acc": r["probe_acc"]} for name, r in ((ARROW, arrow), (LENS, lens))),
    ]
    print(f"\nrotation on {dataset}, {args.steps} steps, n = 1 (seed {args.seed})")
    print("| model | pretext acc (arrow) | pretext acc on clean images | linear probe on clean test |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {pct(row['pretext_acc'])} | {pct(row['pretext_acc_clean'])} | {pct(row['probe_acc'])} |")

    figures = {"gain_over_untrained": points(clean["probe_acc"], clean["probe_untrained_acc"]),
               "arrow_cost": points(clean["probe_acc"], arrow["probe_acc"]),
               "lens_gain": points(lens["probe_acc"], arrow["probe_acc"]), "recovery": None}
    print(f"\nTraining on clean images moves the probe {figures['gain_over_untrained']:+.1f} points from the untrained "
          f"backbone ({pct(clean['probe_untrained_acc'])} -> {pct(clean['probe_acc'])}).")
    if figures["arrow_cost"] > 0:
        figures["recovery"] = figures["lens_gain"] / figures["arrow_cost"]
        print(f"The arrow cost the probe {figures['arrow_cost']:.1f} points ({pct(clean['probe_acc'])} -> "
              f"{pct(arrow['probe_acc'])}); the lens got back {figures['lens_gain']:+.1f} ({pct(lens['probe_acc'])}): "
              f"recovery (lens - arrow) / (clean - arrow) = {figures['recovery']:.0%}.")
    else:
        print(f"The arrow did not lower the probe in this run ({pct(clean['probe_acc'])} clean, {pct(arrow['probe_acc'])} "
              f"with the arrow), so there is nothing to recover; with the lens: {pct(lens['probe_acc'])}.")
    print(f"On the same test images without the arrow, rotation is predicted at {pct(lens['pretext_acc_clean'])} "
          f"with the lens and {pct(arrow['pretext_acc_clean'])} without it ({pct(clean['pretext_acc'])} when trained on "
          "clean images).")
    print(f"Edit per pixel inside/outside the arrow: {lens['edit_ratio']:.1f}x (mean |edit|); "
          f"the lens's edits: {lens.get('edit_png')}")
    if fallback is not None:
        print(f"On digits, not Fashion-MNIST: {DIGITS_NOTE}")
    print(f"n = 1 (seed {args.seed}): one run per row; over five seeds the benchmark's rotation rows vary "
          "(README, 'The shortcut benchmark').")
    print(f"total time: {elapsed:.0f} s wall, {jobs} run(s) at a time; load average (1 min) {load_start[0]:.2f} "
          f"before, {load_end[0]:.2f} after (the demo's own runs count in the latter)")

    summary = {
        "data": dataset, "fallback_reason": fallback, "n": 1, "seed": args.seed, "steps": args.steps,
        "rows": rows, "figures": figures, "edit_ratio": lens["edit_ratio"], "edit_png": lens.get("edit_png"),
        "lens_mode": lens["lens_mode"], "seconds": elapsed,
        "runs": {name: {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "overrides": overrides[name]}
                 for name, r in results.items()},
        "jobs": jobs, "threads_per_run": threads, "cpu_count": cores,
        "load_average": {"before": list(load_start), "after": list(load_end)},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
