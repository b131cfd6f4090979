"""experiments/scaling_sweep.py (Zhai et al., CVPR 2022): its multiruns compose into the training configs
of the paired overrides it used to pass run by run, finished runs are left out of them, and collected runs
reach ``shortcutlens-scaling`` — without training anything."""

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


# What each scaling_model config stands for: the paired overrides the sweep passed before it was a multirun.
PAIRED = {
    "vit-Ti/8": ["backbone=vit", "backbone.variant=Ti/8"],
    "vit-S/8": ["backbone=vit", "backbone.variant=S/8"],
    "mixer-S/8": ["backbone=mixer", "backbone.variant=S/8", "+backbone.tokens_mlp=16"],
    "vit-Ti/8-d2": ["backbone=vit", "backbone.variant=Ti/8", "+backbone.depth=2"],
    "mixer-S/8-d2": ["backbone=mixer", "backbone.variant=S/8", "+backbone.tokens_mlp=16", "+backbone.depth=2"],
}


def paired_overrides(sweep, run, out: Path) -> list[str]:
    """The run's command line as the sweep built it before (``compose`` + ``train.run`` in a worker)."""
    return sweep.COMMON + PAIRED[run.model] + [
        f"data.train_size={run.data_size}", f"trainer.steps={run.steps}", f"trainer.batch_size={run.batch_size}",
        f"trainer.warmup_steps={max(1, run.steps // 10)}", f"trainer.log_every={max(1, min(25, run.steps))}",
        f"trainer.ckpt_every={run.steps}", f"probe.max_train={run.probe_max_train}", f"run_dir={out / run.slug}",
        "resume=true"]


def job_overrides(overrides: list[str], model: str, data_size: int) -> list[str]:
    """One job of a multirun command line: its swept values picked, Hydra's own settings dropped."""
    job = []
    for o in overrides:
        key, values = o.split("=", 1)
        if key.startswith("hydra."):
            continue
        if key == "+scaling_model":
            assert model in values.split(",")
            values = model
        elif key == "data.train_size":
            assert str(data_size) in values.split(",")
            values = str(data_size)
        assert "," not in values, o
        job.append(f"{key}={values}")
    return job


@pytest.mark.parametrize("model", sorted(PAIRED))
def test_scaling_model_config_is_the_paired_overrides(sweep, model):
    assert model in sweep.MODELS
    new = compose([f"+scaling_model={sweep.MODELS[model]}"])
    assert new == compose(PAIRED[model])
    assert new["backbone"]["variant"] == model.split("-")[1].split("-")[0]


@pytest.mark.parametrize("preset", ["FULL", "QUICK"])
def test_every_job_composes_the_config_of_the_paired_overrides(sweep, tmp_path, preset):
    """The resolved config each multirun job trains is the one the run-by-run sweep trained (its run_dir
    is the job's output folder, ``out / slug``, checked end to end by ``--quick``)."""
    runs = sweep.plan(getattr(sweep, preset))
    jobs = 0
    for group in sweep.multiruns(runs):
        overrides = sweep.multirun_overrides(group, tmp_path, [])
        for run in group.runs:
            new = compose(job_overrides(overrides, sweep.MODELS[run.model], run.data_size))
            old = compose(paired_overrides(sweep, run, tmp_path))
            assert old["run_dir"] == str(tmp_path / run.slug)
            new.pop("run_dir"), old.pop("run_dir")
            assert new == old
            jobs += 1
    assert jobs == len(runs)


def test_full_sweep_is_one_multirun_per_length(sweep, tmp_path):
    groups = sweep.multiruns(sweep.plan(sweep.FULL))
    assert [g.steps for g in groups] == [25, 50, 100, 200]
    cmd = sweep.command(groups[0], tmp_path / "out", ["trainer.amp=false"])
    assert cmd[1:4] == ["-m", "shortcutlens.cli.train", "--multirun"]
    args = cmd[4:]
    assert args[:8] == ["+scaling_model=vit-Ti8,mixer-S8,vit-S8", "data.train_size=2000,54000", "trainer.steps=25",
                        "trainer.batch_size=32", "trainer.warmup_steps=2", "trainer.log_every=25",
                        "trainer.ckpt_every=25", "probe.max_train=2000"]
    assert f"hydra.sweep.dir={tmp_path / 'out'}" in args and args[-1] == "trainer.amp=false"
    assert "hydra.sweep.subdir=${hydra:runtime.choices.scaling_model}/n${data.train_size}_s${trainer.steps}" in args
    assert set(sweep.COMMON) <= set(args)
    assert sweep._value(Path("/tmp/a b")) == "'/tmp/a b'"
    with pytest.raises(ValueError, match="Unknown model 'vit-X'"):
        sweep.multirun_overrides(sweep.Multirun(("vit-X",), (1,), 1, 1, 1), tmp_path, [])


def test_multiruns_cover_exactly_the_unfinished_runs(sweep):
    runs = sweep.plan(sweep.FULL)
    todo = [r for r in runs if not (r.steps == 25 and r.model == "vit-Ti/8" and r.data_size == 2000) and r.steps != 50]
    groups = sweep.multiruns(todo)
    assert [(g.models, g.data_sizes, g.steps) for g in groups] == [
        (("vit-Ti/8",), (54000,), 25), (("mixer-S/8", "vit-S/8"), (2000, 54000), 25),
        (("vit-Ti/8", "mixer-S/8", "vit-S/8"), (2000, 54000), 100),
        (("vit-Ti/8", "mixer-S/8", "vit-S/8"), (2000, 54000), 200)]
    covered = [r for g in groups for r in g.runs]
    assert len(covered) == len(todo) and set(covered) == set(todo)
    per_model = sweep.multiruns(todo, per_model=True)
    assert all(len(g.models) == 1 for g in per_model) and len(per_model) == 1 + 2 + 3 + 3


def test_grid_of_the_existing_run_folders(sweep, tmp_path):
    """Folders as the run-by-run sweep named them, so its finished runs count as finished."""
    assert sweep.run_dir(sweep.Run("mixer-S/8-d2", 500, 40, 16, 500), tmp_path) == tmp_path / "mixer-S8-d2" / "n500_s40"
    assert sweep.run_dir(sweep.Run("vit-Ti/8", 2000, 25, 32, 2000), tmp_path) == tmp_path / "vit-Ti8" / "n2000_s25"


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
    monkeypatch.setattr(sweep, "launch", lambda cmd, threads: pytest.fail(f"retrained finished runs: {cmd}"))
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
    assert summary["settings"]["multiruns"] == []


def test_only_the_unfinished_runs_are_launched(sweep, tmp_path, monkeypatch):
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = fake_finished(sweep, out, sweep.QUICK)
    missing = [r for r in runs if r.model == "mixer-S/8-d2" and r.steps == 40]
    saved = {r: (sweep.run_dir(r, out) / "metrics.json").read_text() for r in missing}
    for r in missing:
        (sweep.run_dir(r, out) / "metrics.json").unlink()
    launched = []

    def fake_launch(cmd, threads):  # the multirun's jobs write their metrics.json and a checkpoint
        launched.append(cmd)
        for r in missing:
            (sweep.run_dir(r, out) / "checkpoints").mkdir()
            (sweep.run_dir(r, out) / "metrics.json").write_text(saved[r])
        return 0

    monkeypatch.setattr(sweep, "launch", fake_launch)
    summary = sweep.main(["--quick", "--out", str(out), "--results", str(results)])
    assert len(launched) == 1 and launched[0][4:7] == ["+scaling_model=mixer-S8-d2", "data.train_size=500,2000",
                                                       "trainer.steps=40"]
    assert len(summary["runs"]) == len(runs) and summary["settings"]["multiruns"][0].startswith("shortcutlens-train --multirun")
    for r in missing:
        assert not (sweep.run_dir(r, out) / "checkpoints").exists()
        assert json.loads((sweep.run_dir(r, out) / "sweep_run.json").read_text())["steps"] == 40
