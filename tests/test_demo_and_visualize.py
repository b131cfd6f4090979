"""The demo's code path at tiny size, and shortcutlens-visualize on a tiny lens run."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def test_demo_runs_both_arms_and_writes_table_and_png(tmp_path, capsys):
    import demo

    summary = demo.main(["--steps", "4", "--quick", "--jobs", "2", "--out", str(tmp_path)])  # the parallel path make demo takes
    names = [r["model"] for r in summary["rows"]]
    assert names == ["untrained backbone", "rotation, no lens", "rotation, lens"]
    assert all(0.0 <= r["probe_acc"] <= 1.0 for r in summary["rows"][1:])
    assert Path(summary["edit_png"]).is_file()
    assert json.loads((tmp_path / "demo.json").read_text())["edit_png"] == summary["edit_png"]
    out = capsys.readouterr().out
    assert "| rotation, lens |" in out and "edit inside/outside the arrow" in out


def test_visualize_writes_pictures_and_ratio(tmp_path):
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run
    from shortcutlens.cli.visualize import visualize

    cfg = compose(["debug=true", "data=synthetic", "lens=unet", "shortcut=arrow", "trainer.progress=false",
                   f"run_dir={tmp_path / 'run'}"])
    run(cfg, cfg["run_dir"])
    result = visualize(checkpoint=str(tmp_path / "run"), out_dir=tmp_path / "vis", max_images=64)
    for key in ("edits_png", "mean_edit_png"):
        assert Path(result[key]).is_file()
    assert result["edit_inside_outside"] >= 0 and result["mean_abs_edit"] > 0 and result["images"] == 64
    assert json.loads((tmp_path / "vis" / "visualize.json").read_text())["step"] == 10


def test_visualize_refuses_a_run_without_lens(tmp_path):
    from shortcutlens.checkpoint import CheckpointError
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run
    from shortcutlens.cli.visualize import visualize

    cfg = compose(["debug=true", "data=synthetic", "trainer.progress=false", f"run_dir={tmp_path / 'run'}"])
    run(cfg, cfg["run_dir"])
    with pytest.raises(CheckpointError, match="without a lens"):
        visualize(checkpoint=str(tmp_path / "run"))
