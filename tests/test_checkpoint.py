"""Checkpoints: atomic writes (a failure mid-save never leaves a partial file or clobbers the last good
one), ``weights_only`` reads, and one clear ``CheckpointError`` for anything unreadable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from shortcutlens import checkpoint as ckpt
from shortcutlens.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, unwrap


def state(value: float = 1.0) -> dict:
    return {"step": 7, "seed": 0, "spec": {"backbone": {"name": "resnet", "depth": 18}},
            "backbone": {"w": torch.full((3, 2), value)}, "rng_cpu": torch.get_rng_state(),
            "extra": {"probe_untrained": 0.25}, "names": ["a", "b"]}


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(state(), tmp_path / "deep" / "er" / "latest.pt")  # parents are created
    assert path == tmp_path / "deep" / "er" / "latest.pt"
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["spec"] == state()["spec"] and loaded["names"] == ["a", "b"]
    assert torch.equal(loaded["backbone"]["w"], torch.ones(3, 2))
    assert torch.equal(loaded["rng_cpu"], state()["rng_cpu"])
    assert os.listdir(path.parent) == ["latest.pt"]  # no temporary files left behind


def test_a_run_directory_resolves_to_its_latest_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(state(2.0), tmp_path / "run" / "checkpoints" / "latest.pt")
    for where in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
        assert load_checkpoint(where)["backbone"]["w"][0, 0].item() == 2.0


def failing_save(obj, f, *args, **kwargs) -> None:
    """Writes part of a checkpoint, then dies (a full disk, a kill signal, ...)."""
    f.write(b"PK\x03\x04 half a checkpoint")
    f.flush()
    raise OSError("No space left on device")


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           error: type[BaseException]) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(state(1.0), path)
    before = path.read_bytes()

    def dies(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise error("interrupted mid-save")

    monkeypatch.setattr(ckpt.torch, "save", dies)
    with pytest.raises(error):
        save_checkpoint(state(5.0), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["latest.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["backbone"]["w"][0, 0].item() == 1.0


def test_failed_first_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(state(), tmp_path / "latest.pt")
    assert os.listdir(tmp_path) == []


def test_the_file_appears_only_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    seen_during_write = []
    real_save = torch.save

    def watching_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        seen_during_write.append(path.exists())  # the final name does not exist until the rename

    monkeypatch.setattr(ckpt.torch, "save", watching_save)
    save_checkpoint(state(), path)
    assert seen_during_write == [False] and path.is_file()


class Payload:
    """Pickled code: unpickling it with weights_only=False would run ``touch``."""

    marker: str = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_load_refuses_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    payload = Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": payload}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        load_checkpoint(tmp_path / "absent.pt")
    assert str(tmp_path / "absent.pt") in str(info.value)
    with pytest.raises(CheckpointError, match="checkpoints/latest.pt"):
        load_checkpoint(tmp_path)  # a folder without checkpoints


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_checkpoint(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "latest.pt"
    save_checkpoint(state(), path)
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a checkpoint" * 10, "truncated": raw[: len(raw) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"cannot read checkpoint {path}")


def test_unwrap_finds_the_plain_module() -> None:
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(Wrapper(Wrapper(inner))) is inner
    assert unwrap(inner) is inner
    assert list(unwrap(Wrapper(inner)).state_dict()) == ["weight", "bias"]
