"""Results a researcher takes away from a run: ``shortcutlens.load`` without the training data on disk,
``shortcutlens-export`` (features + labels + manifest), and the lens on its own (saved and loaded alone,
applied to a folder of pictures by ``shortcutlens-lens``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main as cli

import shortcutlens
from shortcutlens.api import load_lens, save_lens

SIZE = 16


def write_folder(root: Path, *, per_class: int = 10) -> None:
    """Two classes a linear probe can tell apart: bright top half vs bright bottom half, with noise."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for label, name in enumerate(("top", "bottom")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = torch.rand(SIZE, SIZE, 3, generator=g) * 0.3
            half = slice(0, SIZE // 2) if label == 0 else slice(SIZE // 2, SIZE)
            img[half] += 0.6
            Image.fromarray((img.clamp(0, 1).numpy() * 255).astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-step rotation run with a lens on a tiny image folder, whose folder is then moved away."""
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run as train

    base = tmp_path_factory.mktemp("takeaway")
    write_folder(base / "pictures")
    run_dir = base / "run"
    cfg = compose(["data=imagefolder", f"data.root={base / 'pictures'}", f"data.image_size={SIZE}", "lens=unet",
                   "lens.width=4", "trainer.steps=3", "trainer.batch_size=8", "trainer.warmup_steps=1",
                   "trainer.image_every=0", "trainer.progress=false", "probe.untrained=false", "probe.max_iter=20",
                   "device=cpu", f"run_dir={run_dir}"])
    torch.set_num_threads(1)
    train(cfg, str(run_dir))
    shutil.move(base / "pictures", base / "moved")  # the training data is no longer where the run found it
    return {"base": base, "run": run_dir, "data": base / "moved"}


def test_load_rebuilds_the_trained_models_without_the_data(run: dict[str, Path]) -> None:
    trained = shortcutlens.load(run["run"])
    state = torch.load(run["run"] / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert trained.step == 3 and trained.image_size == SIZE and trained.in_chans == 3
    assert trained.config["data"]["name"] == "imagefolder" and trained.config["lens"]["name"] == "unet"
    for name, module in (("backbone", trained.backbone), ("pretext", trained.pretext), ("lens", trained.lens)):
        assert not module.training
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[name][key]), f"{name}.{key}"
    x = torch.rand(5, 3, SIZE, SIZE)
    assert trained.features(x).shape == (5, trained.backbone.num_features)
    assert torch.equal(trained.features(x, lensed=True), trained.features(trained.edit(x)))
    # A checkpoint file loads as its run directory does.
    assert torch.equal(shortcutlens.load(run["run"] / "checkpoints" / "latest.pt").features(x), trained.features(x))


def test_export_writes_features_labels_and_a_manifest(run: dict[str, Path], capsys) -> None:
    from shortcutlens.cli.export import main
    from shortcutlens.data import create_dataset

    out = run["base"] / "export"
    code, stdout, err = cli(main, capsys, f"checkpoint={run['run']}", f"data.root={run['data']}", "split=test",
                            "format=both", "progress=false", "device=cpu", f"run_dir={out}")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    feats, labels = np.load(out / "features_pooled.npy"), np.load(out / "labels.npy")
    test = create_dataset("imagefolder", root=str(run["data"]), image_size=SIZE).test
    assert feats.shape == (len(test), 64) and feats.dtype == np.float32
    assert np.array_equal(labels, test.labels.numpy())
    assert torch.equal(torch.load(out / "features_pooled.pt", weights_only=True), torch.from_numpy(feats))
    assert manifest["split"] == "test" and manifest["step"] == 3 and manifest["which"] == "raw"
    assert manifest["files"]["features_pooled.npy"] == {"shape": [len(test), 64], "dtype": "float32"}
    assert manifest["files"]["labels.pt"] == {"shape": [len(test)], "dtype": "int64"}
    assert f"{len(test)} test images of step 3" in stdout
    # The exported features are the trained backbone's features of those images.
    expected = shortcutlens.load(run["run"]).features(test.images.float() / 255)
    assert np.allclose(feats, expected.numpy(), atol=1e-5)


def test_export_of_lensed_features_needs_a_known_source(run: dict[str, Path], capsys) -> None:
    from shortcutlens.cli.export import main

    code, _, err = cli(main, capsys, f"checkpoint={run['run']}", f"data.root={run['data']}", "which=lensd",
                       f"run_dir={run['base'] / 'bad'}", "device=cpu")
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: Unknown feature source which=lensd. Valid sources: raw, lensed, concat"]


def test_the_lens_saves_and_loads_on_its_own(run: dict[str, Path], tmp_path: Path) -> None:
    lens = load_lens(run["run"])
    assert lens.info["image_size"] == SIZE and not lens.training
    path = save_lens(lens, tmp_path / "lens.pt", img_size=SIZE, info=lens.info)
    alone = load_lens(path)
    assert alone.info["image_size"] == SIZE and not alone.training
    assert alone.state_dict().keys() == lens.state_dict().keys()
    x = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(alone(x), lens(x))
    # The file holds the lens alone: no backbone, no pretext head.
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"kind", "name", "arguments", "state_dict", "info"} <= set(state)
    assert not {"backbone", "pretext", "optimizer", "lens_optimizer"} & set(state)


def test_the_lens_edits_a_folder_of_pictures(run: dict[str, Path], capsys) -> None:
    from PIL import Image

    from shortcutlens.cli.lens_folder import main

    pictures = run["base"] / "mine"
    (pictures / "sub").mkdir(parents=True)
    Image.fromarray(np.full((30, 20, 3), 200, np.uint8)).save(pictures / "flat.png")
    Image.fromarray(np.arange(24 * 24, dtype=np.uint8).reshape(24, 24) % 255).save(pictures / "sub" / "ramp.jpg")
    (pictures / "notes.txt").write_text("not a picture")
    out = run["base"] / "mine_edits"
    code, stdout, err = cli(main, capsys, f"checkpoint={run['run']}", f"images={pictures}", f"out={out}",
                            "save_lens=true", "device=cpu")
    assert code == 0, err
    summary = json.loads((out / "edits.json").read_text())
    assert summary["pictures"] == 2 and summary["image_size"] == SIZE
    for name in ("flat", "sub/ramp"):
        for suffix in ("_lensed.png", "_edit.png"):
            with Image.open(out / f"{name}{suffix}") as im:
                assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    budget = summary["lens"]["budget"]
    for row in summary["per_picture"]:
        assert row["mean_abs_edit"] <= budget * (1 + 1e-5)  # the edit budget holds on any picture
    assert "2 pictures edited" in stdout
    assert torch.equal(load_lens(out / "lens.pt").state_dict()["out.weight"], load_lens(run["run"]).state_dict()["out.weight"])
    # Each picture at its own size (trimmed to the lens's stride), from the lens file alone.
    native = run["base"] / "native"
    code, _, err = cli(main, capsys, f"checkpoint={out / 'lens.pt'}", f"images={pictures}", f"out={native}",
                       "image_size=0", "device=cpu")
    assert code == 0, err
    with Image.open(native / "flat_lensed.png") as im:
        assert im.size == (20, 30)


def test_the_lens_command_says_when_there_are_no_pictures(run: dict[str, Path], tmp_path: Path, capsys) -> None:
    from shortcutlens.cli.lens_folder import main

    code, _, err = cli(main, capsys, f"checkpoint={run['run']}", f"images={tmp_path}", f"out={tmp_path / 'o'}")
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: no pictures under {tmp_path}")


def test_every_rebuild_of_a_checkpoint_reports_missing_or_foreign_weights_alike() -> None:
    """``shortcutlens.load``, ``FeatureSource.from_checkpoint`` and ``shortcutlens-visualize`` rebuild the
    models through ``build.load_weights``: a spec without its models, a lens named but not saved, or
    weights of another model beside the spec each give one ``CheckpointError`` naming the part."""
    from shortcutlens.build import build_components, checkpoint_spec, load_weights
    from shortcutlens.checkpoint import CheckpointError

    spec = {"data": {"name": "synthetic", "image_size": SIZE}, "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
            "pretext": {"name": "rotation"}, "lens": {"name": "unet", "width": 4}}
    parts = build_components(spec, in_chans=1, image_size=SIZE)
    state = {"spec": spec, **{k: getattr(parts, k).state_dict() for k in ("backbone", "pretext", "lens")}}
    assert checkpoint_spec(state, "ck.pt") == spec
    with pytest.raises(CheckpointError, match="ck.pt has no component 'spec'"):
        checkpoint_spec({"backbone": {}}, "ck.pt")
    rebuilt = build_components(spec, in_chans=1, image_size=SIZE)
    load_weights(rebuilt, state, "ck.pt")
    assert all(torch.equal(v, state["lens"][k]) for k, v in rebuilt.lens.state_dict().items())
    with pytest.raises(CheckpointError, match="ck.pt's spec names a lens but holds no lens weights"):
        load_weights(rebuilt, {k: v for k, v in state.items() if k != "lens"}, "ck.pt")
    load_weights(rebuilt, {k: v for k, v in state.items() if k != "pretext"}, "ck.pt", optional=("pretext",))
    wider = build_components({**spec, "backbone": {**spec["backbone"], "width": 0.25}}, in_chans=1, image_size=SIZE)
    with pytest.raises(CheckpointError, match=r"ck.pt: the backbone rebuilt from its spec does not fit its weights \(size mismatch"):
        load_weights(rebuilt, {**state, "backbone": wider.backbone.state_dict()}, "ck.pt")
