"""experiments/lensed_probe.py: re-probing a finished run reproduces the probe it recorded exactly, the
lensed probe goes through the run's lens, and a run without a lens is probed on raw features only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import lensed_probe as lp

from shortcutlens.checkpoint import load_checkpoint, save_checkpoint


def train(run_dir: Path, *overrides: str) -> dict:
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    # Digits (scikit-learn's, bundled): a probe that does not score 100%, so equal accuracies mean something.
    cfg = compose(["debug=true", "data=digits", "shortcut=arrow", "trainer.progress=false", "probe.untrained=false",
                   f"run_dir={run_dir}", *overrides])
    run(cfg, cfg["run_dir"])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def lens_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("lensed_probe") / "run"
    return run_dir, train(run_dir, "lens=unet", "lens.width=4")


def test_the_raw_probe_reproduces_the_recorded_one_and_the_lensed_one_sees_the_lens(lens_run, tmp_path):
    run_dir, metrics = lens_run
    assert 0.1 < metrics["probe_acc"] < 1.0  # neither chance nor saturated
    result = lp.probe_run(run_dir, sources=["raw", "lensed"])
    assert result["probe"]["raw"]["accuracy"] == metrics["probe_acc"]  # same call, same settings, same features

    # The same run with its lens made the exact identity (its last layer is zero at initialisation):
    # probed through it, the features are the raw ones, so the lensed probe must equal the raw probe.
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    state = load_checkpoint(checkpoint)
    assert any(state["lens"][k].abs().sum() > 0 for k in ("out.weight", "out.bias"))  # it did learn an edit
    state["lens"] = {k: torch.zeros_like(v) if k.startswith("out.") else v for k, v in state["lens"].items()}
    identity = tmp_path / "identity"
    (identity / "checkpoints").mkdir(parents=True)
    save_checkpoint(state, identity / "checkpoints" / "latest.pt")
    (identity / "metrics.json").write_text((run_dir / "metrics.json").read_text())
    same = lp.probe_run(identity, sources=["raw", "lensed"])
    assert same["probe"]["lensed"]["accuracy"] == same["probe"]["raw"]["accuracy"] == metrics["probe_acc"]


def test_a_run_without_a_lens_is_probed_on_raw_features_only(tmp_path):
    metrics = train(tmp_path / "run")
    result = lp.probe_run(tmp_path / "run", sources=["raw", "lensed"])
    assert list(result["probe"]) == ["raw"] and result["lens"] is False
    assert result["probe"]["raw"]["accuracy"] == metrics["probe_acc"]


def test_results_are_never_written_over(lens_run, tmp_path):
    out = tmp_path / "taken.json"
    out.write_text("{}")
    with pytest.raises(SystemExit, match="exists"):
        lp.main([str(lens_run[0]), "--out", str(out)])
    assert out.read_text() == "{}"


def test_figures_use_the_lensed_probe_for_the_lens_rows_only(tmp_path):
    """Recovery and the clean-data effect by hand, for made-up probes of two seeds of relative location."""
    base = tmp_path / "runs"
    probes = {"relative_location clean / no lens": [0.80, 0.78], "relative_location position_tint / no lens": [0.76, 0.74]}
    for name, values in probes.items():
        for seed, value in enumerate(values):
            folder = base / lp.sb.slug(name) / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"step": 500, "probe_acc": value, "pretext_acc": 0.8}))
    lens, clean_lens = "relative_location position_tint / lens", "relative_location clean / lens"
    measured = {lens: [(0.77, 0.78), (0.75, 0.74)], clean_lens: [(0.79, 0.81), (0.775, 0.76)]}  # (raw, lensed)
    results = []
    for name, pairs in measured.items():
        for seed, (raw, lensed) in enumerate(pairs):
            folder = base / lp.sb.slug(name) / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"step": 500, "probe_acc": raw, "pretext_acc": 0.7}))
            results.append({"run": str(folder), "probe": {"raw": {"accuracy": raw}, "lensed": {"accuracy": lensed}}})

    out = lp.figures(results, baselines=base)
    raw, = out["raw"]
    lensed, = out["lensed"]
    # recovery = sum(lens - cue) / sum(clean - cue) over the paired seeds
    assert raw["recovery"]["value"] == pytest.approx((0.01 + 0.01) / (0.04 + 0.04))
    assert lensed["recovery"]["value"] == pytest.approx((0.02 + 0.00) / 0.08)
    assert raw["clean_lens_effect"]["per_seed"] == pytest.approx([-1.0, -0.5])
    assert lensed["clean_lens_effect"]["per_seed"] == pytest.approx([1.0, -2.0])
    assert raw["cue_cost"] == lensed["cue_cost"]  # the no-lens rows are the same in both
