"""Pictures and logs that explain themselves: labelled edit grids with a colour bar, the mean-edit map
and where the edit concentrates when no shortcut region is known, scaling plots that say which error
they fit and warn when the fit is not determined, ``train.log`` lines and TensorBoard hparams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shortcutlens.scaling import fit_power_law, fit_warning, model_markers, saturating_power_law
from shortcutlens.visualize import BOX, edit_concentration, edit_grid, edit_map_figure, heatmap, tile


def find(picture: np.ndarray, part: np.ndarray) -> tuple[int, int] | None:
    """Where ``part`` ``(h, w, 3)`` sits unchanged inside ``picture``, or None."""
    h, w = part.shape[:2]
    for y in range(picture.shape[0] - h + 1):
        for x in range(picture.shape[1] - w + 1):
            if np.array_equal(picture[y : y + h, x : x + w], part):
                return y, x
    return None


def test_edit_grid_keeps_the_images_and_adds_labels_and_a_colour_bar() -> None:
    images = torch.full((2, 1, 4, 4), 0.5)
    lensed = images.clone()
    lensed[0, 0, 1, 2] = 0.6  # |edit| 0.1, amplified 5x: half of full scale
    grid = edit_grid(images, lensed, amplify=5.0, upscale=4)
    # The three rows as the labels say: input, lensed, |edit| x 5 on the hot ramp (computed here directly).
    diff = torch.zeros(2, 1, 4, 4)
    diff[0, 0, 1, 2] = 0.5
    body = tile([images.expand(-1, 3, -1, -1), lensed.expand(-1, 3, -1, -1), heatmap(diff)], upscale=4)
    at = find(grid, body)
    assert at is not None
    _, x = at
    assert x >= 20  # a label column on the left
    # The colour bar right of the images: the column with the most distinct shades, white at the top
    # (full scale) falling steadily to black (no edit).
    right = grid[:, x + body.shape[1]:].astype(int).sum(axis=2)
    col = max(range(right.shape[1]), key=lambda i: len(np.unique(right[:, i])))
    bar = right[:, col]
    rows = np.flatnonzero(bar < 3 * 255 - 5)
    ramp = bar[rows[0] + 2 : rows[-1] - 1]
    assert len(ramp) >= 10 and ramp[0] > 600 and ramp[-1] < 100 and (np.diff(ramp) <= 0).all()


def test_edit_concentration_finds_the_hot_square() -> None:
    m = torch.full((20, 20), 0.001)
    m[3:7, 10:15] = 1.0  # 20 of 400 pixels: exactly the hottest 5%
    c = edit_concentration(m)
    assert c["hot_box"] == [3, 10, 7, 15] and c["peak"][0] in range(3, 7) and c["peak"][1] in range(10, 15)
    assert c["top_share"] == pytest.approx(20 / (20 + 380 * 0.001))
    assert c["hot_box_share"] == pytest.approx(c["top_share"]) and c["hot_box_area"] == pytest.approx(0.05)
    even = edit_concentration(torch.ones(20, 20))  # no concentration: the top 5% hold 5% of the edit
    assert even["top_share"] == pytest.approx(0.05)
    assert edit_concentration(torch.zeros(8, 8))["top_share"] is None
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        edit_concentration(torch.zeros(2, 8, 8))


def test_mean_edit_figure_boxes_the_hot_region_and_shows_the_shortcut_region() -> None:
    m = torch.zeros(16, 16)
    m[2:5, 8:12] = 1.0
    region = torch.zeros(1, 1, 16, 16)
    region[..., 2:5, 8:12] = 1
    plain = edit_map_figure(m, title="run · rotation · shortcut none", upscale=8)
    boxed = edit_map_figure(m, title="run · rotation · shortcut none", upscale=8, box=[2, 8, 5, 12])
    both = edit_map_figure(m, title="run · rotation · shortcut arrow", upscale=8, region=region)
    cyan = (boxed == np.array(BOX, dtype=np.uint8)).all(axis=2)
    ys, xs = np.nonzero(cyan)
    assert not (plain == np.array(BOX, dtype=np.uint8)).all(axis=2).any()
    assert (xs.max() - xs.min(), ys.max() - ys.min()) == pytest.approx((4 * 8 + 2, 3 * 8 + 2), abs=2)
    assert both.shape[1] > plain.shape[1] + 16 * 8  # the region is a second panel


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")  # 4 points: no covariance, as tested
def test_scaling_fit_warns_when_the_runs_do_not_determine_it() -> None:
    compute = np.geomspace(1e14, 1e19, 16)
    good = fit_power_law(compute, saturating_power_law(compute, a=8e4, b=0.35, c=0.08, d=1e14))
    assert fit_warning(good) is None
    exact = fit_power_law(compute[::5], saturating_power_law(compute[::5], a=8e4, b=0.35, c=0.08, d=1e14))
    assert exact.n_points == 4 and "4 runs for 4 parameters" in fit_warning(exact)
    runs = [{"model": m} for m in ("vit-Ti/8", "mixer-S/8", "vit-Ti/8", "vit-S/8")]
    assert list(model_markers(runs)) == ["vit-Ti/8", "mixer-S/8", "vit-S/8"]
    assert len(set(model_markers(runs).values())) == 3


def test_scaling_cli_titles_the_two_errors_of_a_sweep_apart(tmp_path: Path) -> None:
    from shortcutlens.cli.scaling import main

    compute = np.geomspace(1e11, 1e13, 6)
    probe = saturating_power_law(compute, a=1e3, b=0.3, c=0.2, d=0.0) * (1 + 0.01 * np.sin(np.arange(6)))
    rows = ["model,compute,data_size,error,probe_acc,pretext_error"]
    rows += [f"{'vit' if i % 2 else 'mixer'},{c},1000,{e},{1 - e},{e / 2}" for i, (c, e) in enumerate(zip(compute, probe))]
    (tmp_path / "sweep.csv").write_text("\n".join(rows) + "\n")
    pretext = rows[:1] + [f"{r.split(',')[0]},{r.split(',')[1]},1000,{r.split(',')[5]},{r.split(',')[4]},{r.split(',')[5]}"
                          for r in rows[1:]]
    (tmp_path / "sweep_pretext.csv").write_text("\n".join(pretext) + "\n")
    out = {}
    for stem in ("sweep", "sweep_pretext"):
        main([str(tmp_path / f"{stem}.csv"), "--all-points"])
        out[stem] = json.loads((tmp_path / f"{stem}_fit.json").read_text())
    assert out["sweep"]["error_label"] == "1 − linear-probe accuracy"
    assert out["sweep_pretext"]["error_label"] == "pretext error (test images)"
    assert out["sweep"]["title"] != out["sweep_pretext"]["title"]
    assert out["sweep"]["title"].startswith("1 − linear-probe accuracy")


@pytest.fixture(scope="module")
def lens_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-step debug run with a lens and no shortcut (no region known), progress bar off."""
    from shortcutlens.cli.common import compose
    from shortcutlens.cli.train import run

    run_dir = tmp_path_factory.mktemp("pictures") / "run"
    cfg = compose(["debug=true", "data=synthetic", "lens=unet", "trainer.progress=false", f"run_dir={run_dir}"])
    run(cfg, cfg["run_dir"])
    return run_dir


def tb_events(run_dir: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [e for path in sorted((run_dir / "tb").glob("**/events.out.tfevents.*")) for e in EventFileLoader(str(path)).Load()]


def test_train_log_has_a_line_per_interval_without_the_progress_bar(lens_run: Path) -> None:
    lines = (lens_run / "train.log").read_text().splitlines()
    steps = [line for line in lines if " step " in line]
    assert [line.split(" step ")[1].split()[0] for line in steps] == ["5/10", "10/10"]  # debug logs every 5 steps
    for line in steps:
        fields = line.split(" step ")[1].split()
        values = dict(zip(fields[1::2], fields[2::2]))
        assert {"loss", "acc", "lr", "images/s", "edit"} <= set(values)
        assert float(values["images/s"]) > 0 and 0 <= float(values["acc"]) <= 1


def test_tensorboard_holds_the_run_description_and_its_results(lens_run: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = tb_events(lens_run)
    tags = {v.tag for e in events for v in e.summary.value}
    assert {"results/probe_acc", "results/pretext_acc", "hparam/probe_acc", "hparam/pretext_acc_lensed"} <= tags
    hparams = {}
    for e in events:
        for v in e.summary.value:
            if v.tag == "_hparams_/session_start_info":
                data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                hparams = {k: (x.string_value or x.number_value) for k, x in data.session_start_info.hparams.items()}
    assert hparams["data"] == "synthetic" and hparams["pretext"] == "rotation" and hparams["shortcut"] == "none"
    assert hparams["backbone"].startswith("resnet") and hparams["lens"] == "random_wrong"
    assert hparams["lens_constraint"] == "budget" and hparams["budget"] == pytest.approx(0.02)


def test_visualize_without_a_region_maps_where_the_edit_goes_into_the_runs_tb(lens_run: Path) -> None:
    from shortcutlens.cli.visualize import visualize

    result = visualize(checkpoint=str(lens_run), max_images=64)
    saved = json.loads((lens_run / "visualize" / "visualize.json").read_text())
    assert "edit_inside_outside" not in saved  # no region to compare against
    c = saved["concentration"]
    assert 0.05 <= c["top_share"] <= 1.0 and c["top_fraction"] == 0.05
    y0, x0, y1, x1 = c["hot_box"]
    assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32 and y0 <= c["peak"][0] < y1 and x0 <= c["peak"][1] < x1
    assert result["tb"] == str(lens_run / "tb") and not (lens_run / "visualize" / "tb").exists()
    tags = {v.tag for e in tb_events(lens_run) for v in e.summary.value}
    assert {"lens/mean_edit", "lens/edits", "lens/mean_abs_edit", "lens/edit_top5_share"} <= tags
