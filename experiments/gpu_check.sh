#!/usr/bin/env bash
# The GPU path, proved on one CUDA GPU in at most 10 minutes (each stage has its own time limit):
#
#   1. no_sync      the training step never waits for the device: tests/test_no_sync.py's cases on CUDA,
#                   counted two ways (the test's patched read-back methods, and
#                   torch.cuda.set_sync_debug_mode("error"), which raises on any synchronising CUDA call)
#   2. pinned       the pinned-buffer loader (a dataset too large to live on the GPU) delivers exactly the
#                   CPU path's batches, across epochs and ranks, and how fast each path is
#   3. bench_train  ViT-B/16 at 224 px, batch 256, bf16: images/s and model-FLOPs utilisation (aim >= 45%),
#                   the library step against a hand-written loop, and the lens's cost
#   4. bench_lens   lens overhead at ResNet-18 width 1 (the GPU-sized backbone), 32 px, batch 256
#   5. bench_train_compile   ViT-B/16 as in 3: eager vs channels_last vs torch.compile (last: compiling
#                   takes minutes on a fresh machine, and the figures above do not depend on it)
#
# Usage:   bash experiments/gpu_check.sh [OUT_DIR]     (default experiments/results/gpu_check)
# Writes:  OUT_DIR/{no_sync,pinned_loader,bench_train_vitb16,bench_train_vitb16_compile,gpu_check}.json,
#          OUT_DIR/bench_lens/bench_lens.json
#          and OUT_DIR/<stage>.log; gpu_check.json says which stages passed, failed or ran out of time.
# Without CUDA it says so and exits 0 having run nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
OUT=${1:-experiments/results/gpu_check}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: skipped, no CUDA device here (torch.cuda.is_available() is False); run it on a machine with a GPU"
    exit 0
fi
mkdir -p "$OUT"
export GPU_CHECK_OUT="$OUT" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
declare -A STATUS SECONDS_TAKEN

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run under a time limit, log to OUT/NAME.log, record the outcome
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (limit ${limit} s)"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    SECONDS_TAKEN[$name]=$(( $(date +%s) - start ))
    case $rc in
        0) STATUS[$name]=ok ;;
        124|137) STATUS[$name]="timed out after ${limit} s" ;;
        *) STATUS[$name]="failed (exit $rc)" ;;
    esac
    echo "== $name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]} s"
}

stage no_sync 75 "$PY" - <<'PY'
"""tests/test_no_sync.py's cases, on CUDA. The loader's once-per-epoch upload of the shuffled order is a
synchronous copy by design, so the first batch is fetched before counting starts."""
import json
import os
import traceback

import pytest
import torch

import test_no_sync as t
from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer


def make_trainer(run_dir, lens, settings):
    game = {k: v for k, v in (lens or {}).items() if k in ("mode", "feed_raw", "rec_weight")}
    spec = {"data": {"name": "synthetic", "image_size": 32, "channels": 3, "num_train": 512, "num_test": 16},
            "backbone": {"name": "resnet", "depth": 18, "width": 0.25},
            "pretext": {"name": "rotation", "all_rotations": False},
            "lens": {"name": "unet", "width": 8, "stride": 2, "constraint": (lens or {}).get("constraint", "penalty")}
            if lens else {"name": "none"},
            "shortcut": {"name": "arrow"}}
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=TrainerConfig(batch_size=64, steps=100, warmup_steps=2, progress=False, **settings),
                   adversary=AdversaryConfig(**game), probe=ProbeConfig(untrained=False), run_dir=run_dir,
                   device=torch.device("cuda"))


results, failed = {}, False
for case in sorted(t.CASES):
    lens, settings = t.CASES[case]
    trainer = make_trainer(f"/tmp/gpu_check_no_sync_{os.getpid()}", lens, settings)
    trainer.loader.batch(0)
    mp = pytest.MonkeyPatch()
    counter = t.SyncCounter(mp, trainer)
    sync_error = None
    try:
        torch.cuda.set_sync_debug_mode("error")
        counter.steps(0, 3)  # the first steps create optimizer state: they must not sync either
    except RuntimeError as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if "shortcutlens" in f.filename or "pretexts" in f.filename]
        where = f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"
        sync_error = f"{str(err).splitlines()[0]} at {where}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
        mp.undo()
    torch.cuda.synchronize()
    results[case] = {"read_backs": [f"{name} at {where}" for name, where in counter.calls], "cuda_sync_error": sync_error}
    ok = not counter.calls and sync_error is None
    failed |= not ok
    print(f"{case:24s} {'ok' if ok else 'SYNCS'} {'' if ok else results[case]}")
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": results, "passed": not failed}
with open(os.path.join(os.environ["GPU_CHECK_OUT"], "no_sync.json"), "w") as f:
    json.dump(out, f, indent=2)
raise SystemExit(1 if failed else 0)
PY

stage pinned_loader 45 "$PY" - <<'PY'
"""The pinned-buffer path (dataset kept in pinned host memory, batches gathered into two pinned buffers and
copied asynchronously) against the plain CPU path: the same images and labels for every step."""
import json
import os
import time

import torch

from shortcutlens.data import loader as loader_module
from shortcutlens.data.base import Split

g = torch.Generator().manual_seed(0)
split = Split(torch.randint(0, 256, (2000, 3, 64, 64), dtype=torch.uint8, generator=g), torch.randint(0, 10, (2000,), generator=g))
loader_module.DEVICE_RESIDENT_BYTES = 0  # this small set takes the path of a set too large for the GPU
results, failed = {}, False
for rank, world in ((0, 1), (1, 2)):
    cpu = loader_module.BatchLoader(split, batch_size=128, seed=3, device="cpu", rank=rank, world_size=world)
    gpu = loader_module.BatchLoader(split, batch_size=128, seed=3, device="cuda", rank=rank, world_size=world)
    assert gpu.images.is_pinned(), "the loader did not take the pinned-buffer path"
    steps = 3 * gpu.steps_per_epoch + 1  # across epoch boundaries
    held = [gpu.batch(s) for s in range(steps)]  # kept on the device while the two buffers are reused
    torch.cuda.synchronize()
    mismatched = [s for s, (x, y) in enumerate(held)
                  if not (torch.equal(x.cpu(), cpu.batch(s)[0]) and torch.equal(y.cpu(), cpu.batch(s)[1]))]
    timing = {}
    for name, ld in (("pinned buffers", gpu), ("pageable copy", None)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for s in range(steps):
            if ld is not None:
                x, _ = ld.batch(s)
            else:  # what the loader would do without pinning: gather on the host, copy from pageable memory
                x, _ = cpu.batch(s)
                x = x.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        timing[name] = steps * 128 / (time.perf_counter() - start)
    key = f"rank {rank} of {world}"
    results[key] = {"steps": steps, "mismatched_steps": mismatched, "images_per_s": timing}
    failed |= bool(mismatched)
    print(f"{key}: {steps} steps, {'identical' if not mismatched else f'MISMATCH at {mismatched}'}; "
          + ", ".join(f"{k} {v:,.0f} images/s" for k, v in timing.items()))
with open(os.path.join(os.environ["GPU_CHECK_OUT"], "pinned_loader.json"), "w") as f:
    json.dump({"device": torch.cuda.get_device_name(), "results": results, "passed": not failed}, f, indent=2)
raise SystemExit(1 if failed else 0)
PY

stage bench_train 150 "$PY" experiments/bench_train.py --models "vit B/16" --image-size 224 --batch 256 \
    --groups step lens/rotation --mfu --out "$OUT/bench_train_vitb16.json"

stage bench_lens 90 "$PY" -c "
import sys
from pathlib import Path
sys.path.insert(0, 'experiments')
import bench_lens
bench_lens.RESULTS = Path('$OUT') / 'bench_lens'  # not over the committed CPU figures
bench_lens.main(['--backbone-widths', '1', '--lenses', '8s2', '32s2', '32s1', '--modes', 'full', 'random_wrong',
                 '--batch', '256', '--repeats', '10'])
"

stage bench_train_compile 220 "$PY" experiments/bench_train.py --models "vit B/16" --image-size 224 --batch 256 \
    --groups layout --mfu --out "$OUT/bench_train_vitb16_compile.json"

summary=$(for name in no_sync pinned_loader bench_train bench_lens bench_train_compile; do
    printf '%s\t%s\t%s\n' "$name" "${STATUS[$name]:-not run}" "${SECONDS_TAKEN[$name]:-0}"; done)
"$PY" - "$OUT" <<PY
import json, sys
rows = [line.split("\t") for line in """$summary""".strip().splitlines()]
stages = {name: {"status": status, "seconds": int(sec)} for name, status, sec in rows}
out = {"stages": stages, "passed": all(s["status"] == "ok" for s in stages.values())}
with open(f"{sys.argv[1]}/gpu_check.json", "w") as f:
    json.dump(out, f, indent=2)
print(json.dumps(out, indent=2))
raise SystemExit(0 if out["passed"] else 1)
PY
