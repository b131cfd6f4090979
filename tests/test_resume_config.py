"""``shortcutlens-train resume=true run_dir=R trainer.steps=N`` continues the run recorded in ``R`` — its data,
lens, shortcut, seed and batch size — not the config tree's defaults; overrides that would change the run
stop with one line naming the key; and a run_dir without a checkpoint is an error, not a fresh start.

The commands run in-process through the Hydra entry point, as ``shortcutlens-train`` runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_main

from shortcutlens.cli.common import compose
from shortcutlens.cli.resume import resume_config

RECORDED = ("data=synthetic", "data.num_train=96", "data.num_test=32", "lens=unet", "lens.width=4", "shortcut=arrow",
            "seed=3", "trainer.batch_size=16", "trainer.warmup_steps=1", "trainer.log_every=2", "trainer.image_every=0",
            "trainer.progress=false", "probe.untrained=false", "probe.max_iter=20", "device=cpu")


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``shortcutlens-train args`` in this process: (exit status, stdout, stderr)."""
    from shortcutlens.cli.train import main

    return run_main(main, capsys, *args)


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run with a lens and the arrow, killed after its last checkpoint (no metrics.json)."""
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    run_dir = tmp_path_factory.mktemp("resume") / "arrow_lens"
    cfg = compose([*RECORDED, "trainer.steps=4", f"run_dir={run_dir}"])
    torch.set_num_threads(1)
    run(cfg, str(run_dir))
    (run_dir / "metrics.json").unlink()  # as if killed before the end: only config.json and the checkpoint remain
    return run_dir


def test_the_run_records_its_config_when_it_starts(trained: Path) -> None:
    config = json.loads((trained / "config.json").read_text())
    assert config["lens"]["name"] == "unet" and config["lens"]["width"] == 4
    assert config["shortcut"]["name"] == "arrow" and config["seed"] == 3 and config["trainer"]["batch_size"] == 16


def test_resume_restores_the_recorded_run_and_extends_it(trained: Path, capsys) -> None:
    before = torch.load(trained / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    code, out, err = cli(capsys, "resume=true", f"run_dir={trained}", "trainer.steps=6", "trainer.log_every=3",
                         "seed=3")  # repeating a recorded value is no contradiction
    assert code == 0, err
    assert "resume: " in out and "from step 4 of 6 (trainer.steps 4 -> 6)" in out
    metrics = json.loads((trained / "metrics.json").read_text())
    config = metrics["config"]
    # The recorded run, not the defaults (digits, no lens, no shortcut, seed 0, batch 128):
    assert config["data"]["name"] == "synthetic" and config["lens"]["name"] == "unet" and config["lens"]["width"] == 4
    assert config["shortcut"]["name"] == "arrow" and config["seed"] == 3 and config["trainer"]["batch_size"] == 16
    assert config["trainer"]["steps"] == 6 and config["trainer"]["log_every"] == 3
    assert metrics["step"] == 6 and "pretext_acc_lensed" in metrics and "edit_ratio" in metrics
    after = torch.load(trained / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert after["step"] == 6 and after["spec"]["lens"]["name"] == "unet" and after["spec"]["shortcut"]["name"] == "arrow"
    # It continued from the checkpoint: the lens kept training from its recorded weights.
    assert set(after["lens"]) == set(before["lens"])
    assert not torch.equal(after["lens"]["out.weight"], before["lens"]["out.weight"])
    # The extended length is recorded, so a kill of the resumed run resumes to 6 steps.
    assert json.loads((trained / "config.json").read_text())["trainer"]["steps"] == 6


@pytest.mark.parametrize("override, key", [
    ("lens=none", "lens.name='unet'"),
    ("data=digits", "data.name='synthetic'"),
    ("seed=0", "seed=3"),
    ("trainer.batch_size=32", "trainer.batch_size=16"),
    ("backbone.width=0.25", "backbone.width=0.125"),
    ("trainer.lr=0.05", "trainer.lr=0.1"),
    ("backbone=vit", "backbone.name='resnet'"),
    ("pretext=jigsaw", "pretext.name='rotation'"),
    ("shortcut=none", "shortcut.name='arrow'"),
])
def test_an_override_that_contradicts_the_run_stops_with_one_line(trained: Path, capsys, override: str, key: str):
    mtime = (trained / "checkpoints" / "latest.pt").stat().st_mtime_ns
    code, _, err = cli(capsys, "resume=true", f"run_dir={trained}", "trainer.steps=40", override)
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = errors(err)
    assert line.startswith(f"error: resume: {override} contradicts the recorded run ({key} in ")
    assert (trained / "checkpoints" / "latest.pt").stat().st_mtime_ns == mtime  # nothing was trained or written


def test_fewer_steps_than_the_checkpoint_is_an_error(trained: Path, capsys) -> None:
    code, _, err = cli(capsys, "resume=true", f"run_dir={trained}", "trainer.steps=2")
    assert code == 2
    (line,) = errors(err)
    assert "trainer.steps=2 is below the checkpoint's step" in line


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_run(tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "resume=true", f"run_dir={tmp_path / 'typo'}", "data=synthetic", "trainer.steps=2")
    assert code == 2
    (line,) = errors(err)
    assert line == (f"error: resume=true, but there is no checkpoint to resume in run_dir={tmp_path / 'typo'} "
                    f"({tmp_path / 'typo' / 'checkpoints' / 'latest.pt'} is missing); check run_dir, or drop resume=true "
                    "to start a new run")
    assert not (tmp_path / "typo" / "checkpoints").exists()


def test_a_run_without_a_recorded_config_takes_its_components_from_the_checkpoint(trained: Path, tmp_path: Path):
    """Runs from before config.json: the checkpoint's spec still names data, models, lens, shortcut, seed."""
    legacy = tmp_path / "legacy"
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "checkpoints" / "latest.pt").write_bytes((trained / "checkpoints" / "latest.pt").read_bytes())
    resolved = compose(["trainer.steps=50", f"run_dir={legacy}", "resume=true"])
    merged = resume_config(resolved, legacy, ["trainer.steps=50", f"run_dir={legacy}", "resume=true"])
    assert merged["data"]["name"] == "synthetic" and merged["lens"]["name"] == "unet" and merged["lens"]["width"] == 4
    assert merged["shortcut"]["name"] == "arrow" and merged["seed"] == 3 and merged["trainer"]["steps"] == 50
    # The lens game's settings (not in the spec) are the unet group's own, not the lens-less defaults.
    unet = compose(["lens=unet"])["lens"]
    assert {k: merged["lens"][k] for k in ("mode", "lr", "rec_weight")} == {k: unet[k] for k in ("mode", "lr", "rec_weight")}


def test_a_sweep_job_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    resolved = compose(["data=synthetic", f"run_dir={tmp_path}", "resume=true"])
    assert resume_config(resolved, tmp_path, ["data=synthetic", "resume=true"], multirun=True) == resolved
