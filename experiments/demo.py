"""The main job (``make demo``): does a pretext task latch onto a shortcut, and does the lens fix it?

On scikit-learn's bundled digits (no download) with the ``arrow`` shortcut drawn before rotation,
rotation prediction is trained twice — without and with the U-Net lens — and a table compares the
pretext accuracy and the linear-probe accuracy on clean test images, next to the probe of an
untrained backbone. The lens-edit grid (input / lensed / amplified |edit|) is written as a PNG.

    python experiments/demo.py                      # the two runs in parallel, one per CPU core
    python experiments/demo.py --steps 40 --quick   # the code path at tiny size (used by the tests)
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


def demo_overrides(*, lens: bool, steps: int, seed: int, run_dir: Path, quick: bool) -> list[str]:
    out = [
        "data=digits", "pretext=rotation", "pretext.all_rotations=false", "shortcut=arrow",
        "backbone.width=0.25", f"trainer.steps={steps}", "trainer.batch_size=64", "trainer.warmup_steps=10",
        f"trainer.log_every={max(1, min(25, steps // 4))}", f"trainer.image_every={steps}", f"trainer.ckpt_every={steps}",
        f"seed={seed}", f"run_dir={run_dir}", "device=auto",
    ]
    out += ["lens=unet", f"lens.width={4 if quick else 8}"] if lens else ["lens=none"]
    if quick:
        out += ["backbone.width=0.125", "probe.untrained=false"]
    return out


def train_one(job: tuple[list[str], int]) -> dict:
    """One training run from Hydra overrides, with ``threads`` torch threads (a worker process)."""
    overrides, threads = job
    torch.set_num_threads(threads)
    cfg = compose(overrides)
    return run(cfg, cfg["run_dir"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--quick", action="store_true", help="tiny widths, no untrained probe (smoke test)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: 2 when the machine has 2 cores or more, else 1)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    jobs = args.jobs or (2 if cores >= 2 else 1)

    names = ("no lens", "lens")
    overrides = {name: demo_overrides(lens=name == "lens", steps=args.steps, seed=args.seed,
                                      run_dir=args.out / name.replace(" ", "_"), quick=args.quick) for name in names}
    start = time.perf_counter()
    if jobs == 1:
        results = {}
        for name in names:
            print(f"\n=== rotation on digits + arrow shortcut, {name} ===", flush=True)
            results[name] = train_one((overrides[name], min(cores, 2)))
    else:
        # The two runs are independent: one per core halves the wall time on a 2-core machine. Only the
        # longer (lens) run draws a progress bar, so the two do not overwrite each other's line.
        print(f"=== rotation on digits + arrow shortcut: without and with the lens, {jobs} runs in parallel ===", flush=True)
        overrides["no lens"].append("trainer.progress=false")
        threads = max(1, cores // jobs)
        with get_context("spawn").Pool(jobs) as pool:
            handles = {name: pool.apply_async(train_one, ((overrides[name], threads),)) for name in names}
            results = {name: handles[name].get() for name in names}
    elapsed = time.perf_counter() - start

    base, lensed = results["no lens"], results["lens"]
    rows = [
        ("untrained backbone", "-", "-", base.get("probe_untrained_acc")),
        ("rotation, no lens", base["pretext_acc"], base["pretext_acc_clean"], base["probe_acc"]),
        ("rotation, lens", lensed["pretext_acc"], lensed["pretext_acc_clean"], lensed["probe_acc"]),
    ]
    fmt = lambda v: "-" if v in (None, "-") else f"{100 * v:.1f}%"
    print("\n| model | pretext acc (arrow) | pretext acc (clean) | linear probe (clean test) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {fmt(row[1])} | {fmt(row[2])} | {fmt(row[3])} |")
    print(f"\nedit inside/outside the arrow: {lensed.get('edit_ratio', float('nan')):.1f}x")
    print(f"lens edits: {lensed.get('edit_png')}")
    print(f"total time: {elapsed:.0f} s")
    summary = {"rows": [dict(zip(("model", "pretext_acc", "pretext_acc_clean", "probe_acc"), r)) for r in rows],
               "edit_ratio": lensed.get("edit_ratio"), "edit_png": lensed.get("edit_png"), "seconds": elapsed,
               "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
