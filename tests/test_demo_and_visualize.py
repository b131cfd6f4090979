"""The demo's code path at tiny size, and shortcutlens-visualize on a tiny lens run."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def test_demo_runs_three_arms_and_writes_table_and_png(tmp_path, capsys):
    import demo

    summary = demo.main(["--steps", "4", "--quick", "--jobs", "2", "--out", str(tmp_path)])  # the parallel path make demo takes
    names = [r["model"] for r in summary["rows"]]
    assert names == ["untrained backbone", demo.CLEAN, demo.ARROW, demo.LENS]
    assert all(0.0 <= r["probe_acc"] <= 1.0 for r in summary["rows"])
    assert summary["data"] == "digits" and summary["fallback_reason"] is None  # --quick never depends on Fashion-MNIST
    assert set(summary["figures"]) == {"gain_over_untrained", "arrow_cost", "lens_gain", "recovery"}
    assert Path(summary["edit_png"]).is_file()
    assert json.loads((tmp_path / "demo.json").read_text())["edit_png"] == summary["edit_png"]
    out = capsys.readouterr().out
    assert f"| {demo.LENS} |" in out and "Edit per pixel inside/outside the arrow" in out and "n = 1 (seed 0)" in out


class FirstRun(Exception):
    """Raised instead of training: carries the first run's overrides."""


def test_demo_falls_back_to_digits_without_fashion_mnist(tmp_path, capsys, monkeypatch):
    import demo

    data, reason = demo.choose_data(str(tmp_path))  # an empty folder as data.root: no Fashion-MNIST there
    assert data == ["data=digits"] and "Fashion-MNIST not found" in reason
    data, reason = demo.choose_data(str(tmp_path / "missing"))  # a folder that does not exist: the same
    assert data == ["data=digits"] and "no such folder" in reason

    def first_run(job):  # the data are chosen before any run starts: stop at the first one
        raise FirstRun(job[0])

    monkeypatch.setattr(demo, "train_one", first_run)
    with pytest.raises(FirstRun) as info:
        demo.main(["--jobs", "1", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "data=digits" in info.value.args[0] and "data=fashion_mnist" not in info.value.args[0]
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("Fashion-MNIST is not on disk, so the demo runs on scikit-learn's bundled digits")
    assert "untrained backbone already probes near 98%" in first


def test_demo_takes_fashion_mnist_from_data_root(tmp_path):
    import demo

    for prefix, n in (("train", 40), ("t10k", 10)):  # tiny but well-formed idx files: the loader's own check
        images = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(n * 28 * 28)
        labels = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n))
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    assert demo.choose_data(str(tmp_path)) == (["data=fashion_mnist", "data.download=false", f"data.root={tmp_path}"], None)


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
