"""Lens overhead: the library's training step with the lens, in every lens mode (``shortcutlens.adversary``),
over the same step without a lens, side by side in one run, on the same batch and model.

    OMP_NUM_THREADS=1 python experiments/bench_lens.py       # default ResNet-18 width 0.125, lens 8s2, 32 px, batch 128
    python experiments/bench_lens.py --memory-formats contiguous channels_last
    python experiments/bench_lens.py --backbone-widths 0.125 0.25 1 --lenses 8s2 4s1 8s1 --modes full

A lens is ``<width>s<stride>``: ``8s2`` is the default U-Net lens (width 8 on 2×2 pixel blocks). The
rotation task (one rotation per image) makes ``lens.mode=auto`` play ``random_wrong``.

Prints a Markdown table and writes experiments/results/bench_lens.json. Steps alternate between the
settings being compared (interleaved repeats, median time), so a noisy neighbour on the machine
slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def parse_lens(text: str) -> tuple[int, int]:
    """``"8s2"`` -> (width 8, stride 2); a bare ``"8"`` means stride 1."""
    width, _, stride = text.partition("s")
    return int(width), int(stride or 1)


def make_trainer(*, backbone_width: float, lens_width: int | None, mode: str, batch: int, device: torch.device,
                 lens_stride: int = 1, channels_last: bool = False, update_every: int = 1) -> Trainer:
    spec = {
        "data": {"name": "synthetic", "image_size": 32, "num_train": 4 * batch, "num_test": 16},
        "backbone": {"name": "resnet", "depth": 18, "width": backbone_width},
        "pretext": {"name": "rotation", "all_rotations": False},
        "lens": {"name": "unet", "width": lens_width, "stride": lens_stride} if lens_width else {"name": "none"},
        "shortcut": {"name": "arrow"},
    }
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=TrainerConfig(batch_size=batch, steps=10**6, warmup_steps=0, progress=False,
                                               channels_last=channels_last),
                   adversary=AdversaryConfig(mode=mode, update_every=update_every), probe=ProbeConfig(untrained=False),
                   run_dir=tempfile.mkdtemp(), device=device)


def time_steps(trainers: dict[str, Trainer], *, repeats: int, warmup: int, clock: str = "wall") -> dict[str, float]:
    """Seconds per step of each trainer, steps interleaved across trainers: the median step, or, for a lens
    that learns on every k-th step only (``lens.update_every=k``), the mean over one cycle of the per-phase
    medians (one step with the lens's update, k − 1 without). ``clock="process"`` counts this process's CPU
    time (with one thread: the step's compute, much less moved by other jobs on a shared CPU than the wall
    clock)."""
    now = time.process_time if clock == "process" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(warmup + repeats):
        for name, tr in trainers.items():
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t = now()
            tr.train_step(i)
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append((i, now() - t))
    out = {}
    for name, tr in trainers.items():
        k = tr.adv.update_every if tr.lens is not None else 1
        out[name] = statistics.fmean(statistics.median(t for i, t in times[name] if i % k == phase) for phase in range(k))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone-widths", nargs="*", type=float, default=[0.125])
    parser.add_argument("--lenses", nargs="*", default=["8s2"], help="<width>s<stride>, e.g. 8s2 (the default lens)")
    parser.add_argument("--modes", nargs="*", default=["full", "least_likely", "random_wrong", "entropy"])
    parser.add_argument("--memory-formats", nargs="*", default=["contiguous"], choices=["contiguous", "channels_last"],
                        help="trainer.channels_last=false / true (each compared with its own no-lens step)")
    parser.add_argument("--update-every", nargs="*", type=int, default=[1, 2],
                        help="lens.update_every values: the lens learns on every k-th step (k = 1: every step)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--clock", choices=["auto", "wall", "process"], default="auto",
                        help="auto: process CPU time on a CPU with one thread, wall clock otherwise")
    parser.add_argument("--out", default=str(RESULTS / "bench_lens.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    clock = args.clock
    if clock == "auto":
        clock = "process" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    rows = []
    for bw in args.backbone_widths:
        trainers = {}
        for fmt in args.memory_formats:
            cl = fmt == "channels_last"
            trainers[f"{fmt}/none/-/1"] = make_trainer(backbone_width=bw, lens_width=None, mode="full", batch=args.batch,
                                                     device=device, channels_last=cl)
            for lens in args.lenses:
                lw, ls = parse_lens(lens)
                for mode in args.modes:
                    for every in args.update_every:
                        trainers[f"{fmt}/{mode}/{lens}/{every}"] = make_trainer(
                            backbone_width=bw, lens_width=lw, lens_stride=ls, mode=mode, batch=args.batch, device=device,
                            channels_last=cl, update_every=every)
        med = time_steps(trainers, repeats=args.repeats, warmup=args.warmup, clock=clock)
        for name, sec in med.items():
            fmt, mode, lens, every = name.split("/")
            lw, ls = parse_lens(lens) if lens != "-" else (None, None)
            rows.append({"backbone_width": bw, "memory_format": fmt, "lens_width": lw, "lens_stride": ls,
                         "mode": mode if lw else "no lens", "update_every": int(every) if lw else None,
                         "step_ms": 1000 * sec, "ratio": sec / med[f"{fmt}/none/-/1"],
                         "images_per_s": args.batch / sec})
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    header = ("| backbone (ResNet-18 width) | memory format | lens mode | lens update every | lens width | lens stride | "
              "step (ms) | × no-lens step | images/s |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone_width']} | {r['memory_format']} | {r['mode']} | {r['update_every'] or '-'} | "
                     f"{r['lens_width'] or '-'} | {r['lens_stride'] or '-'} | {r['step_ms']:.0f} | {r['ratio']:.2f}× | "
                     f"{r['images_per_s']:.0f} |")
    md = "\n".join(lines)
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"device: {machine}; batch {args.batch} at 32 px; median of {args.repeats} interleaved steps ({clock} clock); "
          f"load average {load_before} -> {load_after}\n\n{md}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]) if argv is None else argv, "device": machine,
                               "torch": torch.__version__, "clock": clock, "load_average": {"before": load_before, "after": load_after},
                               "args": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
