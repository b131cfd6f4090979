"""Pictures of what the lens edits, labelled so they explain themselves.

- ``edit_grid``: rows *input*, *lensed* and *|edit| × k* (k, the amplification, written in the label), one
  column per image, with a colour bar giving the |edit| that full scale stands for;
- ``edit_map_figure``: the mean |edit| over many images as a heat map with a colour bar and a title (run,
  pretext, shortcut), next to the shortcut's region when there is one, with the hottest region boxed;
- ``edit_concentration``: where the mean edit lies when no region is known (Minderer et al., ICML 2020,
  judge a lens by *where* it edits): the share in the hottest 5% of pixels and the hottest blob's box.

Pure functions from tensors to uint8 RGB arrays ``(H, W, 3)`` (drawn with Pillow, no display) plus a
PNG writer, shared by the training loop (edit grids every N steps) and ``shortcutlens-visualize``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
BOX = (0, 200, 255)  # cyan: stands out on the black-red-yellow-white ramp


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in [0, 1] -> ``(B, 3, H, W)``."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def heatmap(values: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1] -> ``(B, 3, H, W)`` with a black-red-yellow-white ramp ("hot")."""
    v = values.clamp(0, 1)
    return torch.cat([(v * 3).clamp(0, 1), (v * 3 - 1).clamp(0, 1), (v * 3 - 2).clamp(0, 1)], dim=1)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font when Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _colour_bar(height: int, *, low: str, high: str, label: str, font) -> np.ndarray:
    """A vertical "hot" ramp ``height`` px tall with its end values and a label, as uint8 ``(h, w, 3)``."""
    from PIL import Image, ImageDraw

    bar_w = 14
    ramp = heatmap(torch.linspace(1, 0, height).view(1, 1, height, 1).expand(1, 1, height, bar_w))[0]
    ramp = (ramp.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    text_w = max(_text_size(font, t)[0] for t in (low, high, label))
    img = Image.new("RGB", (bar_w + 6 + text_w + 4, height), BACKGROUND)
    img.paste(Image.fromarray(ramp), (0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, bar_w - 1, height - 1], outline=INK)
    th = _text_size(font, "0")[1]
    draw.text((bar_w + 4, 0), high, fill=INK, font=font)
    draw.text((bar_w + 4, height - th - 4), low, fill=INK, font=font)
    if height > 3 * (th + 6):
        draw.text((bar_w + 4, height // 2 - th // 2), label, fill=INK, font=font)
    return np.asarray(img)


def annotate(
    body: np.ndarray,
    *,
    row_labels: Sequence[str] = (),
    row_pitch: int = 0,
    col_labels: Sequence[str] = (),
    col_pitch: int = 0,
    pad: int = 2,
    title: str | None = None,
    colour_bar: tuple[str, str, str] | None = None,
    bar_row: int = 0,
    font_size: int = 12,
) -> np.ndarray:
    """Frame a uint8 picture ``(H, W, 3)``: labels left of each row (rows ``row_pitch`` px apart after
    ``pad``) and above each column (``col_pitch`` apart), a title above (may hold several lines) and a
    colour bar ``(low, high, label)`` right of row ``bar_row``. Returns the larger uint8 ``(H', W', 3)``."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    h, w = body.shape[:2]
    label_w = max((_text_size(font, t)[0] for t in row_labels), default=0)
    left = label_w + 10 if row_labels else 0
    line_h = _text_size(font, "Ag|")[1] + 5
    title_lines = title.splitlines() if title else []
    top = (len(title_lines) + bool(col_labels)) * line_h + (6 if title_lines or col_labels else 0)
    bar = None
    if colour_bar is not None:
        bar_h = (row_pitch - pad) if row_pitch else h - 2 * pad
        bar = _colour_bar(max(bar_h, 3 * line_h), low=colour_bar[0], high=colour_bar[1], label=colour_bar[2], font=font)
    right = bar.shape[1] + 8 if bar is not None else 0
    width = max(left + w + right, max((_text_size(font, t)[0] + 8 for t in title_lines), default=0))
    height = top + max(h, (pad + bar_row * row_pitch + bar.shape[0]) if bar is not None else 0)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(Image.fromarray(body), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((4, 3 + i * line_h), line, fill=INK, font=font)
    for c, text in enumerate(col_labels):
        x = left + pad + c * col_pitch + (col_pitch - pad) // 2 - _text_size(font, text)[0] // 2
        draw.text((max(x, left), top - line_h - 2), text, fill=INK, font=font)
    for r, text in enumerate(row_labels):
        y = top + pad + r * row_pitch + (row_pitch - pad) // 2 - line_h // 2
        draw.text((left - 6 - _text_size(font, text)[0], y), text, fill=INK, font=font)
    if bar is not None:
        canvas.paste(Image.fromarray(bar), (left + w + 6, top + pad + bar_row * row_pitch))
    return np.asarray(canvas)


def edit_grid(images: torch.Tensor, lensed: torch.Tensor, *, amplify: float | None = None, upscale: int = 4,
              title: str | None = None) -> np.ndarray:
    """Three labelled rows — *input*, *lensed*, *|edit| × k* as a heat map — one column per image.

    Args:
        images, lensed: ``(B, C, H, W)`` in [0, 1].
        amplify: ``k``, the factor on |lensed − input| (mean over channels); default: so the largest
            difference is full scale. The label states ``k``; the colour bar gives the unamplified |edit|
            that full scale stands for (``1/k``).
        title: drawn above the grid (several lines allowed).
    Returns:
        uint8 ``(H', W', 3)``.
    """
    images, lensed = images.detach().float().cpu(), lensed.detach().float().cpu()
    diff = (lensed - images).abs().mean(1, keepdim=True)
    k = amplify if amplify is not None else 1.0 / max(diff.max().item(), 1e-8)
    rows = [_to_rgb(images.clamp(0, 1)), _to_rgb(lensed.clamp(0, 1)), heatmap(diff * k)]
    pad = 2
    body = tile(rows, upscale=upscale, pad=pad)
    return annotate(body, row_labels=["input", "lensed", f"|edit| x {k:.3g}"], row_pitch=images.shape[-2] * upscale + pad,
                    pad=pad, title=title, colour_bar=("0", f"{1.0 / k:.2g}", "|edit|"), bar_row=2)


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


def edit_concentration(mean_map: torch.Tensor, *, top: float = 0.05) -> dict[str, Any]:
    """Where a mean-edit map ``(H, W)`` concentrates, for a lens with no known shortcut region.

    Returns ``top_fraction`` (``top``), ``top_share``: the share of the total edit in the hottest ``top``
    of pixels (``top`` itself for an even spread, 1 when the lens edits only there); ``hot_box``:
    ``[y0, x0, y1, x1)`` of the connected blob of those pixels (8-neighbours) around the hottest one,
    with ``hot_box_share`` of the edit inside it over ``hot_box_area`` of the image; ``peak``: ``[y, x]``.
    Shares are None for a map that is zero everywhere.
    """
    from scipy import ndimage

    m = mean_map.detach().float().cpu().numpy()
    if m.ndim != 2:
        raise ValueError(f"mean_map must be (H, W), got shape {tuple(m.shape)}")
    if not 0.0 < top < 1.0:
        raise ValueError(f"top must be in (0, 1), got {top}")
    n, total = m.size, float(m.sum())
    k = max(1, math.ceil(top * n))
    flat = np.sort(m.reshape(-1))[::-1]
    peak = [int(i) for i in np.unravel_index(int(np.argmax(m)), m.shape)]
    out: dict[str, Any] = {"top_fraction": top, "top_share": None, "hot_box": None, "hot_box_share": None,
                           "hot_box_area": None, "peak": peak}
    if total <= 0:
        return out
    out["top_share"] = float(flat[:k].sum() / total)
    blobs, _ = ndimage.label(m >= flat[k - 1], structure=np.ones((3, 3), dtype=int))
    ys, xs = np.nonzero(blobs == blobs[peak[0], peak[1]])
    y0, x0, y1, x1 = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
    out["hot_box"] = [y0, x0, y1, x1]
    out["hot_box_share"] = float(m[y0:y1, x0:x1].sum() / total)
    out["hot_box_area"] = (y1 - y0) * (x1 - x0) / n
    return out


def edit_map_figure(
    mean_map: torch.Tensor,
    *,
    title: str,
    region: torch.Tensor | None = None,
    box: Sequence[int] | None = None,
    upscale: int | None = None,
) -> np.ndarray:
    """The mean |edit| ``(H, W)`` as a heat map scaled to its maximum, with a colour bar in |edit| units.

    Args:
        title: what the map is of (run, pretext, shortcut); several lines allowed.
        region: the shortcut's region ``(1, 1, H, W)`` (or ``(H, W)``), drawn as a second, labelled panel: a
            0/1 mask, or the share of the images in which each pixel is in it (a region that varies per image).
        box: ``[y0, x0, y1, x1)`` outlined on the heat map (``edit_concentration``'s hottest blob).
        upscale: pixels per map cell (default: about 256 px across, whatever the image size).
    Returns:
        uint8 ``(H', W', 3)``.
    """
    from PIL import Image, ImageDraw

    m = mean_map.detach().float().cpu()
    upscale = upscale or max(1, round(256 / m.shape[-1]))
    top = float(m.max())
    panels = [heatmap((m / max(top, 1e-12))[None, None])]
    if region is not None:
        panels.append(region.reshape(1, 1, *m.shape).expand(-1, 3, -1, -1).float().cpu())
    pad = 2
    body = tile([torch.cat(panels)], upscale=upscale, pad=pad)
    if box is not None:
        y0, x0, y1, x1 = (int(v) for v in box)
        img = Image.fromarray(body)
        ImageDraw.Draw(img).rectangle([pad + x0 * upscale - 1, pad + y0 * upscale - 1,
                                       pad + x1 * upscale, pad + y1 * upscale], outline=BOX, width=2)
        body = np.asarray(img)
    labels = ["mean |edit|" + (" (box: hottest 5%)" if box is not None else "")]
    labels += ["shortcut region"] if region is not None else []
    return annotate(body, title=title, col_labels=labels, col_pitch=m.shape[-1] * upscale + pad,
                    colour_bar=("0", f"{top:.2g}", "|edit|"))


def save_png(array: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
