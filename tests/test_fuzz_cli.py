"""A careless user at the command line: a table of bad overrides for every config group of
``shortcutlens-train``, ``shortcutlens-probe`` and ``shortcutlens-visualize``, driven in-process (no
interpreter start-up per case). Each must stop with exit status 2 and one line on stderr that names
the key — no traceback, no run. A handful of valid edge values must still train.

Mistakes Hydra itself catches (an unknown group option or key, a value its typed schema or its
override grammar rejects, a run directory it cannot create) go through the console scripts' ``main``
exactly as typed. The value mistakes go through the same composition and the same task the console
script runs (``compose`` the overrides, then ``run`` under ``clear_errors``), which skips Hydra's second
composition and job set-up per case: ~0.25 s a case instead of ~0.6 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TRAIN_BASE = ("data=synthetic", "trainer.progress=false", "probe.untrained=false", "device=cpu")

# (overrides, what the error line must name)
TRAIN_BAD: list[tuple[tuple[str, ...], str]] = [
    # trainer
    (("trainer.steps=-5",), "trainer.steps"), (("trainer.steps=0",), "trainer.steps"),
    (("trainer.batch_size=0",), "trainer.batch_size"), (("trainer.batch_size=-1",), "trainer.batch_size"),
    (("trainer.warmup_steps=-1",), "trainer.warmup_steps"), (("trainer.ckpt_every=-1",), "trainer.ckpt_every"),
    (("trainer.ckpt_every=0",), "trainer.ckpt_every"), (("trainer.image_every=-1",), "trainer.image_every"),
    (("trainer.log_every=0",), "trainer.log_every"), (("trainer.grad_clip=-1",), "trainer.grad_clip"),
    (("trainer.weight_decay=-1",), "trainer.weight_decay"), (("trainer.lr=0",), "trainer.lr"),
    (("trainer.lr=1e300",), "trainer.lr"), (("trainer.momentum=1.5",), "trainer.momentum"),
    (("trainer.optimizer=nope",), "trainer.optimizer"), (("trainer.schedule=nope",), "trainer.schedule"),
    (("trainer.amp=nope",), "trainer.amp"), (("trainer.strategy=nope",), "trainer.strategy"),
    (("trainer.augment=[nope]",), "trainer.augment"), (("trainer.compile=maybe",), "trainer.compile"),
    (("trainer.cooldown_steps=-1",), "trainer.cooldown_steps"), (("trainer.rsqrt_timescale=0",), "trainer.rsqrt_timescale"),
    (("trainer.head_weight_decay=-1",), "trainer.head_weight_decay"),
    (("trainer.steps=10", "trainer.warmup_steps=2", "trainer.cooldown_steps=9"), "trainer.cooldown_steps"),
    # top level
    (("seed=1.5",), "seed"), (("seed=xyz",), "seed"), (("seed=-1",), "seed"), (("device=tpu",), "device"),
    (("resume=maybe",), "resume"), (("debug=2",), "debug"),
    # data
    (("data.image_size=2",), "data.image_size"), (("data.image_size=0",), "data.image_size"),
    (("data.image_size=-32",), "data.image_size"), (("data.image_size=abc",), "data.image_size"),
    (("data.train_size=-1",), "data.train_size"), (("data=fashion_mnist", "data.root=/nonexistent"), "data.root"),
    (("data.num_classes=1",), "data.num_classes"), (("data.channels=2",), "data.channels"),
    (("data.train_size=8", "trainer.batch_size=16"), "trainer.batch_size"),
    (("trainer.batch_size=100000",), "trainer.batch_size"),
    # backbone
    (("backbone.name=nope",), "backbone 'nope'"), (("backbone.depth=19",), "backbone.depth"),
    (("backbone.width=0",), "backbone.width"), (("backbone.version=3",), "backbone.version"),
    (("backbone.stem=nope",), "backbone.stem"), (("+backbone.foo=1",), "foo"),
    (("backbone=vit", "backbone.variant=X/4"), "backbone.variant"),
    (("backbone=vit", "data.image_size=30"), "backbone.variant"), (("backbone=vit", "backbone.pool=nope"), "backbone.pool"),
    (("backbone=mixer", "backbone.drop_path_rate=1.5"), "backbone.drop_path_rate"),
    # pretext
    (("pretext=contrastive", "pretext.temperature=0"), "pretext.temperature"),
    (("pretext=jigsaw", "pretext.dropout=1"), "pretext.dropout"), (("pretext=exemplar", "pretext.copies=1"), "pretext.copies"),
    (("pretext=contrastive", "pretext.crop_scale=[0.5,0.1]"), "pretext.crop_scale"),
    (("pretext.all_rotations=maybe",), "pretext.all_rotations"),
    # lens
    (("lens=unet", "lens.stride=3"), "lens.stride"), (("lens=unet", "lens.budget=0"), "lens.budget"),
    (("lens=unet", "lens.constraint=nope"), "lens.constraint"), (("lens=unet", "lens.width=0"), "lens.width"),
    (("lens=unet", "lens.edit=paint"), "lens.edit"), (("lens=unet", "lens.fill_size=4"), "lens.fill_size"),
    (("lens=unet", "lens.lr=-1"), "lens.lr"), (("lens=unet", "lens.rec_weight=-1"), "lens.rec_weight"),
    (("lens=unet", "pretext=exemplar", "lens.mode=least_likeliest"), "lens.mode"),
    # shortcut
    (("shortcut=arrow", "shortcut.size=0"), "shortcut.size"),
    (("shortcut=arrow", "shortcut.position=[2,2]"), "shortcut.position"),
    (("shortcut=gradient", "shortcut.intensity=-1"), "shortcut.intensity"),
    # the end-of-run probe
    (("probe.features=nope",), "probe.features"), (("probe.max_iter=0",), "probe.max_iter"),
    (("probe.batch_size=0",), "probe.batch_size"), (("probe.max_train=-1",), "probe.max_train"), (("probe.l2=-1",), "probe.l2"),
]

# Caught by Hydra while composing (through ``main``): unknown options and keys, typed values, the grammar.
TRAIN_HYDRA_BAD: list[tuple[tuple[str, ...], str]] = [
    (("data=nope",), "data=nope"), (("backbone=nope",), "backbone=nope"), (("pretext=nope",), "pretext=nope"),
    (("lens=nope",), "lens=nope"), (("shortcut=nope",), "shortcut=nope"), (("trainer=nope",), "trainer=nope"),
    (("trainer.stepz=3",), "trainer.stepz"), (("backbone.foo=1",), "backbone.foo"), (("+trainer.steps=3",), "trainer.steps"),
    (("trainer.steps=abc",), "trainer.steps"), (("trainer.steps=1.5",), "trainer.steps"),
    (("trainer.optimizer=[sgd]",), "trainer.optimizer"), (("trainer.steps=[",), "trainer.steps=["),
    # a warm-up the user set longer than the run (Hydra tells which keys were set on the command line)
    (("trainer.warmup_steps=600",), "trainer.warmup_steps"),
]

PROBE_HYDRA_BAD: list[tuple[tuple[str, ...], str]] = [
    (("data=nope",), "data=nope"), (("shortcut=nope",), "shortcut=nope"), (("knn.kk=3",), "knn.kk"),
]

PROBE_BAD: list[tuple[tuple[str, ...], str]] = [
    (("knn.k=0",), "knn.k"),
    (("fewshot.shots=[0]",), "fewshot.shots"), (("evaluators=[nope]",), "evaluator 'nope'"), (("evaluators=[]",), "evaluators"),
    (("batch_size=0",), "batch_size"), (("amp=nope",), "amp"), (("which=[nope]",), "which"), (("layers=[]",), "layers"),
    (("linear.max_iter=0",), "linear.max_iter"), (("knn.temperature=0",), "knn.temperature"),
    (("episodes.min_ways=1",), "episodes.min_ways"), (("data.root=/nonexistent",), "data.root"),
]

VISUALIZE_BAD: list[tuple[tuple[str, ...], str]] = [
    (("num_images=0",), "num_images"), (("split=nope",), "split"), (("max_images=0",), "max_images"),
    (("data.root=/nonexistent",), "data.root"), (("shortcut=maybe",), "shortcut"),
]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``cli(app, *overrides) -> (exit status, stdout, stderr)``: the console script's ``main``, in this
    process."""
    from shortcutlens.cli import probe, train, visualize

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SHORTCUTLENS_DATA", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    apps = {"train": train.main, "probe": probe.main, "visualize": visualize.main}

    def invoke(app: str, *overrides: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", [f"shortcutlens-{app}", *overrides])
        try:
            apps[app]()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def task(cli, capsys: pytest.CaptureFixture):
    """``task(app, run_dir, *overrides)``: the config the console script would compose, run by the task it
    runs (``run`` under ``clear_errors``); a mistake Hydra catches while composing goes through ``main``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from shortcutlens.cli import probe, train
    from shortcutlens.cli.common import CONF_DIR, clear_errors

    runs = {"train": (train.run, "train"), "probe": (probe.run, "probe_app")}

    def invoke(app: str, run_dir: Path, *overrides: str) -> tuple[int, str, str]:
        fn, config_name = runs[app]
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
                cfg = OmegaConf.to_container(compose(config_name=config_name, overrides=list(overrides)), resolve=True)
        except Exception:  # noqa: BLE001 (Hydra's own refusal: the console script's path)
            return cli(app, f"run_dir={run_dir}", *overrides)
        cfg["run_dir"] = str(run_dir)
        capsys.readouterr()
        try:
            clear_errors(fn)(cfg, str(run_dir))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def assert_one_clear_line(code: int, err: str, key: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0], lines[0]


def test_at_least_sixty_bad_inputs_cover_every_group() -> None:
    cases = TRAIN_BAD + TRAIN_HYDRA_BAD + PROBE_BAD + PROBE_HYDRA_BAD + VISUALIZE_BAD
    assert len(cases) >= 60
    named = " ".join(" ".join(overrides) for overrides, _ in TRAIN_BAD + TRAIN_HYDRA_BAD)
    for group in ("trainer.", "data", "backbone", "pretext", "lens", "shortcut", "probe.", "seed=", "device="):
        assert group in named, group


def test_bad_training_values_never_run(task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shortcutlens.train.loop import Trainer

    def no_training(self):  # an input wrongly accepted fails here at once instead of training for minutes
        raise AssertionError("a bad input reached training")

    monkeypatch.setattr(Trainer, "fit", no_training)
    for i, (overrides, key) in enumerate(TRAIN_BAD):
        run_dir = tmp_path / f"bad{i}"
        code, _, err = task("train", run_dir, *TRAIN_BASE, *overrides)
        assert_one_clear_line(code, err, key)
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists(), overrides


def test_what_hydra_refuses_is_one_line_too(cli, tmp_path: Path) -> None:
    for i, (overrides, key) in enumerate(TRAIN_HYDRA_BAD):
        code, _, err = cli("train", *TRAIN_BASE, f"run_dir={tmp_path / f'bad{i}'}", *overrides)
        assert_one_clear_line(code, err, key)
    (tmp_path / "a_file").write_text("not a folder")
    code, _, err = cli("train", *TRAIN_BASE, f"run_dir={tmp_path / 'a_file'}")
    assert_one_clear_line(code, err, "a_file is a file")


def test_bad_probe_and_visualize_inputs(cli, task, tmp_path: Path) -> None:
    checkpoint = tmp_path / "latest.pt"
    checkpoint.write_bytes(b"")  # never read: every case is refused before the checkpoint is opened
    for overrides, key in PROBE_BAD:
        code, _, err = task("probe", tmp_path / "p", f"checkpoint={checkpoint}", *overrides)
        assert_one_clear_line(code, err, key)
    for overrides, key in PROBE_HYDRA_BAD:
        code, _, err = cli("probe", f"checkpoint={checkpoint}", f"run_dir={tmp_path / 'p'}", *overrides)
        assert_one_clear_line(code, err, key)
    code, _, err = cli("probe", f"run_dir={tmp_path / 'p'}")
    assert_one_clear_line(code, err, "checkpoint")
    for overrides, key in VISUALIZE_BAD:
        code, _, err = cli("visualize", f"checkpoint={checkpoint}", f"run_dir={tmp_path / 'v'}", *overrides)
        assert_one_clear_line(code, err, key)
    code, _, err = cli("visualize", f"checkpoint={tmp_path / 'absent'}")
    assert_one_clear_line(code, err, "absent")
    assert not (tmp_path / "v").exists()


def test_hydra_errors_list_what_is_valid(cli, tmp_path: Path) -> None:
    code, _, err = cli("train", "data=nope", f"run_dir={tmp_path / 'r'}")
    assert_one_clear_line(code, err, "Valid options for data: cifar10, cifar100, digits, fashion_mnist")
    code, _, err = cli("train", "trainer.stepz=3", f"run_dir={tmp_path / 'r'}")
    assert_one_clear_line(code, err, "Valid keys of trainer: steps, batch_size")
    code, _, err = cli("train", "trainer.steps=abc", f"run_dir={tmp_path / 'r'}")
    assert_one_clear_line(code, err, "trainer.steps=abc: must be an integer ≥ 1")


def test_hydra_full_error_still_shows_the_stack(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(Exception, match="nope"):  # Hydra's own exception, for its full stack trace
        cli("train", "data=nope", f"run_dir={tmp_path / 'r'}")


GOOD_EDGES = {
    # one step, no warm-up, a log and a checkpoint every step, the smallest image, seed 0
    "one_step": ("trainer.steps=1", "trainer.warmup_steps=0", "trainer.log_every=1", "trainer.ckpt_every=1",
                 "data.image_size=8", "seed=0"),
    # a lens with no pictures, no clipping, no decay; the batch exactly the pretraining subset
    "lens_edges": ("lens=unet", "lens.width=4", "trainer.steps=2", "trainer.image_every=0", "trainer.grad_clip=0",
                   "trainer.weight_decay=0", "data.train_size=8", "trainer.batch_size=8"),
    # warm-up + cool-down exactly the run's length
    "schedule_edges": ("trainer.steps=2", "trainer.warmup_steps=1", "trainer.cooldown_steps=1", "trainer.schedule=rsqrt"),
}


@pytest.mark.parametrize("name", sorted(GOOD_EDGES))
def test_valid_edge_values_still_run(cli, tmp_path: Path, name: str) -> None:
    run_dir = tmp_path / name
    code, _, err = cli("train", *TRAIN_BASE, "backbone.width=0.125", "trainer.batch_size=8", "probe.max_iter=5",
                       f"run_dir={run_dir}", *GOOD_EDGES[name])
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == metrics["config"]["trainer"]["steps"]
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert not (run_dir / ".lock").exists()  # released at the end of the run
