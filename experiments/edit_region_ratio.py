"""Where a trained lens edits, measured two ways: inside the shortcut's fixed region and inside the
pixels the shortcut changes in each image (``Shortcut.regions``).

For a fixed mark (arrow, watermark, instance code) the two are the same. For chromatic aberration
they are not: its fixed region is the outer ring of the image, mostly background on Fashion-MNIST,
while its fringes run along each garment's outline. This script re-measures finished runs' lenses
(their ``checkpoints/latest.pt``) on the same test images both ways, so that edit ratios recorded
before the per-image region can be read against the ones recorded after::

    python experiments/edit_region_ratio.py runs/shortcut_benchmark/relative_location_chromatic_aberration__lens/seed*
    python experiments/edit_region_ratio.py RUN_DIR ... --images 2048 --out experiments/results/edit_region_ratio.json

Each run: ``fixed`` (mean |edit| inside the fixed region over outside), ``per_image`` (the same with
each image's own region) and ``region_share`` (the share of pixels in the per-image region).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from shortcutlens.build import build_components, build_data, checkpoint_spec, load_weights
from shortcutlens.checkpoint import load_checkpoint
from shortcutlens.data.loader import to_float
from shortcutlens.data.shortcuts import edit_ratio, stamp
from shortcutlens.eval.lens_edit import lens_edits


def measure(run_dir: Path, *, images: int) -> dict:
    """Both edit ratios of the lens in ``run_dir`` on the first ``images`` test images with its shortcut."""
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{run_dir}: no checkpoints/latest.pt (a finished run with a lens is needed)")
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "lens" not in state:
        raise SystemExit(f"{run_dir}: trained without a lens: there are no edits to measure")
    spec = checkpoint_spec(state, checkpoint)
    data = build_data(spec, seed=int(state.get("seed", 0)))
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    load_weights(parts, state, checkpoint, which=("lens",))
    shortcut = parts.shortcut
    if shortcut is None:
        raise SystemExit(f"{run_dir}: trained without a shortcut: there is no region to measure against")
    clean = to_float(data.split("test").images[:images])
    with torch.no_grad():
        edits = torch.cat([lens_edits(parts.lens, stamp(shortcut, chunk)) for chunk in clean.split(256)])
        regions = torch.cat([shortcut.regions(chunk) for chunk in clean.split(256)])
    fixed = shortcut.region(*clean.shape[-2:])
    return {"run": str(run_dir), "step": int(state["step"]), "shortcut": spec["shortcut"], "images": int(edits.shape[0]),
            "mean_abs_edit": edits.abs().mean().item(),
            "fixed": None if fixed is None else edit_ratio(edits, fixed),
            "per_image": edit_ratio(edits, regions), "region_share": regions.mean().item()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with checkpoints/latest.pt)")
    parser.add_argument("--images", type=int, default=2048, help="the first this many test images")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    rows = [measure(run, images=args.images) for run in args.runs]
    print(f"{'run':70s} {'fixed':>8s} {'per image':>10s} {'share':>6s}")
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    for r in rows:
        print(f"{r['run'][-70:]:70s} {fmt(r['fixed']):>8s} {fmt(r['per_image']):>10s} {r['region_share']:6.3f}")
    for key in ("fixed", "per_image"):
        values = [r[key] for r in rows if r[key] is not None]
        if len(values) > 1:
            print(f"{key}: mean {statistics.mean(values):.2f}x, sd {statistics.stdev(values):.2f} over {len(values)} runs")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python experiments/edit_region_ratio.py " + " ".join(sys.argv[1:]),
                                        "runs": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
