"""Training speed, side by side in one run: the library's step against a hand-written loop, the lens's
cost per pretext, the data pipeline against the step, channels_last and torch.compile.

    python experiments/bench_train.py              # GPU: batch 256, every pretext, compile included
    python experiments/bench_train.py --quick      # CPU: batch 64, 3 timed steps, 1 thread, ViT: step and lens only
    python experiments/bench_train.py --models "vit B/16" --image-size 224 --batch 128 --groups step lens/rotation --mfu
                                                   # GPU: ViT-B/16 at 224 px, images/s and bf16 model-FLOPs utilisation

For the default ResNet (ResNet-18 at width 0.125, the config tree's default) and ViT-S/4, both at 32 px
with three-channel synthetic images. Each group of settings is timed by interleaved steps (step i of
every setting, then step i+1 …) and reports medians, so a noisy neighbour slows every setting alike.
Prints a Markdown table and writes experiments/results/bench_train.json with the machine, its load
and the arguments.

Groups (the ratio is step time over the group's first row):
- ``step``: a minimal PyTorch loop vs ``Trainer.train_step`` over the same model, batches and optimizer
  (no lens, one random rotation per image; aim: the library at ≥ 0.97× the hand loop's images/s);
- ``lens/<pretext>``: step time with the lens (``full``, ``full+feed_raw``, ``least_likely``) over the
  step without it (aim ≤ 1.3× for ``full``, whose lensed batch is the only batch);
- ``data``: loading + device augmentation (flip, crop) + pretext views alone, vs the step that
  consumes them (aim: pipeline ≥ 5× faster, i.e. ratio ≤ 0.2);
- ``layout``: channels_last and ``torch.compile`` (of the feature extractor and the lens) on and off.

``--mfu`` adds each setting's counted FLOPs per step (``torch.utils.flop_counter`` over one eager step:
matrix multiplications, convolutions and attention, forward and backward) and the model-FLOPs
utilisation = counted FLOP/s over the device's peak dense bf16 FLOP/s (``PEAK_BF16_TFLOPS`` or
``--peak-tflops``), as in PaLM's MFU (Chowdhery et al. 2022).
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
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pretexts.rotation import rotate
from shortcutlens.build import build_components, build_data
from shortcutlens.cli.common import compose
from shortcutlens.cli.train import lens_spec
from shortcutlens.data.loader import to_float
from shortcutlens.flops import flop_counter
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"resnet (default)": ["backbone=resnet"], "vit S/4": ["backbone=vit", "backbone.variant=S/4"],
          "vit B/16": ["backbone=vit", "backbone.variant=B/16"]}  # B/16: for --image-size 224 on a GPU
# Dense bf16 peak (TFLOP/s, no sparsity) from the vendors' data sheets; first match in the device name wins.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("GH200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
                    ("H800", 989.4), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
                    ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2), ("B200", 2250.0))
PRETEXTS = ("rotation", "exemplar", "relative_location", "jigsaw", "contrastive")
AUGMENT = ["flip", "crop"]


def make_trainer(model: str, *, batch: int, device: torch.device, pretext: str = "rotation", lens: str | None = None,
                 feed_raw: bool = False, augment: list[str] | None = None, channels_last: bool = False,
                 compile: bool = False, image_size: int = 32) -> Trainer:
    """A Trainer built from the config tree's defaults, as ``shortcutlens-train`` would build it."""
    overrides = [*MODELS[model], f"pretext={pretext}", f"lens={'unet' if lens else 'none'}", "data=synthetic"]
    cfg = compose(overrides)
    cfg["data"].update(image_size=image_size, channels=3, num_train=8 * batch, num_test=16)
    if pretext == "rotation":
        cfg["pretext"]["all_rotations"] = False  # one view per image: `batch` images per step everywhere
    module, game = lens_spec(cfg["lens"])
    if lens:
        game.update(mode=lens, feed_raw=feed_raw)
    spec = {k: cfg[k] for k in ("data", "backbone", "pretext", "shortcut")} | {"lens": module}
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    settings = TrainerConfig(**{**cfg["trainer"], "batch_size": batch, "steps": 10**6, "warmup_steps": 0,
                                "progress": False, "augment": augment or [], "channels_last": channels_last,
                                "compile": compile})
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=settings, adversary=AdversaryConfig(**game), probe=ProbeConfig(untrained=False),
                   run_dir=tempfile.mkdtemp(), device=device)


class HandLoop:
    """What a user would write: the same backbone, head, optimizer and batches, nothing else."""

    def __init__(self, trainer: Trainer) -> None:  # a fresh Trainer, used only for its parts
        self.backbone, self.head = trainer.backbone, trainer.pretext.head
        params = [*self.backbone.parameters(), *self.head.parameters()]
        cfg = trainer.cfg
        self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
        self.images = trainer.loader.images
        self.order = torch.randperm(len(self.images), device=self.images.device)
        self.batch, self.device, self.amp = cfg.batch_size, trainer.device, trainer.amp

    def train_step(self, step: int) -> None:
        start = step * self.batch % (len(self.order) - self.batch + 1)
        x = self.images[self.order[start : start + self.batch]].to(self.device, non_blocking=True).float().div_(255)
        k = torch.randint(0, 4, (x.shape[0],), device=self.device)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = F.cross_entropy(self.head(self.backbone(rotate(x, k))).float(), k)
        loss.backward()
        self.opt.step()


class Pipeline:
    """The data side of ``Trainer.train_step`` alone: batch, float, shortcut, augment, views."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer

    def train_step(self, step: int) -> None:
        x, _ = self.t.loader.batch(step)
        x = to_float(x)
        if self.t.shortcut is not None:
            x = self.t.shortcut(x)
        self.t.pretext.views(self.t.augment(x))


def time_group(settings: dict[str, object], *, repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each setting, steps interleaved across settings."""
    times: dict[str, list[float]] = {k: [] for k in settings}
    for i in range(warmup + repeats):
        for name, s in settings.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            s.train_step(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def groups_for(model: str, args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Callable[[], object]]]:
    """Group name -> {setting: factory}; factories are called just before their group is timed."""
    quick_vit = args.quick and model.startswith("vit")

    def mk(**kw: object) -> Callable[[], Trainer]:
        def make() -> Trainer:
            return make_trainer(model, batch=args.batch, device=device, image_size=args.image_size, **kw)

        def eager() -> Trainer:  # the same setting uncompiled: FLOPs are counted on eager steps
            return make_trainer(model, batch=args.batch, device=device, image_size=args.image_size, **{**kw, "compile": False})

        make.eager = eager  # type: ignore[attr-defined]
        return make

    def hand() -> HandLoop:
        return HandLoop(make_trainer(model, batch=args.batch, device=device, image_size=args.image_size))

    hand.eager = hand  # type: ignore[attr-defined]

    groups: dict[str, dict[str, Callable[[], object]]] = {"step": {"hand loop": hand, "library": mk()}}
    pretexts = ["rotation"] if model.startswith("vit") else args.pretexts  # patch tasks' tiles: not /4
    for pretext in pretexts:
        g = {"no lens": mk(pretext=pretext), "full": mk(pretext=pretext, lens="full"),
             "full+feed_raw": mk(pretext=pretext, lens="full", feed_raw=True)}
        if pretext in ("rotation", "relative_location", "jigsaw"):  # classification pretexts
            g["least_likely"] = mk(pretext=pretext, lens="least_likely")
        groups[f"lens/{pretext}"] = g
    if quick_vit:
        return groups

    def pipeline() -> Pipeline:
        return Pipeline(make_trainer(model, batch=args.batch, device=device, augment=AUGMENT, image_size=args.image_size))

    groups["data"] = {"train step": mk(augment=AUGMENT), "pipeline alone": pipeline}
    layout = {"eager": mk(), "channels_last": mk(channels_last=True)}
    if args.compile:
        layout |= {"compile": mk(compile=True), "compile+lens full": mk(compile=True, lens="full"),
                   "eager+lens full": mk(lens="full")}
    groups["layout"] = layout
    return groups


AIMS = {("step", "library"): "≤ 1.03× (≥ 0.97× the images/s)", ("data", "pipeline alone"): "≤ 0.2× (5× faster)",
        **{(f"lens/{p}", "full"): "≤ 1.3×" for p in PRETEXTS}}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """Peak dense bf16 TFLOP/s of ``device``: ``given``, else looked up by name (None on a CPU or unknown GPU)."""
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def counted_flops(factory: Callable[[], object]) -> int | None:
    """FLOPs of one eager training step of the setting ``factory`` builds (None for the data pipeline)."""
    eager = getattr(factory, "eager", None)
    if eager is None:
        return None
    setting = eager()
    setting.train_step(0)  # optimizer state and lazy buffers first: count a steady-state step
    with flop_counter() as counter:
        setting.train_step(1)
    del setting
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU: batch 64, 3 timed steps, one thread, less ViT")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--pretexts", nargs="*", default=list(PRETEXTS))
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default experiments/results/bench_train.json)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the synthetic images (224 for ViT-B/16)")
    parser.add_argument("--groups", nargs="*", default=None, help="only these groups (step, lens/<pretext>, data, layout)")
    parser.add_argument("--mfu", action="store_true", help="count FLOPs per step; model-FLOPs utilisation on a GPU")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by GPU name)")
    args = parser.parse_args(argv)
    for model in args.models:
        if model not in MODELS:
            parser.error(f"unknown model '{model}'. Valid models: {', '.join(MODELS)}")
    args.batch = args.batch or (64 if args.quick else 256)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if args.quick:  # share the machine: one intra-op thread, one inductor compile worker
        torch.set_num_threads(1)
        os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_tflops(device, args.peak_tflops)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for model in args.models:
        for group, factories in groups_for(model, args, device).items():
            if args.groups is not None and group not in args.groups:
                continue
            flops = {name: counted_flops(make) for name, make in factories.items()} if args.mfu else {}
            settings = {name: make() for name, make in factories.items()}
            if group == "layout" and args.compile:  # compile before timing: warm-up steps would not cover it
                for name, s in settings.items():
                    t = time.perf_counter()
                    s.train_step(0)
                    print(f"  {model} {name}: first step {time.perf_counter() - t:.1f} s", flush=True)
            med = time_group(settings, repeats=args.repeats, warmup=args.warmup, device=device)
            base = next(iter(med.values()))
            for name, sec in med.items():
                images = args.batch
                row = {"model": model, "group": group, "setting": name, "step_ms": 1000 * sec,
                       "images_per_s": images / sec, "ratio_time": sec / base, "aim": AIMS.get((group, name), "")}
                if flops.get(name):
                    row["gflop_per_step"] = flops[name] / 1e9
                    row["achieved_tflops"] = flops[name] / sec / 1e12
                    row["mfu"] = row["achieved_tflops"] / peak if peak else None
                rows.append(row)
            print(f"{model} {group}: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in med.items()), flush=True)
    lines = ["| model | group | setting | step (ms) | images/s | × first row (time) | aim |", "|---|---|---|---|---|---|---|"]
    if args.mfu:
        lines = [lines[0] + " TFLOP/s | MFU (bf16) |", lines[1] + "---|---|"]
    for r in rows:
        line = (f"| {r['model']} | {r['group']} | {r['setting']} | {r['step_ms']:.0f} | {r['images_per_s']:.0f} | "
                f"{r['ratio_time']:.2f}× | {r['aim']} |")
        if args.mfu:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
            line += f" {r['achieved_tflops']:.3g} | {mfu} |" if "achieved_tflops" in r else " - | - |"
        lines.append(line)
    md = "\n".join(lines)
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)")
    load_after = os.getloadavg()
    print(f"\ndevice: {machine}; torch {torch.__version__}; batch {args.batch} at {args.image_size} px; "
          f"peak bf16 {peak or '?'} TFLOP/s; median of {args.repeats} "
          f"interleaved steps; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"{time.perf_counter() - started:.0f} s\n\n{md}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python experiments/bench_train.py", *(f"'{a}'" if " " in a else a for a in (
        sys.argv[1:] if argv is None else argv))])
    out = {"device": machine, "torch": torch.__version__, "load_average": {"before": load_before, "after": load_after},
           "peak_bf16_tflops": peak, "args": vars(args), "command": command, "rows": rows}
    path = args.out or RESULTS / "bench_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
