"""``shortcutlens-visualize``: pictures and numbers of what a trained lens edits.

From a checkpoint (its stored spec rebuilds the data, the shortcut and the lens) it writes:

- ``edits.png``: labelled rows input / lensed / |edit| × k (k stated) for ``num_images`` images, with a
  colour bar, titled with the run, pretext, shortcut and step;
- ``mean_edit.png``: the mean |edit| over ``max_images`` images — *where* the lens works — as a heat map
  with a colour bar, the hottest 5% of pixels boxed, next to the shortcut's region when the run had one;
- ``visualize.json``: mean |edit|; where the edit concentrates (``concentration``: the share of the edit
  in the hottest 5% of pixels and the box of the hottest region), which is what there is to read when
  no region is known (an image folder); and for a shortcut with a region, the mean edit inside it over
  the mean outside;
- the same pictures and scalars in the run's own TensorBoard folder, ``<run>/tb``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from shortcutlens.cli.common import CONF_DIR, clear_errors, hydra_errors, resolve_device


def visualize(
    *,
    checkpoint: str,
    out_dir: str | Path | None = None,
    split: str = "test",
    num_images: int = 12,
    max_images: int = 2048,
    with_shortcut: bool = True,
    data_root: str | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    from shortcutlens.build import build_components, build_data, checkpoint_spec, load_weights
    from shortcutlens.checkpoint import CheckpointError, load_checkpoint
    from shortcutlens.data.loader import to_float
    from shortcutlens.data.shortcuts import adapt_channels
    from shortcutlens.eval.lens_edit import edit_summary, lens_edits
    from shortcutlens.visualize import edit_concentration, edit_grid, edit_map_figure, mean_edit_map, save_png

    device = device or torch.device("cpu")
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "lens" not in state:
        raise CheckpointError(f"{checkpoint} was trained without a lens (lens=none): there are no edits to show")
    spec = checkpoint_spec(state, checkpoint)
    if data_root is not None:
        spec["data"] = {**spec["data"], "root": data_root}
    data = build_data(spec, seed=int(state.get("seed", 0)))
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    load_weights(parts, state, checkpoint, which=("lens",))
    lens = parts.lens.to(device).eval()
    shortcut = parts.shortcut if with_shortcut else None
    run_path = Path(checkpoint)
    run_path = run_path if run_path.is_dir() else run_path.parent.parent
    out = Path(out_dir) if out_dir else run_path / "visualize"
    out.mkdir(parents=True, exist_ok=True)

    images = data.split(split).images[:max_images]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = to_float(x.to(device))
        if shortcut is not None:
            return shortcut(x)
        return adapt_channels(x, parts.in_chans)  # grayscale shown to a lens built for a colour-making shortcut

    edit = getattr(lens, "edit", None) or lens.apply  # the lens's transfer-time call (renamed apply -> edit)
    shortcut_name = (spec.get("shortcut") or {}).get("name") or "none"
    about = (f"{run_path.resolve().name} · pretext {(spec.get('pretext') or {}).get('name', '?')} · shortcut "
             f"{shortcut_name}{'' if with_shortcut or shortcut_name == 'none' else ' (not drawn)'} · step {int(state['step'])}")
    first = prepare(images[:num_images])
    grid_png = save_png(edit_grid(first, edit(first), title=f"{about} · {split} images"), out / "edits.png")

    edits = torch.cat([lens_edits(lens, x) for x in (prepare(chunk) for chunk in images.split(256))])
    mean_map = mean_edit_map(edits)
    concentration = edit_concentration(mean_map)
    region = None  # where the cue acts on each image (a fixed mark: the same everywhere; the aberration: its fringes)
    if parts.shortcut is not None:
        region = torch.cat([parts.shortcut.regions(to_float(chunk.to(device))) for chunk in images.split(256)])
    summary = edit_summary(edits, region)  # the lens_edit evaluator's numbers (shortcutlens.eval.lens_edit)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "step": int(state["step"]), "images": int(edits.shape[0]),
                              "mean_abs_edit": summary["mean_abs_edit"], "shortcut": spec.get("shortcut", {}).get("name"),
                              "concentration": concentration, "edits_png": str(grid_png)}
    if "edit_ratio" in summary:
        result["edit_inside_outside"] = summary["edit_ratio"]
    # the region panel: the share of these images in which each pixel is in the cue's region
    figure = edit_map_figure(mean_map, title=f"{about}\nmean |edit| over {edits.shape[0]} {split} images",
                             region=None if region is None else region.float().mean(dim=0), box=concentration["hot_box"])
    result["mean_edit_png"] = str(save_png(figure, out / "mean_edit.png"))

    from torch.utils.tensorboard import SummaryWriter

    result["tb"] = str(run_path / "tb")
    with SummaryWriter(result["tb"]) as writer:
        import numpy as np
        from PIL import Image

        for tag, path in (("lens/edits", grid_png), ("lens/mean_edit", result["mean_edit_png"])):
            writer.add_image(tag, np.asarray(Image.open(path)), result["step"], dataformats="HWC")
        writer.add_scalar("lens/mean_abs_edit", result["mean_abs_edit"], result["step"])
        if "edit_inside_outside" in result:
            writer.add_scalar("lens/edit_inside_outside", result["edit_inside_outside"], result["step"])
        if concentration["top_share"] is not None:
            writer.add_scalar("lens/edit_top5_share", concentration["top_share"], result["step"])
    (out / "visualize.json").write_text(json.dumps(result, indent=2))
    return result


@hydra_errors("visualize")
@hydra.main(version_base=None, config_path=CONF_DIR, config_name="visualize")
@clear_errors
def main(cfg: DictConfig) -> None:
    from shortcutlens.checkpoint import inspecting_nonfinite
    from shortcutlens.config_schema import validate_visualize

    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    validate_visualize(c)  # the whole config before the checkpoint or any data is read
    with inspecting_nonfinite(bool(c.get("allow_nonfinite", False))):  # +allow_nonfinite=true: a diverged run
        result = visualize(checkpoint=c["checkpoint"], out_dir=c["run_dir"], split=c["split"],
                           num_images=c["num_images"], max_images=c["max_images"], with_shortcut=c["shortcut"],
                           data_root=c["data"]["root"], device=resolve_device(c["device"]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
