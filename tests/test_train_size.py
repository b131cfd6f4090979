"""``data.train_size``: pretraining on a seeded subset of the train split (the data-size axis of the scaling
sweep, Zhai et al., CVPR 2022) while the linear probe keeps the whole labelled train split."""

import pytest
import torch

from shortcutlens.build import build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

SYNTH = {"name": "synthetic", "image_size": 16, "num_train": 200, "num_test": 40}  # 180 train after val carve


def data_with(train_size, seed=0):
    return build_data({"data": {**SYNTH, "train_size": train_size}}, seed=seed)


def rows(images_or_split):
    images = getattr(images_or_split, "images", images_or_split)
    return {tuple(x.flatten().tolist()) for x in images}


def test_subset_size_membership_and_untouched_splits():
    full, sub = data_with(None), data_with(50)
    assert full.pretrain is None and full.pretrain_split is full.train
    assert len(sub.pretrain) == len(sub.pretrain_split) == 50
    assert rows(sub.pretrain) <= rows(full.train)  # drawn from train, never from val or test
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(sub, name).images, getattr(full, name).images)
    assert "pretrain=50 of train" in sub.summary()


def test_zero_means_all_and_full_size_is_the_whole_split():
    assert data_with(0).pretrain is None
    whole = data_with(len(data_with(None).train))
    assert torch.equal(whole.pretrain.images, whole.train.images)


def test_subset_is_deterministic_per_seed_and_nested():
    a, b = data_with(60), data_with(60)
    assert torch.equal(a.pretrain.images, b.pretrain.images) and torch.equal(a.pretrain.labels, b.pretrain.labels)
    assert rows(data_with(30).pretrain) <= rows(a.pretrain)  # a bigger subset adds images, swaps none
    other = data_with(60, seed=1)  # another seed: another (synthetic) split and another subset
    assert not torch.equal(other.pretrain.images, a.pretrain.images)


@pytest.mark.parametrize("size", [181, 10_000, -5])
def test_too_large_or_negative_is_a_clear_error(size):
    with pytest.raises(ValueError, match=rf"data.train_size={size} is not in \[0, 180\].*synthetic's train split has 180"):
        data_with(size)


def test_training_draws_from_the_subset_and_the_probe_from_the_whole_split(tmp_path):
    from shortcutlens.build import build_components

    spec = {"data": {**SYNTH, "train_size": 24}, "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
            "pretext": {"name": "rotation"}}
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    trainer = Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=None, shortcut=None, data=data,
                      trainer=TrainerConfig(batch_size=8, steps=1, warmup_steps=0, progress=False),
                      adversary=AdversaryConfig(), probe=ProbeConfig(untrained=False, max_iter=5),
                      run_dir=tmp_path, device=torch.device("cpu"))
    subset = rows(data.pretrain)
    seen = set()
    for step in range(6):  # two epochs of the 24-image subset
        seen |= rows(trainer.loader.batch(step)[0])
    assert seen == subset
    assert trainer.run_probe()["train_images"] == len(data.train) == 180
