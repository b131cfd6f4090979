"""What the builder and the evaluators ask of a pretext task are declared methods of ``pretexts.Pretext``
(issue 12): whole images by default; the patch tasks answer with their tile grid. The builder asks the
class, so sizing the backbone never builds the task (no meta-device copy)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretexts import PRETEXTS, Pretext, create_pretext
from pretexts.patch_grid import TileMeanBackbone
from shortcutlens import create_backbone
from shortcutlens.build import trunk_input_size


class WholeImages(Pretext):
    num_classes = 2

    def __init__(self, *, num_features: int) -> None:
        super().__init__()
        self.head = nn.Linear(num_features, 2)


def test_a_task_that_declares_nothing_sees_whole_images():
    task = WholeImages(num_features=4)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1)
    assert WholeImages.trunk_input_size(32) == 32 and task.geometry(32) is None
    assert task.probe_backbone(backbone, 32) is backbone


@pytest.mark.parametrize("settings", [{}, {"grid_fraction": 0.9, "jitter_fraction": 0.1}, {"jitter_fraction": 0.0}])
@pytest.mark.parametrize("name", ["relative_location", "jigsaw"])
@pytest.mark.parametrize("size", [20, 32, 64])
def test_the_class_answer_is_the_built_tasks_tile(name, settings, size):
    task = create_pretext(name, num_features=4, hidden_dim=0, **settings)
    assert trunk_input_size(name, {"hidden_dim": 0, **settings}, size) == task.geometry(size).patch < size


def test_the_builder_asks_the_class_without_building_it(monkeypatch):
    class NeverBuilt(WholeImages):
        def __init__(self, **kwargs) -> None:
            raise AssertionError("sizing the backbone built the task")

        @classmethod
        def trunk_input_size(cls, image_size: int, **settings) -> int:
            return image_size // settings["shrink"]

    monkeypatch.setattr(PRETEXTS, "_builders", {**PRETEXTS._builders, "never_built": NeverBuilt})
    assert trunk_input_size("never_built", {"shrink": 4}, 32) == 8


def test_a_patch_task_probes_a_tile_built_trunk_on_the_grid_and_a_resnet_as_it_is():
    task = create_pretext("jigsaw", num_features=16, hidden_dim=0, num_permutations=10)
    tile = task.geometry(20).patch
    mixer = create_backbone("mixer", variant="S/2", hidden=16, depth=1, tokens_mlp=8, channels_mlp=32, in_chans=1,
                            img_size=tile)
    probed = task.probe_backbone(mixer, 20)
    assert isinstance(probed, TileMeanBackbone) and probed(torch.rand(2, 1, 20, 20)).shape == (2, 16)
    resnet = create_backbone("resnet", depth=18, width=0.125, in_chans=1)
    assert task.probe_backbone(resnet, 20) is resnet
