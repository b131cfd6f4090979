"""Shortcut injection: low-level cues that give a pretext task its answer without semantics.

Applied on the device to float images in [0, 1] *before* the pretext transform, deterministic, with
position, size and intensity as arguments. Each shortcut exposes ``region(h, w)``, a ``(1, 1, H, W)``
mask of where it acts in the unrotated image, so the lens's edit inside it can be compared with the
edit outside (None where the cue covers the whole image), and ``regions(images)``, the same per image
``(B, 1, H, W)``: a fixed mark's region on every image, but for a cue that follows the content (the
aberration's fringes run along each object's outline) the pixels it changes in that image.

- ``arrow``: the synthetic rotation shortcut of Minderer et al. (ICML 2020): a small mark pointing
  "up", drawn before rotation, so it rotates with the image and gives the orientation away.
- ``gradient``: a brightness ramp along the vertical axis (a second, smooth orientation cue).
- ``chromatic_aberration``: colour channels scaled radially about the centre (red outwards, blue
  inwards), so the colour fringe grows with distance from the centre and tells a patch where it was
  cut (Doersch et al. 2015 found this cue; Noroozi & Favaro 2016 fight it). Grayscale input is first
  replicated to 3 channels.
- ``position_tint``: a colour cast that varies across the frame (red right, blue left, green bottom,
  magenta top) with the grey level untouched: an absolute-position cue for the patch tasks that is
  pure colour, so greying removes it exactly.
- ``watermark``: a fixed logo (ring and bar) blended in at a fixed place — the same on every image,
  so it is *no* shortcut for the instance tasks (a negative control).
- ``instance_code``: a per-image cue for the instance tasks (exemplar, contrastive): a small block of
  black and white cells spelling a hash of the image, stamped on every view of that image *after* the
  pretext's augmentation, so that matching the views of one image needs nothing but reading the code.

Most shortcuts act on the images before the pretext makes its views (``stage = "images"``). A
``stage = "views"`` shortcut instead derives a code per source image (``codes(images)``) and stamps it on
the views (``forward(views, codes=codes[sources])``), where ``sources`` says which image each view
came from (``Pretext.view_sources``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shortcutlens.registry import Registry

SHORTCUTS = Registry("shortcut", entry_point_group="shortcutlens.shortcuts")


def create_shortcut(name: str, **kwargs: Any) -> Shortcut | None:
    """``create_shortcut("none")`` returns ``None``."""
    return SHORTCUTS.create(name, **kwargs)


def list_shortcuts() -> list[str]:
    return SHORTCUTS.names()


def _grid(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1]: rows ``(H, 1)``, cols ``(1, W)``."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return ys[:, None], xs[None, :]


class Shortcut(nn.Module):
    #: "images": applied to the images before the pretext's views; "views": stamped on the views.
    stage: str = "images"

    def out_channels(self, in_chans: int) -> int:
        return in_chans

    def region(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor | None:
        return None

    def regions(self, images: torch.Tensor) -> torch.Tensor | None:
        """Where the cue acts on each of these (cue-free) images ``(B, C, H, W)``: ``(B, 1, H, W)`` of 0/1,
        or None (no region). By default the fixed ``region`` on every image."""
        region = self.region(*images.shape[-2:], images.device)
        return None if region is None else region.expand(images.shape[0], -1, -1, -1)


def channels_after(shortcut: Shortcut | None, in_chans: int) -> int:
    """Channels of ``in_chans``-channel images once ``shortcut`` is applied: what the backbone and lens
    are built for (a colour-making shortcut turns grayscale into 3 channels)."""
    return in_chans if shortcut is None else shortcut.out_channels(in_chans)


def adapt_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, in_chans, H, W)``: 1 -> ``in_chans`` replicates, 3 -> 1 averages.

    The one place channels are matched: grayscale fed to chromatic aberration, clean images for a
    backbone built for a colour-making shortcut's output (so clean and shortcut-bearing images are
    compared like with like), and evaluators feeding another dataset's images to a backbone.
    Replication is a view (``expand``), no copy.
    """
    c = x.shape[1]
    if c == in_chans:
        return x
    if c == 1:
        return x.expand(-1, in_chans, -1, -1)
    if in_chans == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot feed {c}-channel images to a backbone built for {in_chans} channels")


class _MaskShortcut(Shortcut):
    """Blends a fixed ``mask`` into the image: ``x ← (1 − mask)·x + mask·intensity``."""

    def __init__(self, *, position: tuple[float, float], size: float, intensity: float) -> None:
        super().__init__()
        if not 0 < size <= 1:
            raise ValueError(f"shortcut size is a fraction of the image side in (0, 1], got {size}")
        self.position, self.size, self.intensity = tuple(position), size, intensity

    def mask(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _local(self, h: int, w: int, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates relative to the mark's box: u (top→bottom) and v (left→right) in [-0.5, 0.5]."""
        ys, xs = _grid(h, w, device)
        # Snap the box to whole pixels so the mark has the same shape at every resolution.
        side = max(3, round(self.size * min(h, w)))
        top = round(self.position[0] * h - side / 2)
        left = round(self.position[1] * w - side / 2)
        top, left = min(max(top, 0), h - side), min(max(left, 0), w - side)
        u = (ys * h - top) / side - 0.5
        v = (xs * w - left) / side - 0.5
        return u, v

    def region(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        return (self.mask(h, w, device) > 0).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.mask(images.shape[-2], images.shape[-1], images.device).to(images.dtype)
        return images * (1 - m) + m * self.intensity


@SHORTCUTS.register("arrow")
class Arrow(_MaskShortcut):
    """An upward arrow (triangular head over a shaft) centred at ``position`` (fractions ``(y, x)``),
    ``size`` a fraction of the image side, drawn with value ``intensity``."""

    def __init__(self, *, position: tuple[float, float] = (0.2, 0.2), size: float = 0.25, intensity: float = 1.0) -> None:
        super().__init__(position=position, size=size, intensity=intensity)

    def mask(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        u, v = self._local(h, w, device)
        inside = (u.abs() <= 0.5) & (v.abs() <= 0.5)
        head = (u < 0.0) & (v.abs() <= (u + 0.5) * 0.9 + 0.08)  # apex at the top
        shaft = (u >= 0.0) & (v.abs() <= 0.14)
        return (inside & (head | shaft)).float()[None, None]


@SHORTCUTS.register("watermark")
class Watermark(_MaskShortcut):
    """A logo (a ring with a horizontal bar through it) at ``position``, blended with ``intensity``
    as its pixel value (alpha 1 on the logo)."""

    def __init__(self, *, position: tuple[float, float] = (0.85, 0.85), size: float = 0.3, intensity: float = 1.0) -> None:
        super().__init__(position=position, size=size, intensity=intensity)

    def mask(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        u, v = self._local(h, w, device)
        r = (u**2 + v**2).sqrt()
        ring = (r >= 0.3) & (r <= 0.5)
        bar = (u.abs() <= 0.1) & (v.abs() <= 0.5)
        return (ring | bar).float()[None, None]


@SHORTCUTS.register("gradient")
class Gradient(Shortcut):
    """Adds ``intensity·(0.5 − y)``: brighter at the top, darker at the bottom, clamped to [0, 1].
    Covers the whole image, so ``region`` is None."""

    def __init__(self, *, intensity: float = 0.3) -> None:
        super().__init__()
        self.intensity = intensity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ys, _ = _grid(images.shape[-2], images.shape[-1], images.device)
        return (images + self.intensity * (0.5 - ys)).clamp(0, 1)


class _ColourShortcut(Shortcut):
    """A cue that turns grayscale into colour (1 or 3 channels in, 3 out) and whose per-image region is
    where it moves a pixel: some channel by more than ``region_threshold``."""

    name: str  # the registry name, for errors
    region_threshold: float  # each cue sets its own

    def out_channels(self, in_chans: int) -> int:
        return 3

    def _rgb(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name} needs 1 or 3 channels, got {images.shape[1]}")
        return adapt_channels(images, 3)

    def regions(self, images: torch.Tensor) -> torch.Tensor:
        moved = (self(images) - adapt_channels(images, 3)).abs().amax(dim=1, keepdim=True)
        return (moved > self.region_threshold).float()


@SHORTCUTS.register("chromatic_aberration")
class ChromaticAberration(_ColourShortcut):
    """Red sampled at ``(1 − intensity)·p`` and blue at ``(1 + intensity)·p`` for each position ``p``
    relative to ``position`` (the optical centre, fractions ``(y, x)``): red is magnified and blue
    shrunk, so fringes grow linearly with the distance from the centre. ``region`` is the outer part
    of the image (distance > ``size`` of the half-diagonal), where the fringe is widest; ``regions(images)``
    is where the fringes actually are in each image: the pixels whose colour the aberration moves by more
    than ``region_threshold`` in some channel (along the outlines of the objects, none on flat areas, and
    none at all at intensity 0)."""

    name = "chromatic_aberration"
    #: a pixel belongs to an image's region when the aberration moves one of its channels by more than this
    region_threshold: float = 0.1

    def __init__(self, *, position: tuple[float, float] = (0.5, 0.5), size: float = 0.5, intensity: float = 0.06) -> None:
        super().__init__()
        self.position, self.size, self.intensity = tuple(position), size, intensity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self._rgb(images)
        b, _, h, w = images.shape
        ys, xs = _grid(h, w, images.device)
        cy, cx = self.position
        # grid_sample coordinates in [-1, 1]; offsets from the optical centre are scaled per channel.
        gy = (ys - cy).expand(h, w) * 2
        gx = (xs - cx).expand(h, w) * 2
        centre = torch.tensor([cx * 2 - 1, cy * 2 - 1], device=images.device)
        out = [images[:, 1]]
        for channel, scale in ((0, 1 - self.intensity), (2, 1 + self.intensity)):
            grid = torch.stack([gx * scale, gy * scale], dim=-1) + centre
            sampled = F.grid_sample(images[:, channel : channel + 1], grid.expand(b, h, w, 2).to(images.dtype),
                                    mode="bilinear", padding_mode="border", align_corners=False)
            out.insert(channel, sampled[:, 0])
        return torch.stack(out, dim=1)

    def region(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        ys, xs = _grid(h, w, device)
        cy, cx = self.position
        dist = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt() / (0.5 * 2**0.5)
        return (dist > self.size).float()[None, None]


@SHORTCUTS.register("position_tint")
class PositionTint(_ColourShortcut):
    """A colour cast that depends on where a pixel is and on nothing else: the colour shading of a real
    camera (the sensor's colour response varies across the frame), made strong. Channel ``c`` becomes
    ``x + k_c·x·(1 − x)`` with ``k = intensity·(u·(1, 0, −1) + v·(−½, 1, −½))``, ``u, v ∈ [−1, 1]`` the
    pixel's column and row: red to the right and blue to the left, green at the bottom and magenta at
    the top. So a patch's colour tells where in the image it was cut — an absolute-position cue for
    relative location and jigsaw, like the aberration's fringes but with no geometry at all.

    Why this form: ``k`` sums to zero over the channels, so the channel mean (the grey image) is exactly
    the input, and ``x·(1 − x)`` keeps every value in [0, 1] without clamping (for ``intensity ≤ 2/3``)
    and leaves black and white alone; the cast is strongest on mid-grey (a shift of up to
    ``0.375·intensity``). Greying an image (``lens.grey_fill`` with size 1) removes the cue exactly — what
    an erasing lens can do, and what a residual lens can learn with one 1x1 linear map.

    Grayscale input is first replicated to 3 channels. ``regions(images)``: the pixels whose colour the
    tint moves by more than ``region_threshold`` in some channel.
    """

    name = "position_tint"
    #: a pixel belongs to an image's region when the tint moves one of its channels by more than this
    region_threshold: float = 0.05

    def __init__(self, *, intensity: float = 0.5) -> None:
        super().__init__()
        if not 0 <= intensity <= 2 / 3:
            raise ValueError(f"position_tint intensity must be in [0, 2/3] (beyond it a channel can leave [0, 1]), got {intensity}")
        self.intensity = float(intensity)

    def tint(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """``(1, 3, H, W)``: ``k`` per channel and pixel (sums to 0 over channels)."""
        ys, xs = _grid(h, w, device)
        u, v = (2 * xs - 1).expand(h, w), (2 * ys - 1).expand(h, w)
        return self.intensity * torch.stack([u - 0.5 * v, v, -u - 0.5 * v])[None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = self._rgb(images)
        k = self.tint(images.shape[-2], images.shape[-1], images.device).to(images.dtype)
        return images + k * images * (1 - images)


@SHORTCUTS.register("instance_code")
class InstanceCode(Shortcut):
    """A per-instance shortcut: ``bits`` black/white cells (a square grid, ``cell`` pixels each) at
    ``position`` spelling a hash of the source image, the same on every view of one image and different
    between images (65,536 codes for 16 bits: in a batch of 64 images, two share a code with a chance of
    about 3%). Exemplar and contrastive learn to tell instances apart; reading the code does it without
    looking at the object. At 32 px, cells of 2 px (an 8x8 block) are read within 300 steps of
    contrastive training (98% pretext accuracy against 20% on clean images); 1-px cells were not read
    at all in that time.

    The hash is of the image's 8-bit pixels (fixed pseudo-random weights, then an integer mix), so it is
    unrelated to the image's content in any way a linear probe could use, and it is deterministic: the
    same image always carries the same code.

    ``contrast`` sets the cells' grey levels, ``0.5 ± contrast/2``: 1 gives black and white cells; 0.5 gives
    0.25 and 0.75, which the lens can flatten to grey for a mean |edit| of 64·0.25/1024 ≈ 0.016 per 32-px
    image (within its 0.02 budget), where blanking black-and-white cells costs ≈ 0.031. The code decodes the
    same either way, but a network may not learn to read faint cells: contrastive training at 500 steps
    read neither 0.5 nor 0.75 (README, the shortcut benchmark), so the default stays 1.

    ``codes(images)``: ``(B, C, H, W)`` floats in [0, 1] -> ``(B,)`` int64 in ``[0, 2**bits)``.
    ``forward(views, codes=...)``: ``(N, C, H, W)`` views and ``(N,)`` codes -> stamped views.
    ``forward(images)`` stamps each image with its own code (for pictures and diagnostics).
    """

    stage = "views"

    def __init__(self, *, bits: int = 16, cell: int = 2, position: tuple[float, float] = (0.0, 0.0),
                 contrast: float = 1.0) -> None:
        super().__init__()
        side = round(bits**0.5)
        if side * side != bits or not 1 <= bits <= 49:
            raise ValueError(f"instance_code bits must be a square number between 1 and 49, got {bits}")
        if cell < 1:
            raise ValueError(f"instance_code cell is a size in pixels >= 1, got {cell}")
        if not 0 < contrast <= 1:
            raise ValueError(f"instance_code contrast must be in (0, 1], got {contrast}")
        self.bits, self.side, self.cell, self.position = bits, side, cell, tuple(position)
        self.contrast = float(contrast)

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        flat = (images.detach().float().clamp(0, 1) * 255).round().long().flatten(1)
        g = torch.Generator().manual_seed(20_200_830)
        weights = torch.randint(1, 2**20, (flat.shape[1],), generator=g).to(flat.device)
        h = (flat * weights).sum(1) % (2**31 - 1)
        h = (h * 2_654_435_761) % (2**31 - 1)  # Knuth's multiplicative mix: neighbouring sums spread apart
        h = h ^ (h >> 13)
        return h % (2**self.bits)

    def _box(self, h: int, w: int) -> tuple[int, int, int]:
        size = self.side * self.cell
        if size > min(h, w):
            raise ValueError(f"instance_code of {self.side}x{self.side} cells of {self.cell} px does not fit {h}x{w} images")
        top = min(max(round(self.position[0] * h), 0), h - size)
        left = min(max(round(self.position[1] * w), 0), w - size)
        return top, left, size

    def pattern(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N,)`` codes -> ``(N, 1, side·cell, side·cell)`` cells at ``0.5 ± contrast/2`` (bit 0: dark)."""
        bit = torch.arange(self.bits, device=codes.device)
        bits = ((codes[:, None] >> bit) & 1).float().view(-1, 1, self.side, self.side)
        cells = 0.5 + self.contrast * (bits - 0.5)
        return cells.repeat_interleave(self.cell, dim=2).repeat_interleave(self.cell, dim=3)

    def forward(self, images: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        if codes is None:
            codes = self.codes(images)
        if codes.shape[0] != images.shape[0]:
            raise ValueError(f"instance_code got {codes.shape[0]} codes for {images.shape[0]} views")
        top, left, size = self._box(images.shape[-2], images.shape[-1])
        out = images.clone()
        out[:, :, top : top + size, left : left + size] = self.pattern(codes).to(images.dtype)
        return out

    def region(self, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        top, left, size = self._box(h, w)
        mask = torch.zeros(1, 1, h, w, device=device)
        mask[:, :, top : top + size, left : left + size] = 1
        return mask


@SHORTCUTS.register("none")
def no_shortcut(**_: Any) -> None:
    return None


def shortcut_views(
    shortcut: Shortcut | None,
    images: torch.Tensor,
    views: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    sources: Callable[[torch.Tensor, int], torch.Tensor],
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    clean: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data side of a step, in the order the training loop uses: shortcut, augmentation, views.

    ``images`` ``(B, C, H, W)`` in [0, 1]; ``views`` is the pretext's ``views``; ``sources(targets, B)``
    maps each view to its source image (``Pretext.view_sources``), needed by ``stage = "views"``
    shortcuts only. ``clean=True`` leaves the cue out but keeps the channels the shortcut would give
    (a backbone built for colour-fringed images sees grayscale replicated to 3 channels), so clean and
    shortcut-bearing images are compared like with like. Returns ``(inputs, targets)``.
    """
    codes = None
    if shortcut is not None:
        if clean:
            images = adapt_channels(images, channels_after(shortcut, images.shape[1]))
        elif shortcut.stage == "views":
            codes = shortcut.codes(images)  # of the clean source image, before any augmentation
        else:
            images = shortcut(images)
    if augment is not None:
        images = augment(images)
    inputs, targets = views(images)
    if codes is not None:
        inputs = shortcut(inputs, codes=codes[sources(targets, images.shape[0])])
    return inputs, targets


def stamp(shortcut: Shortcut | None, images: torch.Tensor) -> torch.Tensor:
    """The shortcut on whole images, for pictures and edit diagnostics (a views-stage cue is stamped
    with each image's own code)."""
    return images if shortcut is None else shortcut(images)


def edit_ratio(edit: torch.Tensor, region: torch.Tensor) -> float | None:
    """Mean |edit| inside ``region`` over mean |edit| outside, over every image's pixels (the edit averaged
    over channels). ``edit`` ``(B, C, H, W)``; ``region`` ``(1, 1, H, W)`` (the same on every image) or
    ``(B, 1, H, W)`` (per image: ``Shortcut.regions``). None when the region is empty or covers everything."""
    e = edit.abs().float().mean(dim=1)
    m = region[:, 0].to(e.device).bool().expand_as(e)
    if not m.any() or m.all():
        return None
    inside, outside = e[m].mean(), e[~m].mean()
    return (inside / outside.clamp_min(1e-12)).item()
