"""Every pretext trains with every backbone, the lens on (issue 5, point 7): the lens paper (Minderer et al.,
ICML 2020) used ResNets only; here each of the five tasks takes two steps of the real training loop with a
tiny ViT (Zhai et al., CVPR 2022) and a tiny MLP-Mixer (Tolstikhin et al., NeurIPS 2021) in ``full`` mode.

Patch tasks run the trunk on tiles, so the backbone is built for the tile side (``build.trunk_input_size``):
20-px images give a 3×3 grid of 4-px tiles, which the 2-px patches of both models tile exactly.
"""

import math

import pytest
import torch

from shortcutlens.build import build_components, build_data, trunk_input_size
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

SIZE, TILE = 20, 4
BACKBONES = {
    "vit": {"name": "vit", "variant": "Ti/2", "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2},
    "mixer": {"name": "mixer", "variant": "S/2", "hidden": 16, "depth": 2, "tokens_mlp": 8, "channels_mlp": 32},
}
# Small heads keep the CPU test fast.
PRETEXTS = {
    "rotation": {},
    "exemplar": {"copies": 2, "embed_dim": 16},
    "relative_location": {"hidden_dim": 32},
    "jigsaw": {"hidden_dim": 32, "num_permutations": 10, "permutations_per_image": 2},
    "contrastive": {"proj_dim": 16},
}
PATCH_TASKS = {"relative_location", "jigsaw"}


def make_trainer(tmp_path, backbone: str, pretext: str) -> Trainer:
    spec = {
        "data": {"name": "synthetic", "image_size": SIZE, "num_train": 32, "num_test": 8},
        "backbone": BACKBONES[backbone],
        "pretext": {"name": pretext, **PRETEXTS[pretext]},
        "lens": {"name": "unet", "width": 4, "max_levels": 2},
    }
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=None, data=data,
                   trainer=TrainerConfig(batch_size=4, steps=2, warmup_steps=0, progress=False),
                   adversary=AdversaryConfig(mode="full"), probe=ProbeConfig(untrained=False),
                   run_dir=tmp_path, device=torch.device("cpu"))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


@pytest.mark.parametrize("pretext", list(PRETEXTS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_pretext_trains_with_backbone_and_lens(tmp_path, backbone, pretext):
    trainer = make_trainer(tmp_path, backbone, pretext)
    before = {"backbone": snapshot(trainer.backbone), "pretext": snapshot(trainer.pretext), "lens": snapshot(trainer.lens)}
    for step in range(2):
        metrics = trainer.train_step(step)
        assert math.isfinite(metrics["loss"].item()) and 0 <= metrics["acc"].item() <= 1
        assert math.isfinite(metrics["rec"].item())
    moved = {name: changed(before[name], getattr(trainer, name)) for name in before}
    stem = "patch_embed.weight" if backbone == "vit" else "stem.weight"
    assert stem in moved["backbone"], "the first layer got no update: no gradient through the whole trunk"
    assert moved["pretext"] or not before["pretext"], "the pretext head did not train"
    assert moved["lens"], "the lens got no (reversed) gradient"
    assert all(torch.isfinite(p).all() for m in (trainer.backbone, trainer.pretext, trainer.lens) for p in m.parameters())


@pytest.mark.parametrize("pretext", list(PRETEXTS))
def test_backbone_is_built_for_what_the_trunk_sees(tmp_path, pretext):
    """Tiles for the patch tasks, whole images otherwise; the lens always edits whole images."""
    expected = TILE if pretext in PATCH_TASKS else SIZE
    assert trunk_input_size(pretext, PRETEXTS[pretext], SIZE) == expected
    trainer = make_trainer(tmp_path, "mixer", pretext)
    assert trainer.backbone.img_size == (expected, expected)
    if pretext in PATCH_TASKS:
        # A ViT built for the tiles still takes the whole images the linear probe feeds it.
        vit = make_trainer(tmp_path, "vit", pretext).backbone
        assert vit.grid == (TILE // 2, TILE // 2)
        assert vit(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 32)
