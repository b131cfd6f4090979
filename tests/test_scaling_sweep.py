"""experiments/scaling_sweep.py (Zhai et al., CVPR 2022): its runs compose into valid training configs,
finished runs are skipped, and collected runs reach ``shortcutlens-scaling`` — without training anything."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from shortcutlens.cli.common import compose

PATH = Path(__file__).resolve().parents[1] / "experiments" / "scaling_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("scaling_sweep", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaling_sweep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plan_is_the_full_grid_cheapest_first(sweep):
    runs = sweep.plan(sweep.FULL)
    assert len(runs) == len(sweep.FULL["models"]) * len(sweep.FULL["data_sizes"]) * len(sweep.FULL["steps"])
    assert len({r.slug for r in runs}) == len(runs)
    assert [r.steps for r in runs] == sorted(r.steps for r in runs)


@pytest.mark.parametrize("model", ["vit-S/8", "mixer-S/8", "mixer-S/8-d2"])
def test_overrides_compose_into_the_training_config(sweep, tmp_path, model):
    run = sweep.Run(model, 2000, 200, 32, 2000)
    cfg = compose(sweep.overrides(run, tmp_path, []))
    assert cfg["data"]["train_size"] == 2000 and cfg["data"]["image_size"] == 16
    assert cfg["trainer"]["steps"] == 200 and cfg["trainer"]["warmup_steps"] == 20
    assert cfg["backbone"]["variant"] == "S/8" and cfg["pretext"]["name"] == "rotation"
    assert cfg["probe"]["max_train"] == 2000 and cfg["lens"]["name"] == "none"
    assert cfg["run_dir"] == str(tmp_path / run.slug)
    if model.startswith("mixer"):
        assert cfg["backbone"]["name"] == "mixer" and cfg["backbone"]["tokens_mlp"] == 16
    with pytest.raises(ValueError, match="Unknown model 'vit-X'"):
        sweep.overrides(sweep.Run("vit-X", 1, 1, 1, 1), tmp_path, [])


def fake_finished(sweep, out: Path, preset: dict) -> list:
    """metrics.json for every run of ``preset``, errors on E = 2·C^(-0.3) + 0.1 (compute in GFLOPs)."""
    runs = sweep.plan(preset)
    flops = {m: 1e10 * (i + 1) for i, m in enumerate(preset["models"])}
    for r in runs:
        compute = flops[r.model] * r.steps
        acc = 1 - (2 * (compute / 1e9) ** -0.3 + 0.1)
        folder = sweep.run_dir(r, out)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "compute": compute, "flops_per_step": flops[r.model], "probe_acc": acc, "pretext_acc": acc,
            "probe": {"train_images": r.probe_max_train}}))
    return runs


def test_finished_runs_are_skipped_and_collected_into_the_fit(sweep, tmp_path, monkeypatch):
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = fake_finished(sweep, out, sweep.FULL)
    monkeypatch.setattr(sweep, "run_one", lambda job: pytest.fail(f"retrained finished run {job[0]}"))
    summary = sweep.main(["--out", str(out), "--results", str(results)])
    with (results / "scaling_sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(runs) == len(summary["runs"])
    assert {"compute", "data_size", "error", "pretext_error", "model", "steps"} <= set(rows[0])
    assert {int(r["data_size"]) for r in rows} == set(sweep.FULL["data_sizes"])
    fit = json.loads((results / "scaling_sweep_fit.json").read_text())["fit"]
    assert fit["b"] == pytest.approx(0.3, rel=0.05) and fit["c"] == pytest.approx(0.1, rel=0.05)
    assert (results / "scaling_sweep_fit.png").is_file() and (results / "scaling_sweep_pretext_fit.json").is_file()
    assert summary["fits"]["probe_error"]["fitted_on"] == "compute frontier"
