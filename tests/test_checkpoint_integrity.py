"""Checkpoints a user must never be handed silently: bit-flipped, non-finite, hostile, truncated, empty,
of another model, written onto a full disk — each refused in one line naming the file; and a training
run that never saves non-finite weights, cleans up after a kill and keeps ``metrics.json`` exact across
a resume."""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from shortcutlens import checkpoint as ckpt
from shortcutlens.checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    inspecting_nonfinite,
    load_checkpoint,
    save_checkpoint,
)

MARK = 1.2345  # a value whose float32 bytes are easy to find in the file


def state(value: float = MARK) -> dict:
    return {"step": 3, "spec": {"backbone": {"name": "resnet"}}, "backbone": {"w": torch.full((64,), value)},
            "pretext": {"b": torch.zeros(2)}, "names": ["a"], "lr": 0.1}


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_a_bit_flip_in_the_weights_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(state(), tmp_path / "latest.pt")
    raw = bytearray(path.read_bytes())
    at = raw.find(struct.pack("<f", MARK) * 4)
    assert at > 0
    raw[at + 1] ^= 0x10  # one bit of one weight: torch.load alone would accept it
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["backbone"]["w"][0].item() != pytest.approx(MARK)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in one_line(info.value) and "corrupt" in str(info.value) and "checksum" in str(info.value)


def test_integrity_record_round_trips_and_is_not_returned(tmp_path: Path) -> None:
    path = save_checkpoint(state(), tmp_path / "latest.pt")
    raw = torch.load(path, weights_only=True)
    assert len(raw[ckpt.INTEGRITY_KEY]["sha256"]) == 64
    loaded = load_checkpoint(path)
    assert ckpt.INTEGRITY_KEY not in loaded and torch.equal(loaded["backbone"]["w"], state()["backbone"]["w"])
    legacy = tmp_path / "legacy.pt"  # written before checksums: still readable
    torch.save(state(), legacy)
    assert load_checkpoint(legacy)["step"] == 3


def test_non_finite_weights_are_refused_unless_inspecting(tmp_path: Path) -> None:
    path = save_checkpoint(state(float("nan")), tmp_path / "latest.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = one_line(info.value)
    assert str(path) in message and "backbone.w" in message and "64 of 64" in message and "allow_nonfinite" in message
    assert torch.isnan(load_checkpoint(path, allow_nonfinite=True)["backbone"]["w"]).all()
    with inspecting_nonfinite():
        assert load_checkpoint(path)["step"] == 3
    with pytest.raises(CheckpointError):  # the permission ends with the block
        load_checkpoint(path)


def test_hostile_pickle_never_runs_and_the_message_says_why(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    message = one_line(info.value)
    assert str(path) in message and "never loaded" in message and "Weights only" not in message


@pytest.mark.parametrize("damage, words", [("empty", "empty (0 bytes"), ("truncated", "truncated"),
                                           ("garbage", "not a PyTorch checkpoint")])
def test_damaged_files_say_what_they_are_and_what_to_do(tmp_path: Path, damage: str, words: str) -> None:
    path = save_checkpoint(state(), tmp_path / "latest.pt")
    raw = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "garbage": b"\x07" * 300}[damage])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = one_line(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: ") and words in message
    assert "earlier checkpoint" in message and "PytorchStreamReader" not in message


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints" / "latest.pt").mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "run")


def test_a_full_disk_is_reported_and_the_previous_checkpoint_kept(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(state(1.0), tmp_path / "latest.pt")
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 200:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(state(2.0), path)
    message = one_line(info.value)
    assert message.startswith("disk full") and "previous checkpoint is kept" in message and "unexpected pos" not in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["latest.pt"]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    save_checkpoint(state(), tmp_path / "latest.pt")
    stale = tmp_path / ".latest.pt.k1ll3d.tmp"
    stale.write_bytes(b"")  # what a kill -9 during torch.save leaves
    assert ckpt.remove_stale_temporaries(tmp_path) == [stale]
    assert os.listdir(tmp_path) == ["latest.pt"]


# ---------------------------------------------------------------------------------------------- training runs

RUN = ("data=synthetic", "backbone.width=0.125", "trainer.batch_size=8", "trainer.progress=false",
       "probe.untrained=false", "probe.max_iter=5", "device=cpu", "trainer.warmup_steps=0")


def config(*overrides: str) -> dict:
    from shortcutlens.cli.common import compose

    return compose([*RUN, *overrides])


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler catches it."""


def test_metrics_json_is_the_same_after_a_kill_and_resume(tmp_path: Path, monkeypatch) -> None:
    from shortcutlens.cli.train import run
    from shortcutlens.train.loop import Trainer

    # Checkpoints every 4 steps, logs every 5: killed after step 9, the run resumes from step 8, in the
    # middle of the logging window 6-10, whose means must still cover all five steps.
    args = ("trainer.steps=12", "trainer.ckpt_every=4", "trainer.log_every=5")
    reference = run(config(*args), str(tmp_path / "ref"))

    real_step = Trainer.train_step

    def dies_at_9(self, step):
        if step == 9:
            raise Killed
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", dies_at_9)
    with pytest.raises(Killed):
        run(config(*args), str(tmp_path / "killed"))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert torch.load(tmp_path / "killed" / "checkpoints" / "latest.pt", weights_only=True)["step"] == 8
    resumed = run({**config(*args), "resume": True}, str(tmp_path / "killed"))

    saved = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    timing = {"images_per_s"}
    assert {k: v for k, v in saved["train"].items() if k not in timing} == \
        {k: v for k, v in ref["train"].items() if k not in timing}
    assert saved["train"]["loss"] == reference["train"]["loss"] == resumed["train"]["loss"]
    for key in ("step", "pretext_acc", "probe_acc"):
        assert saved[key] == ref[key], key


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    from shortcutlens.cli.train import run
    from shortcutlens.train.loop import Trainer

    run(config("trainer.steps=2", "trainer.ckpt_every=2"), str(tmp_path / "run"))
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    before = path.read_bytes()

    # The loss can look finite while a BatchNorm buffer has overflowed (trainer.lr=30 did this).
    real_save = Trainer.save

    def overflowed(self, p):
        next(b for n, b in self.backbone.named_buffers() if n.endswith("running_var")).fill_(float("inf"))
        return real_save(self, p)

    Trainer.save = overflowed
    try:
        with pytest.raises(NonFiniteLossError) as info:
            run({**config("trainer.steps=4", "trainer.ckpt_every=2"), "resume": True}, str(tmp_path / "run"))
    finally:
        Trainer.save = real_save
    message = one_line(info.value)
    assert "running_var" in message and "non-finite" in message and f"last finite checkpoint {path} is kept" in message
    assert path.read_bytes() == before


def test_a_checkpoint_of_another_backbone_is_refused_in_one_line(tmp_path: Path) -> None:
    from shortcutlens.cli.train import run

    run(config("trainer.steps=1"), str(tmp_path / "run"))
    with pytest.raises(CheckpointError) as info:
        run({**config("trainer.steps=2", "backbone.width=0.25"), "resume": True}, str(tmp_path / "run"))
    message = one_line(info.value)
    assert str(tmp_path / "run" / "checkpoints" / "latest.pt") in message and "another backbone" in message


def test_stale_temporary_removed_at_the_next_start(tmp_path: Path) -> None:
    from shortcutlens.cli.train import run

    stale = tmp_path / "run" / "checkpoints" / ".latest.pt.x9q2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    (tmp_path / "run" / ".metrics.json.tmp").write_text("{")
    run(config("trainer.steps=1"), str(tmp_path / "run"))
    assert sorted(os.listdir(stale.parent)) == ["latest.pt"]
    assert not list((tmp_path / "run").glob(".*.tmp"))
