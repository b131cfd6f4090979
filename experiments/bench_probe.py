"""Fast feedback: how long the end of a run and ``shortcutlens-probe``'s default evaluators take on the CPU.

The README's main run (``shortcutlens-train data=fashion_mnist pretext=rotation lens=unet shortcut=arrow``,
the default backbone, ResNet-18 at width 0.125) on Fashion-MNIST, at its current defaults:

1. **untrained probe** — ``probe.untrained``: the linear probe of the initial weights, before training;
2. **end-of-run probe** — ``Trainer.run_probe``: features of ``probe.max_train`` clean train images and of
   the 10,000 test images, one L-BFGS fit;
3. **end of run** — ``Trainer.finish``: the probe, the three pretext accuracies (with the shortcut, clean,
   through the lens; 2,048 test images, all four rotations) and the lens diagnostics, as ``metrics.json``
   gets them;
4. **shortcutlens-probe** — the command with its default evaluators (``linear``, ``fewshot``, ``knn``) on
   the run's checkpoint, in a fresh process, no feature cache: wall time and each evaluator's seconds.

The cost does not depend on the weights, so the run is not trained (0 steps); ``--compare`` adds (2) with
the previous defaults (all 54,000 train images, batches of 512, a float64 solver), on the same weights.

    .venv/bin/python experiments/bench_probe.py                 # 1 thread, the README's numbers
    .venv/bin/python experiments/bench_probe.py --compare       # + the previous defaults (about 2 min more)
    .venv/bin/python experiments/bench_probe.py --threads 2

Prints a Markdown table and writes ``experiments/results/bench_probe.json``: each step's CPU time (what it
costs on a core of its own) and wall time, and the machine's load average before and after (it may be
shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_probe.json"
RUN = ["data=fashion_mnist", "pretext=rotation", "lens=unet", "shortcut=arrow", "trainer.steps=1",
       "trainer.warmup_steps=0", "trainer.progress=false", "device=cpu", "seed=0"]


def build_trainer(run_dir: Path):
    """The Trainer ``shortcutlens-train <RUN>`` builds (same config tree, same components)."""
    from shortcutlens.build import build_components, build_data
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import lens_spec
    from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
    from shortcutlens.train.loop import Trainer

    cfg = compose([*RUN, f"run_dir={run_dir}"])
    run_dir.mkdir(parents=True, exist_ok=True)
    module, game = lens_spec(cfg["lens"])
    spec = {"data": cfg["data"], "backbone": cfg["backbone"], "pretext": cfg["pretext"], "lens": module,
            "shortcut": cfg["shortcut"]}
    torch.manual_seed(cfg["seed"])
    data = build_data(spec, seed=cfg["seed"])
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=TrainerConfig(**cfg["trainer"]), adversary=AdversaryConfig(**game),
                   probe=ProbeConfig(**cfg["probe"]), run_dir=run_dir, device=torch.device("cpu"), seed=cfg["seed"],
                   spec=spec, config=cfg)


def timed(fn):
    """``(fn(), (wall seconds, CPU seconds of this process))``: on a shared machine the CPU time is what the
    step costs on its own core; the wall time also holds the waiting for one."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def probe_command(checkpoint: Path, out: Path, threads: int) -> dict:
    """``shortcutlens-probe checkpoint=<run>`` with the default evaluators, in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "shortcutlens.cli.probe", f"checkpoint={checkpoint}", f"run_dir={out}",
               "cache=false", "progress=false", "device=cpu"]
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    probe = json.loads((out / "probe.json").read_text())
    return {"command": "shortcutlens-probe " + " ".join(command[3:]), "wall_s": wall, "cpu_s": cpu,
            "evaluators": {name: round(e["seconds"], 1) for name, e in probe["evaluators"].items()},
            "linear_top1": probe["evaluators"]["linear"]["metrics"].get("linear/raw/pooled/top1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also time the previous probe defaults")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        trainer, build_s = timed(lambda: build_trainer(run_dir))
        rows.append(("build (data, models)", build_s, trainer.data.summary()))
        probe_cfg = trainer.probe_cfg
        untrained, s = timed(lambda: trainer.run_probe(desc="probe (untrained)"))
        rows.append(("untrained probe", s, (f"top-1 {untrained['accuracy']:.4f} on {untrained['train_images']} + "
                                            f"{untrained['test_images']} images")))
        if args.compare:
            trainer.probe_cfg = replace(probe_cfg, max_train=0, batch_size=512, precision="float64")
            before, s = timed(trainer.run_probe)
            rows.append(("end-of-run probe, previous defaults", s,
                         f"top-1 {before['accuracy']:.4f} on {before['train_images']} + {before['test_images']} images"))
            trainer.probe_cfg = probe_cfg
        probe, s = timed(trainer.run_probe)
        rows.append(("end-of-run probe", s, (f"top-1 {probe['accuracy']:.4f} on {probe['train_images']} + "
                                             f"{probe['test_images']} images")))
        results, s = timed(trainer.finish)
        rows.append(("end of run (finish: probe + pretext accuracies + lens diagnostics)", s,
                     f"pretext acc {results['pretext_acc']:.3f}"))
        trainer.save(run_dir / "checkpoints" / "latest.pt")
        command = probe_command(run_dir, Path(tmp) / "probe", args.threads)
        rows.append(("shortcutlens-probe, default evaluators (fresh process, no cache)",
                     (command["wall_s"], command["cpu_s"]),
                     ", ".join(f"{k} {v:.1f} s" for k, v in command["evaluators"].items())))
    load_after = os.getloadavg()

    print(f"\n{args.threads} thread(s); load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)\n")
    print("| step | CPU s | wall s | notes |\n|---|---|---|---|")
    for name, (wall, cpu), note in rows:
        print(f"| {name} | {cpu:.1f} | {wall:.1f} | {note} |")
    payload = {"run": "shortcutlens-train " + " ".join(RUN), "threads": args.threads,
               "probe_settings": {k: getattr(probe_cfg, k) for k in ("max_train", "batch_size", "precision", "max_iter")},
               "rows": [{"step": n, "wall_s": round(w, 2), "cpu_s": round(c, 2), "notes": t} for n, (w, c), t in rows],
               "probe_command": command, "load_average_before": load_before, "load_average_after": load_after,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2))
    print(f"\nresults: {RESULTS}")


if __name__ == "__main__":
    main()
