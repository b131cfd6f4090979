"""One probe (issue 12): the end-of-run probe and the training diagnostics are the evaluators.

A run's ``probe_acc`` is the ``linear`` evaluator's top-1 on a ``FeatureSource`` rebuilt from its checkpoint
(same images, same L2 choice, same solver); its ``edit_ratio`` comes from the ``lens_edit`` functions that
``shortcutlens-visualize`` and the ``lens_edit`` evaluator use, and those agree with each other.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shortcutlens.build import build_components, build_data
from shortcutlens.eval import FeatureSource, create_evaluator
from shortcutlens.eval.base import evaluating
from shortcutlens.eval.lens_edit import edit_summary, lens_edits, pretext_accuracy
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer


def train(tmp_path, *, shortcut: str, probe: ProbeConfig, lens: bool = True) -> dict:
    spec = {"data": {"name": "synthetic", "image_size": 16, "num_train": 96, "num_test": 40},
            "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
            "pretext": {"name": "rotation", "all_rotations": False},
            "lens": {"name": "unet", "width": 4, "max_levels": 2} if lens else {"name": "none"},
            "shortcut": {"name": shortcut}}
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    trainer = Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut,
                      data=data, trainer=TrainerConfig(batch_size=8, steps=3, warmup_steps=0, log_every=3,
                                                       image_every=0, progress=False),
                      adversary=AdversaryConfig(mode="random_wrong"), probe=probe, run_dir=tmp_path,
                      device=torch.device("cpu"), spec=spec)
    return trainer.fit()


@pytest.mark.parametrize("shortcut, probe", [
    ("arrow", ProbeConfig(untrained=False, max_train=50, max_iter=30)),
    # a colour-making shortcut: clean grayscale images are probed replicated to the backbone's 3 channels;
    # the L2 strength chosen on data.val and refit on train + val
    ("chromatic_aberration", ProbeConfig(untrained=False, l2_grid=[1e-4, 10.0], max_iter=30, features="concat")),
])
def test_the_end_of_run_probe_is_the_linear_evaluator(tmp_path, shortcut, probe):
    results = train(tmp_path, shortcut=shortcut, probe=probe)
    source = FeatureSource.from_checkpoint(tmp_path, device="cpu", seed=0)
    assert source.in_chans == (3 if shortcut == "chromatic_aberration" else 1)
    linear = create_evaluator("linear", which=[probe.features], l2_grid=list(probe.l2_grid) or [probe.l2],
                              train_split="train", val_split="val", max_train=probe.max_train, max_iter=probe.max_iter,
                              precision=probe.precision)
    m = dict(linear.run(source))
    prefix = f"linear/{probe.features}/pooled/"
    assert results["probe_acc"] == pytest.approx(m[prefix + "top1"], abs=1e-6)
    assert results["probe"]["l2"] == m[prefix + "l2"] and results["probe"]["features"] == probe.features
    assert results["probe"]["train_images"] == m[prefix + "train_images"] == min(probe.max_train, 86)  # 96 − 10 val
    assert results["probe"]["test_images"] == 40


def test_edit_ratio_is_the_lens_edit_measurement_visualize_and_the_evaluator_share(tmp_path):
    from shortcutlens.cli.visualize import visualize

    results = train(tmp_path, shortcut="arrow", probe=ProbeConfig(untrained=False, max_iter=10))
    assert {"edit_ratio", "eval_acc_raw", "eval_acc_lensed"} <= set(results["train"])
    assert results["edit_ratio"] > 0 and 0 <= results["eval_acc_lensed"] <= 1
    source = FeatureSource.from_checkpoint(tmp_path, device="cpu")
    m = dict(create_evaluator("lens_edit").run(source))
    shown = visualize(checkpoint=str(tmp_path), out_dir=tmp_path / "pictures")
    assert m["lens_edit/edit_ratio"] == pytest.approx(shown["edit_inside_outside"], rel=1e-5)
    assert m["lens_edit/mean_abs_edit"] == pytest.approx(shown["mean_abs_edit"], rel=1e-5)
    assert 0 <= m["lens_edit/pretext_acc/lensed"] <= 1 and 0 <= m["lens_edit/pretext_acc/raw"] <= 1


class AddInside(nn.Module):
    """A stand-in lens: +0.4 on the top-left 2×2 pixels, +0.1 everywhere else."""

    def edit(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        out = x + 0.1
        out[..., :2, :2] += 0.3
        return out


def test_edit_summary_by_hand():
    x = torch.zeros(3, 1, 4, 4)
    region = torch.zeros(1, 1, 4, 4)
    region[..., :2, :2] = 1
    out = edit_summary(lens_edits(AddInside(), x), region)
    assert out["mean_abs_edit"] == pytest.approx((4 * 0.4 + 12 * 0.1) / 16)
    assert out["edit_ratio"] == pytest.approx(4.0)
    assert set(edit_summary(lens_edits(AddInside(), x), None)) == {"mean_abs_edit"}


def test_pretext_accuracy_weights_batches_and_scores_every_lens_on_the_same_views():
    # A "head" right when the mean pixel is below 0.05; the lens adds 0.1-0.4, so it gets every view wrong.
    def score(inputs, targets):
        return (inputs.mean(dim=(1, 2, 3)) < 0.05).float().mean()

    views = [(torch.zeros(3, 1, 4, 4), torch.zeros(3)), (torch.ones(1, 1, 4, 4), torch.zeros(1))]
    raw, lensed = pretext_accuracy(score, iter(views), lenses=(None, AddInside()))
    assert raw == pytest.approx(3 / 4) and lensed == pytest.approx(0.0)


def test_evaluating_restores_every_submodule_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    model[0].eval()  # a frozen part stays frozen
    with evaluating(model, None):
        assert not any(m.training for m in model.modules())
    assert model.training and model[1].training and not model[0].training


def test_a_streamed_folder_is_probed_as_the_same_folder_in_memory(tmp_path):
    """An image folder too big for memory (streamed: files decoded in workers) gives the probe the same
    features and numbers as in memory; the feature cache keys it by its files, none decoded to hash."""
    import numpy as np
    from PIL import Image

    from shortcutlens import create_backbone, create_dataset
    from shortcutlens.data.stream import StreamSplit

    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for i in range(12):
            Image.fromarray(np.full((8, 8, 3), 20 * i + c, dtype=np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    kw = {"root": str(tmp_path), "image_size": 8, "val_fraction": 0.2, "test_fraction": 0.25}
    streamed = create_dataset("imagefolder", **kw, max_memory_gb=1e-9, workers=1)
    in_memory = create_dataset("imagefolder", **kw)
    assert isinstance(streamed.train, StreamSplit) and not isinstance(in_memory.train, StreamSplit)
    torch.manual_seed(0)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=3)
    linear = create_evaluator("linear", l2_grid=[1e-4, 1.0], max_iter=10, max_train=20)
    got = [dict(linear.run(FeatureSource(backbone=backbone, data=data))) for data in (streamed, in_memory)]
    assert got[0] == pytest.approx(got[1], abs=1e-5) and got[0]["linear/raw/pooled/train_images"] == 20
    feats = [FeatureSource(backbone=backbone, data=data).features("trainval")[0]["pooled"] for data in (streamed, in_memory)]
    torch.testing.assert_close(feats[0], feats[1])
