"""The linear probe of a trunk trained on a patch task's tiles (relative location, jigsaw).

``build_components`` builds the backbone for the tiles (4 px for 20-px images), so an MLP-Mixer cannot
embed whole images and a ViT's position table is laid out for tiles. As Doersch et al. (ICCV 2015) and
Noroozi & Favaro (ECCV 2016) transfer the trunk, the probe's features are the mean of its features over
the 3×3 grid of tiles cut without jitter (``Pretext.probe_backbone``); a ResNet is probed on whole images as before.
"""

import json

import pytest
import torch

from pretexts import create_pretext
from pretexts.patch_grid import TileMeanBackbone, cut_patches, grid_geometry
from shortcutlens import create_backbone, create_dataset
from shortcutlens.build import build_components, build_data
from shortcutlens.data.loader import to_float
from shortcutlens.eval import FeatureSource
from shortcutlens.eval.features import extract_layers, probe_backbone
from shortcutlens.eval.shortcut_audit import pretext_accuracy
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

SIZE, TILE = 20, 4  # 20-px images: cells of 5 px, jitter 1, 4-px tiles; the evaluation grid starts at 2
BACKBONES = {
    "vit": {"name": "vit", "variant": "Ti/2", "width": 16, "depth": 1, "mlp_dim": 32, "num_heads": 2},
    "mixer": {"name": "mixer", "variant": "S/2", "hidden": 16, "depth": 1, "tokens_mlp": 8, "channels_mlp": 32},
}
PRETEXTS = {
    "relative_location": {"hidden_dim": 16},
    "jigsaw": {"hidden_dim": 16, "num_permutations": 10, "permutations_per_image": 2},
}



def spec(backbone: str, pretext: str) -> dict:
    return {"data": {"name": "synthetic", "image_size": SIZE, "num_train": 24, "num_test": 8},
            "backbone": BACKBONES[backbone], "pretext": {"name": pretext, **PRETEXTS[pretext]}}


def train(tmp_path, backbone: str, pretext: str) -> tuple[Trainer, dict]:
    torch.manual_seed(0)
    s = spec(backbone, pretext)
    data = build_data(s)
    parts = build_components(s, in_chans=data.channels, image_size=data.image_size)
    trainer = Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=None, shortcut=None, data=data,
                      trainer=TrainerConfig(batch_size=4, steps=2, warmup_steps=0, progress=False),
                      adversary=AdversaryConfig(), probe=ProbeConfig(untrained=False, max_iter=20),
                      run_dir=tmp_path, device=torch.device("cpu"), spec=s)
    return trainer, trainer.fit()


@pytest.mark.parametrize("pretext", list(PRETEXTS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_tile_trained_backbone_finishes_a_run_with_its_probe(tmp_path, backbone, pretext):
    trainer, results = train(tmp_path, backbone, pretext)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["probe_acc"] <= 1.0 and metrics["probe_acc"] == results["probe_acc"]
    assert metrics["probe"]["test_images"] == 8
    assert isinstance(probe_backbone(trainer.backbone, trainer.pretext, SIZE), TileMeanBackbone)
    if backbone == "mixer" and pretext == "jigsaw":
        # The evaluators (shortcutlens-probe) rebuild the run from its checkpoint the same way.
        source = FeatureSource.from_checkpoint(tmp_path, device="cpu")
        assert isinstance(source.backbone, TileMeanBackbone)
        feats, labels = source.features("test", layers=["pooled", -1])
        assert feats["pooled"].shape == (8, 16) and feats["layer1"].shape == (8, 16) and labels.shape == (8,)
        # The pretext still cuts its own tiles, which go straight to the trunk.
        assert 0.0 <= pretext_accuracy(source, source.split("test"), view="clean", through_lens=False) <= 1.0


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_tile_mean_features_equal_an_explicit_computation(backbone):
    torch.manual_seed(0)
    s = spec(backbone, "jigsaw")
    data = create_dataset("synthetic", image_size=SIZE, num_train=8, num_test=6)
    parts = build_components(s, in_chans=data.channels, image_size=SIZE)
    trunk = parts.backbone.eval()
    geom = parts.pretext.geometry(SIZE)
    assert (geom.cell, geom.jitter, geom.patch) == (5, 1, TILE)
    feats, labels = extract_layers(probe_backbone(trunk, parts.pretext, SIZE), data.test,
                                   device=torch.device("cpu"), batch_size=4)
    feats = feats["pooled"]
    # By hand: grid of 15 px centred in 20 (origin 2), 4-px tiles at offset 1 // 2 = 0 in their 5-px cells.
    images = to_float(data.test.images)
    with torch.no_grad():
        per_tile = [trunk(images[:, :, 2 + 5 * r: 2 + 5 * r + TILE, 2 + 5 * c: 2 + 5 * c + TILE])
                    for r in range(3) for c in range(3)]
    torch.testing.assert_close(feats, torch.stack(per_tile).mean(dim=0), rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, data.test.labels)
    # Intermediate taps: each tile's tokens pooled, then averaged over the tiles.
    taps, _ = extract_layers(probe_backbone(trunk, parts.pretext, SIZE), data.test, layers=["layer0"],
                             device=torch.device("cpu"))
    with torch.no_grad():
        by_hand = torch.stack([trunk.forward_intermediates(images[:, :, 2 + 5 * r: 6 + 5 * r, 2 + 5 * c: 6 + 5 * c], [0])[0]
                               .mean(dim=1) for r in range(3) for c in range(3)]).mean(dim=0)
    torch.testing.assert_close(taps["layer0"], by_hand, rtol=1e-5, atol=1e-6)


def test_training_cut_is_unchanged_by_the_evaluation_helpers():
    """``cut_patches`` draws the same random grid as before (origin, then offsets) from the same stream."""
    geom = grid_geometry(SIZE)
    images = torch.rand(3, 1, SIZE, SIZE)
    torch.manual_seed(5)
    tiles = cut_patches(images, geom)
    torch.manual_seed(5)
    origin = torch.randint(0, SIZE - geom.grid + 1, (3, 2))
    offsets = torch.randint(0, geom.jitter + 1, (3, 9, 2))
    for b in range(3):
        for k in range(9):
            top = int(origin[b, 0]) + (k // 3) * geom.cell + int(offsets[b, k, 0])
            left = int(origin[b, 1]) + (k % 3) * geom.cell + int(offsets[b, k, 1])
            assert torch.equal(tiles[b, k], images[b, :, top:top + geom.patch, left:left + geom.patch])


def test_resnet_features_are_unchanged():
    torch.manual_seed(0)
    s = {**spec("vit", "jigsaw"), "backbone": {"name": "resnet", "depth": 18, "width": 0.125}}
    data = create_dataset("synthetic", image_size=SIZE, num_train=8, num_test=6)
    parts = build_components(s, in_chans=data.channels, image_size=SIZE)
    assert probe_backbone(parts.backbone, parts.pretext, SIZE) is parts.backbone  # whole images, same module
    feats = extract_layers(parts.backbone, data.test, device=torch.device("cpu"))[0]["pooled"]
    parts.backbone.eval()
    with torch.no_grad():
        assert torch.equal(feats, parts.backbone(to_float(data.test.images)).float())


@pytest.mark.parametrize("pretext", list(PRETEXTS))
def test_probe_tiles_probes_a_resnet_on_the_mean_over_the_grid(pretext):
    """``pretext.probe_tiles=true``: Kolesnikov et al.'s evaluation of the patch tasks (3×3 grid without
    jitter, tiles' representations average-pooled) for a trunk that could take whole images."""
    torch.manual_seed(0)
    s = {"data": spec("vit", pretext)["data"], "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
         "pretext": {"name": pretext, **PRETEXTS[pretext], "probe_tiles": True}}
    data = create_dataset("synthetic", image_size=SIZE, num_train=8, num_test=6)
    parts = build_components(s, in_chans=data.channels, image_size=SIZE)
    probed = probe_backbone(parts.backbone, parts.pretext, SIZE)
    assert isinstance(probed, TileMeanBackbone) and probed.trunk is parts.backbone
    feats = extract_layers(probed, data.test, device=torch.device("cpu"))[0]["pooled"]
    trunk = parts.backbone.eval()
    images = to_float(data.test.images)
    with torch.no_grad():
        by_hand = torch.stack([trunk(images[:, :, 2 + 5 * r: 2 + 5 * r + TILE, 2 + 5 * c: 2 + 5 * c + TILE])
                               for r in range(3) for c in range(3)]).mean(dim=0)
        assert not torch.allclose(feats, trunk(images).float(), atol=1e-3)  # not the whole-image feature
    torch.testing.assert_close(feats, by_hand, rtol=1e-5, atol=1e-6)


def test_impossible_combinations_say_why():
    mixer = create_backbone("mixer", **{k: v for k, v in BACKBONES["mixer"].items() if k != "name"},
                            in_chans=1, img_size=8)
    rotation = create_pretext("rotation", num_features=16)
    with pytest.raises(ValueError, match="built for 8x8 inputs and runs no other size, so it cannot embed 20x20"):
        probe_backbone(mixer, rotation, SIZE)
    jigsaw = create_pretext("jigsaw", num_features=16, **PRETEXTS["jigsaw"])
    with pytest.raises(ValueError, match="Jigsaw cuts 4x4 tiles"):
        probe_backbone(mixer, jigsaw, SIZE)
    data = create_dataset("synthetic", image_size=SIZE, num_train=4, num_test=4)
    with pytest.raises(ValueError, match="runs no other size; got 20x20 images.*probe_backbone"):
        extract_layers(mixer, data.test, device=torch.device("cpu"))
    assert probe_backbone(mixer, rotation, 8) is mixer  # built for the images: probed as it is
