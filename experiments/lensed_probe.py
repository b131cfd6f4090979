"""Probe finished runs again, on what their lens makes of the test images as well as on the raw ones.

A lens-trained network learns on lensed images and is probed, by default, on raw ones (``probe.features=
raw``). Its lens can be kept and applied at transfer time instead (Minderer et al. 2020 transfer the
lens with the network; ``probe.features=lensed`` probes ``F(L(x))``). This script re-runs the benchmark's
end-of-run probe — the same ``linear_probe`` call with the probe settings the run recorded (the
benchmark's: 54,000 training images, L2 chosen on the validation split) — on each run's checkpoint, once
per feature source, so the two can be read side by side::

    python experiments/lensed_probe.py runs/shortcut_benchmark/relative_location_*__lens/seed* \\
        --out experiments/results/lensed_probe/relative_location.json

Runs without a lens are probed on raw features only (there is nothing to apply). Each line of the output:
the run, the raw probe recorded in its ``metrics.json``, and the probes measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from shortcutlens.adversary import Player
from shortcutlens.build import build_components, build_data, checkpoint_spec, load_weights
from shortcutlens.checkpoint import load_checkpoint
from shortcutlens.train.config import ProbeConfig
from shortcutlens.train.measure import linear_probe


def probe_run(run_dir: Path, *, sources: list[str]) -> dict:
    """The linear probe of the network in ``run_dir`` on each feature source in ``sources``, with the probe
    settings recorded in its ``metrics.json`` (only ``features`` changed)."""
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{run_dir}: no checkpoints/latest.pt (a finished run is needed)")
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = checkpoint_spec(state, checkpoint)
    data = build_data(spec, seed=int(state.get("seed", 0)))
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    load_weights(parts, state, checkpoint)
    player = Player(parts.backbone, parts.pretext)
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise SystemExit(f"{run_dir}: no metrics.json (a finished run is needed: its probe settings are read there)")
    recorded = json.loads(metrics.read_text())
    recorded_settings = {**recorded["settings"]["probe"], "untrained": False}
    out = {"run": str(run_dir), "step": int(state["step"]), "lens": parts.lens is not None,
           "recorded_probe": recorded.get("probe_acc"), "probe": {}}
    for which in sources if parts.lens is not None else ["raw"]:
        start = time.perf_counter()
        settings = ProbeConfig(**{**recorded_settings, "features": which})
        result = linear_probe(player=player, lens=parts.lens, data=data, shortcut=parts.shortcut, settings=settings,
                              device=torch.device("cpu"), amp=False, progress=False, desc=f"probe ({which})")
        out["probe"][which] = {"accuracy": result["accuracy"], "l2": result["l2"],
                               "seconds": round(time.perf_counter() - start, 1)}
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with checkpoints/latest.pt)")
    parser.add_argument("--sources", nargs="+", default=["raw", "lensed"], choices=["raw", "lensed", "concat"],
                        help="feature sources to probe (runs without a lens: raw only)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON (refuses to overwrite)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out (results are never written over)")
    rows = []
    print(f"{'run':72s} {'recorded':>8s} " + " ".join(f"{s:>8s}" for s in args.sources), flush=True)
    for run in args.runs:
        r = probe_run(run, sources=args.sources)
        rows.append(r)
        cells = " ".join(f"{100 * r['probe'][s]['accuracy']:8.2f}" if s in r["probe"] else f"{'-':>8s}" for s in args.sources)
        rec = "-" if r["recorded_probe"] is None else f"{100 * r['recorded_probe']:.2f}"
        print(f"{r['run'][-72:]:72s} {rec:>8s} {cells}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python experiments/lensed_probe.py " + " ".join(sys.argv[1:]),
                                        "runs": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
