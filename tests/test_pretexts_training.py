"""Every new pretext trains a few steps inside the real training loop, with and without the lens, and
the lens modes that need a classification task refuse the others with a clear message."""

import math

import pytest
import torch

from shortcutlens.adversary import create_objective
from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

# Small heads keep the CPU test fast; the shortcut is the one each task is benchmarked with.
TASKS = {
    "exemplar": ({"copies": 4, "embed_dim": 32}, "watermark"),
    "relative_location": ({"hidden_dim": 64}, "chromatic_aberration"),
    "jigsaw": ({"hidden_dim": 64, "num_permutations": 10}, "chromatic_aberration"),
    "contrastive": ({}, "watermark"),
}
CLASSIFICATION = {"relative_location", "jigsaw"}


def make_trainer(tmp_path, name: str, lens_mode: str | None) -> Trainer:
    kw, shortcut = TASKS[name]
    spec = {
        "data": {"name": "synthetic", "image_size": 16, "num_train": 64, "num_test": 32},
        "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
        "pretext": {"name": name, **kw},
        "lens": {"name": "unet", "width": 4} if lens_mode else {"name": "none"},
        "shortcut": {"name": shortcut},
    }
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                   trainer=TrainerConfig(batch_size=8, steps=3, warmup_steps=0, progress=False),
                   adversary=AdversaryConfig(mode=lens_mode or "full"), probe=ProbeConfig(untrained=False),
                   run_dir=tmp_path, device=torch.device("cpu"))


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


CASES = [(name, mode) for name in TASKS for mode in (None, "full")]
CASES += [(name, "random_wrong") for name in sorted(CLASSIFICATION)] + [("jigsaw", "least_likely")]


@pytest.mark.parametrize("name,mode", CASES)
def test_trains_three_steps(tmp_path, name, mode):
    trainer = make_trainer(tmp_path, name, mode)
    backbone, head = snapshot(trainer.backbone), snapshot(trainer.pretext)
    lens = snapshot(trainer.lens) if trainer.lens is not None else None
    for step in range(3):
        metrics = trainer.train_step(step)
        assert math.isfinite(metrics["loss"].item()) and 0 <= metrics["acc"].item() <= 1
    assert changed(backbone, trainer.backbone) and changed(head, trainer.pretext)
    if lens is not None:
        assert changed(lens, trainer.lens), "the lens got no gradient"
    acc = trainer.pretext_accuracy(with_shortcut=True, through_lens=True, max_images=16)
    assert 0 <= acc <= 1


@pytest.mark.parametrize("name", ["relative_location", "jigsaw"])
def test_patch_tasks_lens_edits_whole_images_before_tiling(tmp_path, name):
    trainer = make_trainer(tmp_path, name, "full")
    x = torch.rand(2, 3, 16, 16)
    inputs, _ = trainer.pretext.views(x)
    assert inputs.shape == x.shape
    features = trainer.pretext.embed(trainer.backbone, trainer.lens(inputs))
    assert features.shape == (2, 9, trainer.backbone.num_features)


@pytest.mark.parametrize("name", ["exemplar", "contrastive"])
@pytest.mark.parametrize("mode", ["least_likely", "random_wrong"])
def test_targeted_lens_modes_play_the_instance_tasks_through_their_task_logits(tmp_path, name, mode):
    trainer = make_trainer(tmp_path, name, mode)  # instance tasks are targetable: no error
    assert trainer.objective.name == mode
    pretext = trainer.pretext
    inputs, targets = pretext.views(torch.rand(4, 1, 16, 16))
    features = torch.randn(inputs.shape[0], 64)
    assert torch.isfinite(create_objective(mode, pretext=pretext).lens_loss(pretext, features, targets))
    full = create_objective("auto", pretext=pretext)  # lens.mode=auto still plays full for these tasks
    assert full.name == "full" and torch.isfinite(full.lens_loss(pretext, features, targets))
