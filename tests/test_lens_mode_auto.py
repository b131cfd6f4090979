"""``lens.mode=auto`` (the default) through ``shortcutlens-train``: ``random_wrong`` for a classification
pretext, ``full`` otherwise, so ``pretext=exemplar lens=unet`` trains with no further flag; the resolved
mode is what ``metrics.json`` and TensorBoard record; an unknown or unplayable mode is one error line.

The commands run in this process through the Hydra entry point, as ``shortcutlens-train`` runs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

TINY = ("data=synthetic", "data.num_train=32", "data.num_test=16", "lens=unet", "lens.width=4", "trainer.steps=2",
        "trainer.batch_size=8", "trainer.warmup_steps=0", "trainer.log_every=1", "trainer.image_every=0",
        "trainer.progress=false", "probe.untrained=false", "probe.max_iter=5", "device=cpu")


def train(*args: str) -> int:
    """``shortcutlens-train args`` in this process; its exit status (0 when it returns)."""
    from shortcutlens.cli.train import main

    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["shortcutlens-train", *args])
        try:
            main()
        except SystemExit as exit_:
            return int(exit_.code or 0)
    return 0


@pytest.mark.parametrize(("pretext", "resolved"), [(("pretext=exemplar", "pretext.copies=2", "pretext.embed_dim=16"), "full"),
                                                   (("pretext=rotation",), "random_wrong")])
def test_auto_resolves_per_pretext_and_the_run_records_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          pretext: tuple[str, ...], resolved: str) -> None:
    code = train(*TINY, *pretext, f"run_dir={tmp_path}")
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["lens_mode"] == resolved
    assert metrics["settings"]["adversary"]["mode"] == resolved
    assert metrics["config"]["lens"]["mode"] == "auto"  # what was asked, beside what was played
    # TensorBoard's hparams name the objective that was played, not "auto".
    events = b"".join(p.read_bytes() for p in (tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert resolved.encode() in events


@pytest.mark.parametrize(("args", "message"), [
    (("lens.mode=nope",), "Unknown lens mode 'nope'. Valid lens modes: auto, entropy, full, least_likely, random_wrong"),
    (("lens.mode=Random_Wrong",), "Unknown lens mode 'Random_Wrong'"),
])
def test_a_mode_that_cannot_be_played_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        args: tuple[str, ...], message: str) -> None:
    code, err = train(*TINY, *args, f"run_dir={tmp_path}"), capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "metrics.json").exists()
