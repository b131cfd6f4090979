"""``shortcutlens-lens``: what a trained lens does to *your* pictures.

Loads the lens alone (from a run directory, a training checkpoint or a lens file written by
``shortcutlens.api.save_lens``), applies it to every picture under ``images`` (recursively) and writes,
under ``out``, mirroring the folder layout:

- ``<name>_lensed.png``: the picture after the lens, ``x' = x + r(x)`` (Minderer et al., ICML 2020);
- ``<name>_edit.png``: ``|x' − x|`` averaged over channels, as a black-red-yellow-white heatmap; all maps
  share one scale (the folder's largest edit is white) unless ``amplify`` fixes it;
- ``edits.json``: per picture its size, mean and largest |edit| (pixel values in [0, 1]), and the scale.

Pictures are converted to the lens's channels (grayscale or RGB) and resized to the size it was trained
on (``image_size=0``: kept at their own size, trimmed to a multiple of the lens's stride).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from shortcutlens.cli.common import CONF_DIR, clear_errors, resolve_device

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_picture(path: Path, *, channels: int, size: int | None, stride: int) -> torch.Tensor:
    """A picture as ``(1, channels, H, W)`` floats in [0, 1], resized to ``size`` (or trimmed to ``stride``)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        else:
            w, h = (max(stride, s - s % stride) for s in im.size)
            im = im.resize((w, h), Image.BILINEAR) if (w, h) != im.size else im
        arr = np.asarray(im, dtype=np.uint8)
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy()).float().div_(255.0)[None]


def to_png(x: torch.Tensor, path: Path) -> None:
    """``(1, C, H, W)`` in [0, 1] (C = 1 or 3) -> an 8-bit PNG."""
    from PIL import Image

    arr = (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def lens_folder(*, checkpoint: str, images: str, out: str, image_size: int | None = None,
                amplify: float | None = None, save_lens: bool = False,
                device: torch.device | None = None) -> dict[str, Any]:
    """Apply the lens of ``checkpoint`` to the pictures under ``images``; returns what ``edits.json`` holds."""
    from shortcutlens import api
    from shortcutlens.visualize import heatmap

    device = device or torch.device("cpu")
    folder = Path(images).expanduser()
    if not folder.is_dir():
        raise ValueError(f"images={images} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not paths:
        raise ValueError(f"no pictures under {folder} (extensions {', '.join(sorted(EXTENSIONS))})")
    lens = api.load_lens(checkpoint, device=device)
    args = api.lens_arguments(lens)
    trained_size = (getattr(lens, "info", {}) or {}).get("image_size")
    size = trained_size if image_size is None else (image_size or None)
    if image_size is None and not trained_size:
        raise ValueError(f"{checkpoint} does not say what size the lens was trained on: pass image_size=N (or 0)")
    out_dir = Path(out)
    edits: list[tuple[Path, torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for path in paths:
            try:
                x = read_picture(path, channels=args["in_chans"], size=size, stride=args["stride"]).to(device)
            except OSError as err:
                raise ValueError(f"cannot read picture {path} ({err})") from err
            lensed = lens(x)
            edits.append((path, lensed.cpu(), (lensed - x).abs().mean(1, keepdim=True).cpu()))
    scale = amplify if amplify is not None else 1.0 / max(max(e.max().item() for _, _, e in edits), 1e-8)
    rows = []
    for path, lensed, edit in edits:
        stem = out_dir / path.relative_to(folder).with_suffix("")
        to_png(lensed, stem.with_name(stem.name + "_lensed.png"))
        to_png(heatmap(edit * scale), stem.with_name(stem.name + "_edit.png"))
        rows.append({"picture": str(path.relative_to(folder)), "size": list(edit.shape[-2:]),
                     "mean_abs_edit": edit.mean().item(), "max_abs_edit": edit.max().item()})
    result = {"checkpoint": str(checkpoint), "images": str(folder), "pictures": len(rows), "image_size": size,
              "lens": args, "edit_map_scale": scale, "per_picture": rows}
    if save_lens:
        result["lens_file"] = str(api.save_lens(lens, out_dir / "lens.pt", img_size=trained_size,
                                                info={**(getattr(lens, "info", {}) or {}), "from": str(checkpoint)}))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "edits.json").write_text(json.dumps(result, indent=2))
    return result


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="lens_folder")
@clear_errors
def main(cfg: DictConfig) -> None:
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    result = lens_folder(checkpoint=c["checkpoint"], images=c["images"], out=c["out"], image_size=c["image_size"],
                         amplify=c["amplify"], save_lens=c["save_lens"], device=resolve_device(c["device"]))
    mean = sum(r["mean_abs_edit"] for r in result["per_picture"]) / result["pictures"]
    print(f"{result['pictures']} pictures edited (mean |edit| {mean:.4f}); written to {c['out']}")
    print(f"summary: {Path(c['out']) / 'edits.json'}")


if __name__ == "__main__":
    main()
