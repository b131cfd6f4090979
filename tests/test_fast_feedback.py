"""Fast feedback (issue 13): the end-of-run probe says what it is doing, on a default subset of the training
images, and a warm-up as long as the run is flagged. (Timings: experiments/bench_probe.py; no test asserts
on time.)"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer


def make_trainer(tmp_path, *, steps: int = 2, warmup_steps: int = 0, probe: ProbeConfig | None = None) -> Trainer:
    spec = {"data": {"name": "synthetic", "image_size": 16, "num_train": 64, "num_test": 16},
            "backbone": {"name": "resnet", "depth": 18, "width": 0.125}, "pretext": {"name": "rotation"}}
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    return Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=None, shortcut=None, data=data,
                   trainer=TrainerConfig(batch_size=8, steps=steps, warmup_steps=warmup_steps, progress=False),
                   adversary=AdversaryConfig(), probe=probe or ProbeConfig(untrained=False, max_iter=10),
                   run_dir=tmp_path, device=torch.device("cpu"), spec=spec)


def test_a_warmup_as_long_as_the_run_is_flagged(tmp_path):
    with pytest.warns(UserWarning, match=r"trainer.warmup_steps=50 >= trainer.steps=30: .* ends at 60% of trainer.lr"):
        make_trainer(tmp_path, steps=30, warmup_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_trainer(tmp_path, steps=30, warmup_steps=29)


def test_the_probe_logs_each_step_with_its_time(tmp_path, caplog):
    trainer = make_trainer(tmp_path)
    with caplog.at_level(logging.INFO, logger="shortcutlens"):
        result = trainer.run_probe(desc="probe (untrained)")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("features train [clean, raw]: 58 images, pooled in ") for line in lines)  # 64 − 6 val
    assert any(line.startswith("features test [clean, raw]: 16 images") for line in lines)
    assert any(line.startswith("linear [raw/pooled]: 58 x 64 features") for line in lines)
    assert f"probe (untrained): top-1 {result['accuracy']:.4f} on 58 + 16 images" in " ".join(lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shortcutlens"):
        acc = trainer.pretext_accuracy(with_shortcut=False, through_lens=False)
    assert any(r.getMessage().startswith(f"pretext accuracy (clean, raw): {acc:.4f} on 16 test images in ")
               for r in caplog.records)


def test_the_default_probe_is_a_fixed_subset_of_the_training_images(tmp_path):
    assert ProbeConfig().max_train == 10_000 and ProbeConfig().precision == "float32"
    first = make_trainer(tmp_path / "a", probe=ProbeConfig(untrained=False, max_train=20, max_iter=10)).run_probe()
    again = make_trainer(tmp_path / "b", probe=ProbeConfig(untrained=False, max_train=20, max_iter=10)).run_probe()
    assert first["train_images"] == 20 and first == again
