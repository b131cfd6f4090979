"""experiments/decoloured_cue.py: the conditions differ only in their images (same views, same network),
greying is the channel mean, and results are never written over."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import decoloured_cue as dc


def train(run_dir: Path, *overrides: str) -> None:
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    cfg = compose(["debug=true", "data=digits", "trainer.progress=false", "probe.untrained=false",
                   f"run_dir={run_dir}", *overrides])
    run(cfg, cfg["run_dir"])


def test_grey_is_the_channel_mean_over_the_window():
    x = torch.rand(2, 3, 8, 8)
    g = dc.grey(x)
    assert g.shape == x.shape and torch.allclose(g[:, 2], x.mean(dim=1))
    g3 = dc.grey(x, 3)
    assert g3[0, 0, 4, 4] == pytest.approx(x[0].mean(dim=0)[3:6, 3:6].mean().item(), abs=1e-6)


def test_conditions_differ_only_in_their_images(tmp_path):
    # At intensity 0 the aberration is the identity on grey images: every condition sees the same images,
    # so (same views, same network) every accuracy must be the same number.
    zero = tmp_path / "zero"
    train(zero, "shortcut=chromatic_aberration", "shortcut.intensity=0.0")
    result = dc.main([str(zero), "--images", "128", "--out", str(tmp_path / "out.json")])[0]
    accs = set(result["pretext_acc"].values()) - {result["pretext_acc"]["aberration, grey 3x3 mean"]}
    assert len(accs) == 1 and 0.0 < accs.pop() <= 1.0
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["results"][0]["images"] == 128
    with pytest.raises(SystemExit, match="exists"):
        dc.main([str(zero), "--out", str(tmp_path / "out.json")])
    clean = tmp_path / "clean"
    train(clean)
    with pytest.raises(SystemExit, match="without a shortcut"):
        dc.main([str(clean), "--out", str(tmp_path / "other.json")])
