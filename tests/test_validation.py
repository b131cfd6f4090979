"""The one validated config: every key of every group has a rule (type and range), the cross-key rules,
explicit paths, the run-directory lock, and the data files a user can get wrong."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shortcutlens import config_schema as schema
from shortcutlens.cli.common import CONF_DIR, compose
from shortcutlens.config_schema import ConfigError, validate_train

# ---------------------------------------------------------------------------------------------- coverage


def test_every_dataclass_field_has_a_rule() -> None:
    from shortcutlens.eval import EVALUATORS
    from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig

    for cls, rules in ((TrainerConfig, schema.TRAINER), (ProbeConfig, schema.PROBE), (AdversaryConfig, schema.ADVERSARY)):
        missing = {f.name for f in dataclasses.fields(cls)} - set(rules)
        assert not missing, f"{cls.__name__}: no rule for {sorted(missing)}"
    for name in EVALUATORS.names():
        cls = EVALUATORS.get(name)
        if dataclasses.is_dataclass(cls) and name in schema.EVALUATOR:
            missing = {f.name for f in dataclasses.fields(cls)} - set(schema.EVALUATOR[name])
            assert not missing, f"evaluator {name}: no rule for {sorted(missing)}"


@pytest.mark.parametrize("group, table", [("data", "DATA"), ("backbone", "BACKBONE"), ("pretext", "PRETEXT"),
                                          ("lens", "LENS"), ("shortcut", "SHORTCUT")])
def test_every_yaml_key_has_a_rule(group: str, table: str) -> None:
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        rules = {**getattr(schema, table).get(node.get("name"), {}),
                 **(schema.DATA_COMMON if group == "data" else {}), **(schema.ADVERSARY if group == "lens" else {})}
        missing = set(node) - set(rules) - {"name", "defaults"}
        assert not missing, f"{path.name}: no rule for {sorted(missing)}"


@pytest.mark.parametrize("app, table", [("probe_app", "TOP_PROBE"), ("visualize", "TOP_VISUALIZE"), ("train", "TOP_TRAIN")])
def test_every_app_key_has_a_rule(app: str, table: str) -> None:
    node = yaml.safe_load((Path(CONF_DIR) / f"{app}.yaml").read_text())
    groups = {"defaults", "hydra", "data", "shortcut", "trainer", "backbone", "pretext", "lens", "probe"}
    missing = set(node) - set(getattr(schema, table)) - groups
    assert not missing, f"{app}.yaml: no rule for {sorted(missing)}"


def test_rules_say_what_is_allowed() -> None:
    assert schema.integer(1).allowed == "an integer ≥ 1"
    assert schema.number(0, 1, hi_open=True).allowed == "a number in [0, 1)"
    assert not schema.integer(0).test(True) and not schema.integer(0).test(1.0) and schema.integer(0).test(0)
    assert not schema.number(0).test(float("nan")) and not schema.number(0).test("1")
    assert schema.one_of(1, 2).test(2) and not schema.one_of(1, 2).test(2.0) and not schema.one_of(1, 2).test(True)
    assert schema.variant(("Ti", "S")).test("Ti/4") and not schema.variant(("Ti", "S")).test("X/4")
    assert not schema.variant(("Ti",)).test("Ti/0")
    assert str(schema.refuse("trainer.steps", -5, "an integer ≥ 1")) == "trainer.steps=-5: must be an integer ≥ 1"
    assert schema.rule_for("trainer.steps") is schema.TRAINER["steps"] and schema.rule_for("knn.k") is not None


# ---------------------------------------------------------------------------------------------- cross-key rules


def refused(*overrides: str, run_dir: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        validate_train(compose(["data=synthetic", *overrides]), run_dir=run_dir)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_and_the_demo_settings_pass(tmp_path: Path) -> None:
    for overrides in ([], ["lens=unet"], ["pretext=jigsaw", "data.image_size=32"], ["backbone=vit", "data.image_size=32"],
                      ["pretext=contrastive", "lens=unet", "lens.mode=full"], ["trainer=fsdp", "trainer.steps=5000"]):
        validate_train(compose(["data=synthetic", *overrides]), run_dir=str(tmp_path / "run"))


def test_warm_up_and_cool_down_fit_in_the_run() -> None:
    message = refused("trainer.steps=10", "trainer.warmup_steps=5", "trainer.cooldown_steps=6")
    assert message == ("trainer.warmup_steps=5 + trainer.cooldown_steps=6 exceeds trainer.steps=10: warm-up and "
                       "cool-down must fit in the run")
    validate_train(compose(["data=synthetic", "trainer.steps=10", "trainer.warmup_steps=5", "trainer.cooldown_steps=5"]))


def test_image_size_and_patch_size() -> None:
    assert "not divisible by backbone.variant=Ti/4's patch size 4" in refused("backbone=vit", "data.image_size=30")
    # relative location cuts tiles; their side (not the image's) must be divisible by the patch
    message = refused("backbone=vit", "backbone.variant=Ti/16", "pretext=relative_location", "data.image_size=64")
    assert "tiles" in message and "patch size 16" in message


def test_image_size_and_lens_stride() -> None:
    assert refused("lens=unet", "lens.stride=3") == ("data.image_size=16 is not divisible by lens.stride=3; "
                                                      "use an image size that is")
    assert "≥ 8" in refused("lens=unet", "lens.stride=4")


def test_a_lens_mode_the_pretext_supports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every built-in pretext has task logits now; a task without them (a third-party regression, say)
    # must be refused a targeted mode before any data is read.
    from pretexts.exemplar import Exemplar

    monkeypatch.setattr(Exemplar, "targetable", False)
    message = refused("lens=unet", "pretext=exemplar", "lens.mode=random_wrong")
    assert message.startswith("lens.mode=random_wrong") and "exemplar" in message.lower()


def test_batch_fits_in_the_training_split() -> None:
    assert "data.train_size=8" in refused("data.train_size=8", "trainer.batch_size=9")
    from shortcutlens.build import build_data

    cfg = compose(["data=synthetic", "trainer.batch_size=512"])
    data = build_data({"data": cfg["data"]})
    with pytest.raises(ConfigError, match=r"trainer.batch_size=512 exceeds the 230 training images"):
        schema.check_data_fits(cfg, data)


def test_explicit_paths_never_fall_back(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert refused("data.root=" + str(tmp_path / "absent")) == f"data.root={tmp_path / 'absent'}: no such folder"
    assert "is a file" in refused("data.root=" + str(tmp_path / "file"))
    assert "is a file, not a folder" in refused(run_dir=str(tmp_path / "file"))
    assert "is a file" in refused(run_dir=str(tmp_path / "file" / "below"))
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        assert "not writable" in refused(run_dir=str(tmp_path / "ro" / "run"))


# ---------------------------------------------------------------------------------------------- the run lock


def holder(run_dir: Path) -> subprocess.Popen:
    """Another process that takes the run directory's lock and keeps it until killed."""
    code = ("import sys, time; from shortcutlens.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_run_keeps_its_directory_and_a_dead_one_does_not(tmp_path: Path) -> None:
    from shortcutlens.run_lock import RunDirInUseError, RunLock

    proc = holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirInUseError) as info:
            RunLock(tmp_path / "run").acquire()
        assert f"in use by training process {proc.pid}" in str(info.value) and ".lock" in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    lock = RunLock(tmp_path / "run").acquire()  # its owner was killed: stale, taken over
    assert (tmp_path / "run" / ".lock").read_text().split()[0] == str(os.getpid())
    assert RunLock(tmp_path / "run").acquire().held  # this process again: a second run in one interpreter
    lock.release()
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_recycled_pid_does_not_keep_a_stale_lock(tmp_path: Path) -> None:
    from shortcutlens.run_lock import RunLock

    (tmp_path / ".lock").write_text(f"{os.getppid()} {os.uname().nodename} 1\n")  # a live PID, another start time
    assert RunLock(tmp_path).acquire().held


def test_the_lock_is_released_when_the_process_exits(tmp_path: Path) -> None:
    code = "import sys; from shortcutlens.run_lock import RunLock; RunLock(sys.argv[1]).acquire()"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert not (tmp_path / ".lock").exists()


def test_training_refuses_a_run_directory_in_use(tmp_path: Path) -> None:
    from shortcutlens.cli.train import run
    from shortcutlens.run_lock import RunDirInUseError

    proc = holder(tmp_path / "run")
    record = tmp_path / "run" / "config.json"
    record.write_text('{"the": "live run\'s config"}')
    try:
        cfg = compose(["data=synthetic", "trainer.steps=1", "probe.untrained=false", "trainer.progress=false"])
        with pytest.raises(RunDirInUseError, match="in use by training process"):
            run(cfg, str(tmp_path / "run"))
        assert not (tmp_path / "run" / "checkpoints").exists()
        assert record.read_text() == '{"the": "live run\'s config"}'  # refused before writing anything
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------- data files


def test_corrupt_png_and_empty_class_folder(tmp_path: Path) -> None:
    from PIL import Image

    from shortcutlens.data import DataNotFoundError, create_dataset

    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    good = tmp_path / "train" / "a" / "0.png"
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])  # a PNG cut off mid-file
    with pytest.raises(DataNotFoundError) as info:
        create_dataset("imagefolder", root=str(tmp_path), image_size=8, stream=False)
    assert str(good) in str(info.value) and "\n" not in str(info.value)
    good.write_bytes(raw)
    (tmp_path / "train" / "aa_empty").mkdir()  # sorts between a and b: would shift b's label
    with pytest.raises(DataNotFoundError, match="aa_empty"):
        create_dataset("imagefolder", root=str(tmp_path), image_size=8, stream=False)


def test_idx_files_that_do_not_match(no_data: Path) -> None:
    import numpy as np
    from test_data import write_fake_fashion_mnist, write_idx

    from shortcutlens.data import DataNotFoundError, create_dataset

    write_fake_fashion_mnist(no_data)
    write_idx(no_data / "train-labels-idx1-ubyte", np.zeros(7))  # 7 labels for 40 images
    with pytest.raises(DataNotFoundError, match="do not match"):
        create_dataset("fashion_mnist", root=str(no_data))
