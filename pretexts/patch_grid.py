"""The 3×3 patch grid shared by relative patch location and jigsaw, with Kolesnikov et al.'s geometry.

Kolesnikov, Zhai, Beyer, "Revisiting Self-Supervised Visual Representation Learning", CVPR 2019 (code:
github.com/google/revisiting-self-supervised, ``crop_patches``): resize to 292 px, random 255-px crop,
3×3 cells of 85 px, and from each cell a random 64-px patch (``patch_jitter`` 21). Here every length is
a fraction of the image side ``S``, so the same recipe works at 16, 32 or 224 px:

- grid side ``G = round(grid_fraction · S)`` (default 255/292), at a random place in the image;
- cell ``c = G // 3``; jitter ``j = round(jitter_fraction · c)`` (default 21/85);
- patch ``P = c − j``, cropped at a random offset in ``[0, j]²`` inside its cell, so neighbouring
  patches are ``0..2j`` pixels apart (``j`` on average) and share no continuous edge
  (Doersch et al. 2015's gap-and-jitter idea). At 32 px: c = 9, j = 2, P = 7.
- with probability ``grayscale_probability`` (default 0.66, Kolesnikov et al.'s setting, which fights
  chromatic aberration) a colour image is converted to grayscale before cutting.

**Where the lens acts: on the whole image, before tiling.** ``views`` returns the (possibly grayscaled)
whole images and ``embed`` cuts the jittered grid out of them — after the lens — and runs the shared
trunk once per tile. Every pixel the trunk sees is a lens-edited pixel, and the lens sees the image in
its original layout, so it can make position-dependent edits: chromatic aberration, the shortcut of
both tasks (Doersch et al. 2015; Noroozi & Favaro 2016), is a colour fringe whose direction and width
depend on where a patch sat in the image, which a lens shown single tiles, or tiles already shuffled
by jigsaw, could not locate. It also keeps the lens on the images the rest of the library shows it:
the edit-ratio diagnostics, the edit PNGs and probes on lensed features all apply it to whole images.
(The price: the grid's random place and jitter are drawn in ``embed`` rather than ``views``, from the
same seeded random stream, and in any one step some edited pixels fall between the tiles.)
Jigsaw's shuffling is applied to the per-tile features in ``loss``, exactly as Kolesnikov et al.'s
reference permutes trunk outputs; that is identical to shuffling the tiles before the trunk, because
the trunk processes each tile on its own.

The trunk is the backbone run on ``P``-px tiles, and ``build_components`` builds it for them
(``trunk_input_size``): a ViT's patch must divide ``P``, and an MLP-Mixer, whose token-mixing MLPs fix the
number of patches, runs only ``P``-px inputs. The linear probe transfers the trunk as the papers do
(``PatchPretext.probe_backbone``): a ResNet embeds whole images, while a Mixer or ViT built for the tiles
is probed on the mean of its features over the ``centred_patches`` grid (``TileMeanBackbone``).

Shapes: ``views`` ``(B, C, S, S) -> inputs (B, C, S, S)``; ``embed`` ``-> (B, 9, D)``; the head sees
``head_inputs(features, targets)`` ``(M, k·D)`` and outputs ``(M, num_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
from torch import nn

from pretexts.base import Pretext
from shortcutlens.backbones.interface import native_input_size, pool

GRID = 3
TILES = GRID * GRID
CENTRE = TILES // 2

# Kolesnikov et al. 2019 (config/{jigsaw,relative_patch_location}/imagenet.sh): --resize_size 292,
# --crop_size 255, --splits_per_side 3, --patch_jitter 21 (85-px cells, 64-px patches).
GRID_FRACTION = 255 / 292
JITTER_FRACTION = 21 / 85


@dataclass(frozen=True)
class GridGeometry:
    image_size: int
    cell: int
    jitter: int
    patch: int

    @property
    def grid(self) -> int:
        return GRID * self.cell


def grid_geometry(image_size: int, *, grid_fraction: float = GRID_FRACTION,
                  jitter_fraction: float = JITTER_FRACTION) -> GridGeometry:
    """Cell, jitter and patch size (pixels) of the 3×3 grid for ``image_size``-px images."""
    if not 0 < grid_fraction <= 1:
        raise ValueError(f"grid_fraction is the share of the image side the grid covers, in (0, 1]; got {grid_fraction}")
    if not 0 <= jitter_fraction < 1:
        raise ValueError(f"jitter_fraction is a share of the cell, in [0, 1); got {jitter_fraction}")
    cell = max(1, round(grid_fraction * image_size)) // GRID
    jitter = round(jitter_fraction * cell)
    patch = cell - jitter
    if patch < 2:
        raise ValueError(
            f"images of {image_size} px are too small for a 3×3 patch grid (cells of {cell} px, patches of "
            f"{patch} px); use images of at least 9 px or a smaller jitter_fraction"
        )
    return GridGeometry(image_size, cell, jitter, patch)


def cut_patches(images: torch.Tensor, geom: GridGeometry) -> torch.Tensor:
    """``(B, C, S, S) -> (B, 9, C, P, P)``: the grid at a random place, each patch at a random offset in
    its cell (row-major tile order: 0 top-left, 4 centre, 8 bottom-right)."""
    b = images.shape[0]
    dev = images.device
    origin = torch.randint(0, geom.image_size - geom.grid + 1, (b, 2), device=dev)  # the random crop
    offsets = torch.randint(0, geom.jitter + 1, (b, TILES, 2), device=dev)            # the patch jitter
    return cut_patches_at(images, geom, origin, offsets)


def centred_patches(images: torch.Tensor, geom: GridGeometry) -> torch.Tensor:
    """``(B, C, S, S) -> (B, 9, C, P, P)``: the evaluation cut, with no randomness — the grid centred in
    the image and each patch centred in its cell (the middle of ``cut_patches``'s crop and jitter ranges)."""
    b = images.shape[0]
    dev = images.device
    origin = torch.full((b, 2), (geom.image_size - geom.grid) // 2, device=dev)
    offsets = torch.full((b, TILES, 2), geom.jitter // 2, device=dev)
    return cut_patches_at(images, geom, origin, offsets)


def cut_patches_at(images: torch.Tensor, geom: GridGeometry, origin: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(B, C, S, S) -> (B, 9, C, P, P)``: the grid with its top-left corner at ``origin`` ``(B, 2)`` (row,
    column) and patch ``k`` at ``offsets[:, k]`` ``(B, 9, 2)`` inside its cell (row-major tile order)."""
    b = images.shape[0]
    dev = images.device
    cells = torch.arange(GRID, device=dev) * geom.cell
    cell_y = cells.repeat_interleave(GRID)  # (9,) row of each tile
    cell_x = cells.repeat(GRID)             # (9,) column of each tile
    top = origin[:, None, 0] + cell_y + offsets[..., 0]    # (B, 9)
    left = origin[:, None, 1] + cell_x + offsets[..., 1]
    span = torch.arange(geom.patch, device=dev)
    rows = (top[..., None] + span)[:, :, :, None]          # (B, 9, P, 1)
    cols = (left[..., None] + span)[:, :, None, :]         # (B, 9, 1, P)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    # Advanced indices around a slice: the indexed dims come first -> (B, 9, P, P, C).
    return images[batch, :, rows, cols].permute(0, 1, 4, 2, 3)


def to_mosaic(tiles: torch.Tensor) -> torch.Tensor:
    """``(B, 9, C, P, P) -> (B, C, 3P, 3P)``: tiles packed row-major, no gaps (to look at a puzzle)."""
    b, _, c, p, _ = tiles.shape
    return tiles.reshape(b, GRID, GRID, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, GRID * p, GRID * p)


def from_mosaic(mosaic: torch.Tensor) -> torch.Tensor:
    """``(B, C, 3P, 3P) -> (B, 9, C, P, P)``, the inverse of ``to_mosaic``."""
    b, c, h, w = mosaic.shape
    if h != w or h % GRID:
        raise ValueError(f"a 3×3 mosaic must be square with a side divisible by 3, got {h}×{w}")
    p = h // GRID
    return mosaic.reshape(b, c, GRID, p, GRID, p).permute(0, 2, 4, 1, 3, 5).reshape(b, TILES, c, p, p)


def random_grayscale(images: torch.Tensor, probability: float) -> torch.Tensor:
    """Per image, with ``probability``, replace RGB by its luma replicated to 3 channels (1-channel
    images are returned as they are)."""
    if probability <= 0 or images.shape[1] != 3:
        return images
    gray = kornia.color.rgb_to_grayscale(images).expand_as(images)
    pick = (torch.rand(images.shape[0], 1, 1, 1, device=images.device) < probability).to(images.dtype)
    return pick * gray + (1 - pick) * images


def mlp_head(in_features: int, hidden_dim: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Kolesnikov et al.'s patch head (their ``fully_connected``, AlexNet's fc7-fc8): FC, BN, ReLU,
    dropout, FC. ``hidden_dim=0`` gives a linear head."""
    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(in_features, num_classes))
    return nn.Sequential(nn.Linear(in_features, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))


class PatchPretext(Pretext):
    """Base of the grid tasks: whole-image views, a shared trunk per tile, a head on combined tile features.

    Subclasses set ``num_classes``, build ``self.head`` and implement ``targets_for(batch, device)`` and
    ``head_inputs(features (B, 9, D), targets) -> (M, k·D)`` (M rows, one per label in ``targets``).
    ``embed`` cuts a freshly drawn grid each call (global RNG, seeded per step by the training loop).
    """

    classification = True

    def __init__(self, *, grid_fraction: float, jitter_fraction: float, grayscale_probability: float,
                 probe_tiles: bool = False) -> None:
        super().__init__()
        grid_geometry(32, grid_fraction=grid_fraction, jitter_fraction=jitter_fraction)  # validate early
        self.grid_fraction, self.jitter_fraction = grid_fraction, jitter_fraction
        self.grayscale_probability = grayscale_probability
        self.probe_tiles = probe_tiles

    def geometry(self, image_size: int) -> GridGeometry:
        return grid_geometry(image_size, grid_fraction=self.grid_fraction, jitter_fraction=self.jitter_fraction)

    @classmethod
    def trunk_input_size(cls, image_size: int, *, grid_fraction: float = GRID_FRACTION,
                         jitter_fraction: float = JITTER_FRACTION, **settings: object) -> int:
        """Side ``P`` of the tiles the trunk sees for ``image_size``-px images (``build_components`` builds
        the backbone for it: an MLP-Mixer only runs the size it was built for)."""
        return grid_geometry(image_size, grid_fraction=grid_fraction, jitter_fraction=jitter_fraction).patch

    def probe_backbone(self, backbone: nn.Module, image_size: int) -> nn.Module:
        """A ``TileMeanBackbone`` when ``backbone`` was built for this task's tiles of ``image_size``-px images
        and cannot take whole ones as it was trained (a Mixer, a ViT's position table), or when
        ``probe_tiles`` asks for it; ``backbone`` itself otherwise (a ResNet, or a backbone built for the
        whole image), so its features are unchanged.

        Relative location and jigsaw train the trunk on tiles, and the papers transfer that trunk (Doersch
        et al., ICCV 2015; Noroozi & Favaro, ECCV 2016). ``probe_tiles`` is Kolesnikov et al.'s evaluation of
        the patch tasks (CVPR 2019; their config/evaluation/jigsaw_or_relative_patch_location.sh cuts the 3×3
        grid without jitter and average-pools the tiles' representations): a convolutional trunk trained on
        small tiles is probed at the scale it learned, which matters when the tiles are a fifth of the image."""
        native = native_input_size(backbone)
        geometry = self.geometry(image_size)
        built_for_tiles = native is not None and native[0] == (geometry.patch, geometry.patch)
        if (built_for_tiles or self.probe_tiles) and geometry.patch < image_size:
            return TileMeanBackbone(backbone, geometry)
        return backbone

    def targets_for(self, batch: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def head_inputs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"{type(self).__name__} needs square images, got {tuple(images.shape[-2:])}")
        self.geometry(images.shape[-1])  # a clear error now for images too small for the grid
        images = random_grayscale(images, self.grayscale_probability)
        return images, self.targets_for(images.shape[0], images.device)

    def embed(self, backbone: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Cut the jittered 3×3 grid from (lensed) whole images ``(B, C, S, S)``; trunk features ``(B, 9, D)``."""
        tiles = cut_patches(inputs, self.geometry(inputs.shape[-1]))
        b = tiles.shape[0]
        features = backbone(tiles.reshape(b * TILES, *tiles.shape[2:]))
        return features.reshape(b, TILES, -1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of head inputs ``(M, k·D)`` (what ``head_inputs`` returns)."""
        return self.head(features)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return super().loss(self.head_inputs(features, targets), targets)

    def task_logits(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits ``(M, num_classes)`` of the trunk features ``(B, 9, D)``, one row per label in ``targets``."""
        return self.logits(self.head_inputs(features, targets))


class TileMeanBackbone(nn.Module):
    """A trunk trained on 3×3-grid tiles, probed on whole images: features are the mean of the trunk's
    features over the 9 tiles of the evaluation cut (``centred_patches``: grid centred
    in the image, each tile centred in its cell, no jitter).

    Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015,
    and Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV
    2016, transfer the trunk the pretext trained on tiles. A convolutional trunk can simply be run on the
    whole image; an MLP-Mixer built for tiles cannot (its token-mixing MLPs fix the number of patches), and a
    ViT's position table would have to be stretched to a grid it never saw. Running the trunk on exactly
    the inputs it was trained on and averaging over the grid is the whole-image feature both can give.

    Shapes: ``forward`` ``(B, C, S, S) -> (B, D)``; ``forward_intermediates`` returns ``(B, C_i)`` per tap
    (each tile's tap pooled as ``pool`` does, then averaged over the tiles). Inputs already of the tile
    size go straight to the trunk, so a pretext's ``embed`` (which cuts its own tiles) works through this
    wrapper too.
    """

    def __init__(self, trunk: nn.Module, geometry: GridGeometry) -> None:
        super().__init__()
        self.trunk = trunk
        self.geometry = geometry
        self.num_features = trunk.num_features

    @property
    def num_intermediates(self) -> int:
        return self.trunk.num_intermediates

    def tiles(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B·9, C, P, P)``, the evaluation cut, tiles of one image consecutive."""
        s = self.geometry.image_size
        if tuple(x.shape[-2:]) != (s, s):
            p = self.geometry.patch
            raise ValueError(
                f"{type(self.trunk).__name__} trained on {p}x{p} tiles is probed on the 3×3 grid of tiles of "
                f"{s}x{s} images (or on {p}x{p} tiles directly); got {x.shape[-2]}x{x.shape[-1]} inputs"
            )
        tiles = centred_patches(x, self.geometry)
        return tiles.reshape(x.shape[0] * TILES, *tiles.shape[2:])

    def _is_tile(self, x: torch.Tensor) -> bool:
        return tuple(x.shape[-2:]) == (self.geometry.patch, self.geometry.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._is_tile(x):
            return self.trunk(x)
        return self.trunk(self.tiles(x)).reshape(x.shape[0], TILES, -1).mean(dim=1)

    def forward_intermediates(self, x: torch.Tensor, layers=None) -> list[torch.Tensor]:
        if self._is_tile(x):
            return self.trunk.forward_intermediates(x, layers)
        outs = self.trunk.forward_intermediates(self.tiles(x), layers)
        return [pool(t).reshape(x.shape[0], TILES, -1).mean(dim=1) for t in outs]
