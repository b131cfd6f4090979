"""Backbone performance: training throughput against the machine's matmul peak, and what activation
checkpointing saves.

    .venv/bin/python experiments/bench_backbones.py                 # ~2-3 min on 2 CPU cores
    .venv/bin/python experiments/bench_backbones.py --quick         # smoke run, seconds

1. Forward+backward images/s and achieved GFLOP/s (FLOPs counted by ``shortcutlens.flops``) for
   ViT-Ti/S (Zhai et al., CVPR 2022) and Mixer-S (Tolstikhin et al., NeurIPS 2021) at small
   resolution, next to the peak fp32 matmul GFLOP/s measured in the same run (the ratio is the
   figure; element-wise work is not counted, so 100% is out of reach).
2. ViT-B/16, 224 px, batch 8, with and without activation checkpointing, each in a fresh process:
   (a) the bytes the autograd graph keeps between forward and backward (``saved_tensors_hooks``;
   parameters excluded) and (b) the peak memory of the step above parameters + gradients: the
   allocator's peak on CUDA, on the CPU the peak resident set (``VmHWM``, reset after the model is
   built) with glibc told to return every block above 64 KiB to the OS when freed.

Prints Markdown tables and writes ``experiments/results/bench_backbones.json`` with the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shortcutlens import create_backbone
from shortcutlens.flops import count_step_flops

MODELS = [  # (label, backbone name, kwargs)
    ("ViT-Ti/4", "vit", {"variant": "Ti/4"}),
    ("ViT-S/4", "vit", {"variant": "S/4"}),
    ("Mixer-S/4", "mixer", {"variant": "S/4"}),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_gflops(device: torch.device, *, n: int, seconds: float) -> float:
    """Best observed GFLOP/s of an ``n × n`` fp32 matmul (2n³ FLOPs) over ~``seconds``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def throughput(label: str, name: str, kw: dict, *, device: torch.device, img: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_backbone(name, img_size=img, in_chans=3, **kw).to(device).train()
    x = torch.randn(batch, 3, img, img, device=device)
    flops = count_step_flops(model, x)  # also a first, untimed step
    times = []
    for i in range(steps + 1):  # one more warm-up step
        sync(device)
        t = time.perf_counter()
        model(x).float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
        sync(device)
        if i >= 1:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {
        "model": label, "backbone": name, "kwargs": kw, "img_size": img, "batch": batch, "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_step": flops.total, "gflop_per_image": flops.per_image / 1e9,
        "step_s_median": step, "step_s_all": times,
        "images_per_s": batch / step, "achieved_gflops": flops.total / step / 1e9,
    }


# ------------------------------------------------------------------ memory (one process per mode)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets the peak resident set size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(checkpointing: bool, *, device: torch.device, img: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = create_backbone("vit", variant="B/16", img_size=img, grad_checkpointing=checkpointing).to(device).train()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    x = torch.randn(batch, 3, img, img, device=device)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.device.type != "meta" and storage.data_ptr() not in param_ptrs:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    out: dict = {"checkpointing": checkpointing}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
        out["peak_reset"] = _reset_peak_rss()
    t = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).float().pow(2).mean()
    out["saved_activation_bytes"] = sum(saved.values())
    loss.backward()
    sync(device)
    out["step_s"] = time.perf_counter() - t
    if device.type == "cuda":
        out["peak_above_params_grads_bytes"] = torch.cuda.max_memory_allocated(device) - base
        out["measure"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_above_params_grads_bytes"] = _peak_rss_bytes() - base
        out["measure"] = "peak RSS (VmHWM) minus RSS with parameters and gradients allocated"
    out["params_and_grads_bytes"] = 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    return out


def memory(device: torch.device, *, img: int, batch: int, threads: int) -> list[dict]:
    results = []
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--memory-child", mode, "--device", device.type, "--mem-img", str(img),
               "--mem-batch", str(batch), "--threads", str(threads)]
        # glibc keeps freed heap chunks resident and raises its mmap threshold as large tensors are
        # freed, so RSS would track fragmentation, not live tensors; a fixed 64 KiB threshold returns
        # every tensor above it to the OS on free.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


# ------------------------------------------------------------------ report


def tables(result: dict) -> str:
    peak = result["peak_matmul_gflops"]
    lines = [(f"Peak fp32 matmul ({result['matmul_n']}²): **{peak:.1f} GFLOP/s** on {result['device_name']}, "
             f"{result['threads']} threads"), "",
             "| model | px | batch | params | GFLOP/image (fwd+bwd) | images/s | achieved GFLOP/s | % of matmul peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["throughput"]:
        lines.append(f"| {r['model']} | {r['img_size']} | {r['batch']} | {r['params'] / 1e6:.1f}M | "
                     f"{r['gflop_per_image']:.2f} | {r['images_per_s']:.1f} | {r['achieved_gflops']:.1f} | "
                     f"{100 * r['achieved_gflops'] / peak:.0f}% |")
    mem = result["memory"]
    if mem:
        off, on = mem
        lines += ["", (f"ViT-B/16, {result['config']['mem_img']} px, batch {result['config']['mem_batch']}, one "
                  "forward+backward (MiB):"), "",
                  "| activation checkpointing | saved activations | peak above params+grads | step s |",
                  "|---|---|---|---|"]
        for r in mem:
            lines.append(f"| {'on' if r['checkpointing'] else 'off'} | {r['saved_activation_bytes'] / 2**20:.0f} | "
                         f"{r['peak_above_params_grads_bytes'] / 2**20:.0f} | {r['step_s']:.1f} |")
        cut_saved = 1 - on["saved_activation_bytes"] / off["saved_activation_bytes"]
        cut_peak = 1 - on["peak_above_params_grads_bytes"] / max(1, off["peak_above_params_grads_bytes"])
        lines.append(f"| **cut** | **{100 * cut_saved:.0f}%** | **{100 * cut_peak:.0f}%** | "
                     f"×{on['step_s'] / off['step_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    # 1 thread by default: on a shared 2-core machine OpenMP threads that wait for each other make
    # element-wise kernels ~20x slower (measured: a 1.5 MB copy 0.16 ms on 1 thread, 2.8 ms on 2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--img", type=int, default=32, help="image size of the throughput runs (patch 4)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model (after 2 untimed ones)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--mem-img", type=int, default=224)
    p.add_argument("--mem-batch", type=int, default=8)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_backbones.json"))
    p.add_argument("--memory-child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child == "on", device=device, img=args.mem_img, batch=args.mem_batch)))
        return
    if args.quick:
        args.batch, args.steps, args.matmul_n, args.mem_img, args.mem_batch = 4, 1, 512, 64, 2
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    result: dict = {"device": device.type, "device_name": device_name, "threads": args.threads,
                    "torch": torch.__version__, "loadavg_at_start": os.getloadavg(), "config": vars(args)}
    result["peak_matmul_gflops"] = peak_matmul_gflops(device, n=args.matmul_n, seconds=1.0 if args.quick else 4.0)
    result["matmul_n"] = args.matmul_n
    result["throughput"] = [throughput(label, name, kw, device=device, img=args.img, batch=args.batch, steps=args.steps)
                            for label, name, kw in MODELS]
    # the matmul peak again at the end: the machine is shared, so report the better of the two
    result["peak_matmul_gflops"] = max(result["peak_matmul_gflops"],
                                       peak_matmul_gflops(device, n=args.matmul_n, seconds=1.0 if args.quick else 4.0))
    result["memory"] = [] if args.no_memory else memory(device, img=args.mem_img, batch=args.mem_batch,
                                                       threads=args.threads)
    result["loadavg_at_end"] = os.getloadavg()
    text = tables(result)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["table"] = text
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
