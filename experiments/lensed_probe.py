"""Probe finished runs again, on what their lens makes of the test images as well as on the raw ones.

A lens-trained network learns on lensed images and is probed, by default, on raw ones (``probe.features=
raw``). Its lens can be kept and applied at transfer time instead (Minderer et al. 2020 transfer the
lens with the network; ``probe.features=lensed`` probes ``F(L(x))``). This script re-runs the benchmark's
end-of-run probe — the same ``linear_probe`` call with the probe settings the run recorded (the
benchmark's: 54,000 training images, L2 chosen on the validation split) — on each run's checkpoint, once
per feature source, so the two can be read side by side::

    python experiments/lensed_probe.py runs/shortcut_benchmark/relative_location_*__lens/seed* \\
        --out runs/lensed_probe/relative_location.json

Runs without a lens are probed on raw features only (there is nothing to apply). Each line of the output:
the run, the raw probe recorded in its ``metrics.json``, and the probes measured here.

``--figures`` turns such JSON files into the benchmark's figures — recovery and the lens's effect on clean
data, paired by seed, with the benchmark's own arithmetic (``shortcut_benchmark.summarise``) — once with
the lens rows probed on raw features and once through their lens; the no-lens rows (clean, cue) are
read from ``--baselines``, the finished runs' ``metrics.json`` files laid out as the benchmark lays them::

    python experiments/lensed_probe.py --figures experiments/results/lensed_probe/*_runs.json \
        --baselines experiments/results/shortcut_benchmark_runs --out experiments/results/lensed_probe/figures.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import shortcut_benchmark as sb
import torch

from shortcutlens.adversary import Player
from shortcutlens.build import build_components, build_data, checkpoint_spec, load_weights
from shortcutlens.checkpoint import load_checkpoint
from shortcutlens.train.config import ProbeConfig
from shortcutlens.train.measure import linear_probe


def probe_run(run_dir: Path, *, sources: list[str], device: str = "auto") -> dict:
    """The linear probe of the network in ``run_dir`` on each feature source in ``sources``, with the probe
    settings recorded in its ``metrics.json`` (only ``features`` changed). ``device``: ``auto`` (CUDA with
    bf16 autocast when there is one), ``cpu`` or ``cuda``."""
    checkpoint, metrics = run_dir / "checkpoints" / "latest.pt", run_dir / "metrics.json"
    if not checkpoint.is_file() or not metrics.is_file():
        raise SystemExit(f"{run_dir}: no checkpoints/latest.pt or metrics.json (a finished run is needed: its "
                         "probe settings are read from metrics.json)")
    recorded = json.loads(metrics.read_text())
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = checkpoint_spec(state, checkpoint)
    data = build_data(spec, seed=int(state.get("seed", 0)))
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    load_weights(parts, state, checkpoint)
    player = Player(parts.backbone, parts.pretext).to(dev)
    lens = parts.lens.to(dev) if parts.lens is not None else None
    recorded_settings = {**recorded["settings"]["probe"], "untrained": False}
    out = {"run": str(run_dir), "step": int(state["step"]), "lens": lens is not None,
           "recorded_probe": recorded.get("probe_acc"), "probe": {}}
    for which in sources if lens is not None else ["raw"]:
        start = time.perf_counter()
        settings = ProbeConfig(**{**recorded_settings, "features": which})
        result = linear_probe(player=player, lens=lens, data=data, shortcut=parts.shortcut, settings=settings,
                              device=dev, amp=dev.type == "cuda", progress=False, desc=f"probe ({which})")
        out["probe"][which] = {"accuracy": result["accuracy"], "l2": result["l2"],
                               "seconds": round(time.perf_counter() - start, 1)}
    return out


def figures(results: list[dict], *, baselines: Path) -> dict:
    """The benchmark's per-pretext figures twice, ``{"raw": [...], "lensed": [...]}``: the lens rows' probe
    taken from ``results`` (``probe_run`` outputs) on that source, every other column and row from the
    ``metrics.json`` files under ``baselines`` (``<row slug>/seed<N>/metrics.json``)."""
    rows_by_slug = {sb.slug(r.name): r for r in sb.ROWS}
    probed: dict[tuple[str, int], dict] = {}
    for r in results:
        run = Path(r["run"])
        row = rows_by_slug.get(run.parent.name)
        if row is None or not run.name.startswith("seed"):
            raise SystemExit(f"{run}: not a benchmark run directory (<out>/<row slug>/seed<N>)")
        probed[(row.name, int(run.name[4:]))] = r["probe"]
    pretexts = {name.split(" ")[0] for name, _ in probed}
    rows = [r for r in sb.ROWS if r.pretext in pretexts and not r.secondary]
    out = {}
    for source in ("raw", "lensed"):
        runs = []
        for row in rows:
            for metrics_file in sorted((baselines / sb.slug(row.name)).glob("seed*/metrics.json")):
                seed = int(metrics_file.parent.name[4:])
                metrics = json.loads(metrics_file.read_text())
                if row.lens:
                    if (row.name, seed) not in probed:
                        continue  # a lens row is counted on the seeds probed here only
                    metrics = {**metrics, "probe_acc": probed[(row.name, seed)][source]["accuracy"]}
                runs.append(sb.summary(row, seed, metrics))
        out[source] = [f for f in sb.summarise(rows, runs)[1] if f["pretext"] in pretexts]
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (each with checkpoints/latest.pt)")
    parser.add_argument("--figures", nargs="+", type=Path, default=None,
                        help="instead of probing: JSON files this script wrote, turned into recovery and clean-data figures")
    parser.add_argument("--baselines", type=Path, default=Path("experiments/results/shortcut_benchmark_runs"),
                        help="with --figures: the benchmark's finished runs (<row slug>/seed<N>/metrics.json)")
    parser.add_argument("--sources", nargs="+", default=["raw", "lensed"], choices=["raw", "lensed", "concat"],
                        help="feature sources to probe (runs without a lens: raw only)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA (bf16 autocast) when there is one")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON (refuses to overwrite)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out (results are never written over)")
    if args.figures:
        return [print_figures(args, figures([r for f in args.figures for r in json.loads(f.read_text())["runs"]],
                                            baselines=args.baselines))]
    if not args.runs:
        parser.error("give run directories to probe, or --figures JSON files")
    rows = []
    print(f"{'run':72s} {'recorded':>8s} " + " ".join(f"{s:>8s}" for s in args.sources), flush=True)
    for run in args.runs:
        r = probe_run(run, sources=args.sources, device=args.device)
        rows.append(r)
        cells = " ".join(f"{100 * r['probe'][s]['accuracy']:8.2f}" if s in r["probe"] else f"{'-':>8s}" for s in args.sources)
        rec = "-" if r["recorded_probe"] is None else f"{100 * r['recorded_probe']:.2f}"
        print(f"{r['run'][-72:]:72s} {rec:>8s} {cells}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python experiments/lensed_probe.py " + " ".join(sys.argv[1:]),
                                        "runs": rows}, indent=2) + "\n")
    return rows


def print_figures(args: argparse.Namespace, result: dict) -> dict:
    """One line per pretext and feature source: recovery and the clean-data effect with their intervals."""
    def fmt(f: dict | None, scale: float, unit: str) -> str:
        if not f or f.get("value") is None:
            return "-"
        ci = f.get("ci95")
        return f"{scale * f['value']:+.1f}{unit}" + (f" [{scale * ci[0]:+.1f}, {scale * ci[1]:+.1f}]" if ci else " (n = 1)")

    print(f"{'pretext':18s} {'probe':7s} {'recovery':22s} {'lens on clean data':22s}")
    for source, figs in result.items():
        for f in figs:
            print(f"{f['pretext']:18s} {source:7s} {fmt(f.get('recovery'), 100, '%'):22s} "
                  f"{fmt(f.get('clean_lens_effect'), 1, ' pt'):22s}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python experiments/lensed_probe.py " + " ".join(sys.argv[1:]),
                                        "figures": result}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
