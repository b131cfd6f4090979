"""Does greying chromatic aberration remove it? Pretext accuracy of a network trained *with* the aberration
(no lens) on test images with the aberration, with it greyed, with it greyed over a window (the fill of
the erase lens, ``lens.edit=erase``), and without it.

Chromatic aberration (``shortcutlens.data.shortcuts.ChromaticAberration``) magnifies red and shrinks blue
about the centre. Greying a pixel (the mean of its channels) removes its colour but not the geometry: the
grey image is the mean of three copies of the garment at three scales, a ghosted outline whose offset
still grows with the distance from the centre. If the network reads that, a lens that may only erase
colour (or blur it away locally) cannot take the cue out, however much budget it has.

    python experiments/decoloured_cue.py runs/shortcut_benchmark/relative_location_chromatic_aberration__no_lens/seed0 \\
        runs/shortcut_benchmark/jigsaw_chromatic_aberration__no_lens/seed0 --out runs/decoloured_cue.json

Prints a table and writes JSON to ``--out`` (refused if it exists). Views are drawn with one seed, the same
for every condition, so conditions differ only in the images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from shortcutlens import api
from shortcutlens.build import build_data
from shortcutlens.data.loader import to_float
from shortcutlens.data.shortcuts import adapt_channels
from shortcutlens.lens import grey_fill


def grey(x: torch.Tensor, window: int = 1) -> torch.Tensor:
    """Each pixel replaced by the grey mean of its ``window × window`` neighbourhood (the erase lens's fill),
    ``(B, 3, H, W)`` kept."""
    return grey_fill(x, window).expand_as(x).contiguous()


CONDITIONS = {
    "clean": lambda x, cue: adapt_channels(x, 3),
    "aberration": lambda x, cue: cue(x),
    "aberration, greyed": lambda x, cue: grey(cue(x)),
    "aberration, grey 3x3 mean": lambda x, cue: grey(cue(x), 3),
}


@torch.no_grad()
def accuracies(run_dir: Path, *, images: int, seed: int, batch_size: int = 256) -> dict:
    run = api.load(run_dir)
    if run.shortcut is None:
        raise SystemExit(f"{run_dir}: trained without a shortcut; give a run trained with the aberration")
    data = build_data(run.spec, seed=int(run.config.get("seed", 0)))
    test = data.test.images[:images]
    out = {"run": str(run_dir), "shortcut": type(run.shortcut).__name__, "images": len(test), "pretext_acc": {}}
    for name, make in CONDITIONS.items():
        torch.manual_seed(seed)  # the same views (tiles, permutations) for every condition
        correct = total = 0
        for batch in test.split(batch_size):
            views, targets = run.pretext.views(make(to_float(batch), run.shortcut))
            _, metrics = run.pretext.loss(run.pretext.embed(run.backbone, views), targets)
            correct += metrics["acc"].item() * targets.shape[0]
            total += targets.shape[0]
        out["pretext_acc"][name] = correct / total
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished runs trained with chromatic aberration")
    parser.add_argument("--images", type=int, default=2048, help="test images per condition")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pretext views")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (refused if it exists)")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; give another --out (results are never written over)")
    results = [accuracies(r, images=args.images, seed=args.seed) for r in args.runs]
    print("| run | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for r in results:
        print(f"| {r['run']} | " + " | ".join(f"{100 * r['pretext_acc'][c]:.1f}%" for c in CONDITIONS) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
