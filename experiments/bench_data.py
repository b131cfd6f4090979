"""Decode throughput of a streamed image folder: images per second with 0, 1 and 2 worker processes.

    python experiments/bench_data.py                              # 384 JPEGs of 256 px decoded to 64 px
    python experiments/bench_data.py --workers 0 1 2 --size 224 --format png

Writes a folder of random-content images (photographs compress worse than noise-free colour fields, so
the content is smooth noise: a JPEG of realistic size) into a temporary directory, then streams its
training split through ``BatchLoader`` exactly as training does (``data.stream=true``) and times
``--steps`` batches after ``--warmup`` batches (worker start-up and the first prefetch are left out).
``workers=0`` decodes in the training process. Prints a Markdown table and writes
experiments/results/bench_data.json.

On a 2-core machine shared with other jobs, two workers cannot beat two cores: the number to read is
whether one worker keeps up with the training step, which decodes while the step computes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shortcutlens.data import create_dataset
from shortcutlens.data.loader import BatchLoader

RESULTS = Path(__file__).resolve().parent / "results"


def write_folder(root: Path, *, images: int, side: int, fmt: str, classes: int = 4, seed: int = 0) -> int:
    """``images`` files of ``side`` px under ``root/<class>/``; returns the bytes written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    total = 0
    for i in range(images):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(side // 16, side // 16, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
        noise = rng.integers(-12, 13, size=(side, side, 3))
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        path = folder / f"{i:06d}.{fmt}"
        im.save(path, quality=90) if fmt == "jpg" else im.save(path)
        total += path.stat().st_size
    return total


def measure(root: Path, *, workers: int, image_size: int, batch: int, steps: int, warmup: int) -> dict:
    data = create_dataset("imagefolder", root=str(root), image_size=image_size, stream="true", workers=workers,
                          val_fraction=0.0, test_fraction=0.0)
    loader = BatchLoader(data.train, batch_size=batch, seed=0)
    for step in range(warmup):
        loader.batch(step)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        x, _ = loader.batch(step)
    seconds = time.perf_counter() - start
    loader.close()
    assert x.shape == (batch, 3, image_size, image_size)
    return {"workers": workers, "images": batch * steps, "seconds": seconds, "images_per_s": batch * steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=384, help="files in the folder")
    parser.add_argument("--side", type=int, default=256, help="side of the files on disk, px")
    parser.add_argument("--size", type=int, default=64, help="data.image_size: side after decoding, px")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed batches per setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_data.json")
    args = parser.parse_args()
    if (args.warmup + args.steps) * args.batch > args.images:
        parser.error(f"--images {args.images} is fewer than (warmup + steps) x batch; one epoch must cover the run")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        on_disk = write_folder(root, images=args.images, side=args.side, fmt=args.format)
        for w in args.workers:
            rows.append(measure(root, workers=w, image_size=args.size, batch=args.batch, steps=args.steps,
                                warmup=args.warmup))

    print(f"\nStreamed decode: {args.images} {args.format.upper()} files of {args.side} px "
          f"({on_disk / args.images / 1024:.1f} KiB each) -> {args.size} px, batch {args.batch}, "
          f"{os.cpu_count()} CPU core(s)\n")
    print("| workers | images/s | timed images |")
    print("|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['images_per_s']:.0f} | {r['images']} |")
    result = {
        "command": "python experiments/bench_data.py " + " ".join(sys.argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "file_kib": on_disk / args.images / 1024,
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
