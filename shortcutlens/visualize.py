"""Pictures of what the lens edits: input / lensed / amplified |difference| grids and mean-edit maps.

Pure functions from tensors to uint8 RGB arrays plus a PNG writer, shared by the training loop (edit
grids every N steps) and ``shortcutlens-visualize``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in [0, 1] -> ``(B, 3, H, W)``."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def heatmap(values: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1] -> ``(B, 3, H, W)`` with a black-red-yellow-white ramp ("hot")."""
    v = values.clamp(0, 1)
    return torch.cat([(v * 3).clamp(0, 1), (v * 3 - 1).clamp(0, 1), (v * 3 - 2).clamp(0, 1)], dim=1)


def edit_grid(images: torch.Tensor, lensed: torch.Tensor, *, amplify: float | None = None, upscale: int = 4) -> np.ndarray:
    """Three rows — input, lensed, |lensed − input| as a heatmap — one column per image.

    ``amplify`` scales the difference (default: so the largest difference is full scale).
    Returns ``(3·H·upscale + pad, B·W·upscale + pad, 3)`` uint8.
    """
    images, lensed = images.detach().float().cpu(), lensed.detach().float().cpu()
    diff = (lensed - images).abs().mean(1, keepdim=True)
    scale = amplify if amplify is not None else 1.0 / max(diff.max().item(), 1e-8)
    rows = [_to_rgb(images.clamp(0, 1)), _to_rgb(lensed.clamp(0, 1)), heatmap(diff * scale)]
    return tile(rows, upscale=upscale)


def tile(rows: list[torch.Tensor], *, upscale: int = 4, pad: int = 2) -> np.ndarray:
    """Lay out rows of ``(B, 3, H, W)`` images in a grid with a white border, nearest-upscaled."""
    b, _, h, w = rows[0].shape
    H, W = h * upscale, w * upscale
    canvas = torch.ones(3, len(rows) * (H + pad) + pad, b * (W + pad) + pad)
    for r, row in enumerate(rows):
        big = torch.nn.functional.interpolate(row, scale_factor=upscale, mode="nearest")
        for c in range(b):
            canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = big[c]
    return (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def mean_edit_map(edits: torch.Tensor) -> torch.Tensor:
    """Mean |edit| over images and channels: ``(B, C, H, W) -> (H, W)``; shows *where* the lens works."""
    return edits.abs().float().mean(dim=(0, 1))


def save_png(array: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
