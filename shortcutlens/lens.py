"""The lens: a U-Net that edits images to remove the shortcuts a pretext task exploits.

Minderer, Bachem, Houlsby, Tschannen, "Automatic Shortcut Removal for Self-Supervised
Representation Learning", ICML 2020 (arXiv 2002.08822). The lens maps ``x`` to ``x' = x + r(x)``; the
feature extractor minimises the pretext loss on ``x'`` while the lens maximises it, held close to the
input. Two ways to hold it close (``constraint``):

- ``penalty`` (the paper): the lens's objective (``shortcutlens.adversary``) adds ``λ·mean((x − x')²)`` to its loss;
- ``budget`` (the idea of Viewmaker networks, Tamkin et al., ICLR 2021): the residual is projected
  onto an L1 ball, ``r ← r · min(1, budget / mean|r|)`` per image, so the lens can never spend more than
  ``budget`` of mean absolute edit and must *choose* where to spend it. The measured lead in
  docs/architecture.md: this focused the lens on the shortcut where the penalty did not.

The final 1×1 convolution starts at zero, so an untrained lens is exactly the identity.
Depth adapts to the image: ``levels = min(max_levels, log2(size / 4))`` downsamplings (≥ 1 for 8 px).

``stride`` > 1 folds each ``stride × stride`` block of pixels into channels before the U-Net
(``pixel_unshuffle``) and unfolds the residual after it (``pixel_shuffle``, as in Shi et al., CVPR 2016):
the edit keeps full resolution, one value per pixel, while the network runs at ``1/stride`` of the side
and costs about ``1/stride²`` of the compute. With a small backbone the lens would otherwise cost as
much as the feature extractor it plays against.

``edit`` says what the lens may do to a pixel:

- ``residual`` (the paper): add any value, ``r(x)`` is the U-Net's output. The lens can erase a cue, but
  it can also paint one of its own (a colour or a mark that the feature extractor learns to read);
- ``erase``: only pull a pixel towards a content-free fill, ``r(x) = m(x) · (fill(x) − x)`` with one mask
  value ``m ∈ [0, 1]`` per pixel (shared by the channels) and ``fill(x)`` the grey mean of the
  ``fill_size × fill_size`` window around it. Every edited pixel lies between its own value and that
  local grey, so the lens can remove colour, marks and fine detail but cannot draw anything new: where
  the image is flat there is nothing to edit. The budget applies to ``r`` as in ``residual`` mode.

Shapes: ``(B, C, H, W) -> (B, C, H, W)``; ``residual(x)`` gives ``r(x)`` after the constraint.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shortcutlens.registry import Registry

LENSES = Registry("lens", entry_point_group="shortcutlens.lenses")
CONSTRAINTS = ("penalty", "budget")
EDITS = ("residual", "erase")


def create_lens(name: str, **kwargs: Any) -> nn.Module | None:
    """``create_lens("none")`` returns ``None`` (train without a lens)."""
    return LENSES.create(name, **kwargs)


def list_lenses() -> list[str]:
    return LENSES.names()


def grey_fill(x: torch.Tensor, size: int = 1) -> torch.Tensor:
    """The grey mean (mean over channels) of each pixel's ``size × size`` window (odd ``size``):
    ``(B, C, H, W) -> (B, 1, H, W)``. The erase lens's fill."""
    grey = x.mean(dim=1, keepdim=True)
    if size == 1:
        return grey
    # count_include_pad=False: at the border the mean is over the pixels that exist, not over zeros
    return F.avg_pool2d(grey, size, stride=1, padding=size // 2, count_include_pad=False)


def _block(cin: int, cout: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: the lens must behave the same in train and eval mode and on a
    # batch of one image at transfer time.
    groups = math.gcd(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.LeakyReLU(0.2, inplace=True),
    )


@LENSES.register("unet")
class UNetLens(nn.Module):
    """Args:
    in_chans: image channels (the lens outputs the same number).
    img_size: the side of the images it will see; sets the number of levels.
    width: channels at the first level (doubling per level).
    max_levels: cap on the number of downsamplings.
    constraint: ``budget`` or ``penalty`` (see module docstring).
    budget: the mean |edit| per image allowed under ``budget``.
    clamp: keep ``x'`` inside ``data_range`` (images are in [0, 1] by default).
    stride: run the U-Net on ``stride × stride`` pixel blocks folded into channels (see module docstring).
    edit: ``residual`` (add anything) or ``erase`` (pull pixels towards a local grey fill; see module docstring).
    fill_size: the side of the window whose grey mean is ``erase``'s fill (odd; 1 = the pixel's own grey).
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        img_size: int = 32,
        width: int = 32,
        max_levels: int = 4,
        constraint: str = "budget",
        budget: float = 0.02,
        clamp: bool = True,
        data_range: tuple[float, float] = (0.0, 1.0),
        stride: int = 1,
        edit: str = "residual",
        fill_size: int = 3,
    ) -> None:
        super().__init__()
        if edit not in EDITS:
            raise ValueError(f"Unknown lens edit '{edit}'. Valid edits: {', '.join(EDITS)}")
        if fill_size < 1 or fill_size % 2 == 0:
            raise ValueError(f"lens fill_size must be a positive odd number (a window centred on the pixel), got {fill_size}")
        self.edit_kind, self.fill_size = edit, fill_size
        if stride < 1 or img_size % stride:
            raise ValueError(f"lens stride must be a positive divisor of the image size {img_size}, got {stride}")
        if img_size // stride < 8:
            raise ValueError(f"the U-Net lens needs images of at least 8 px (after stride {stride}), got {img_size}")
        self.stride = stride
        # erase predicts one mask value per pixel; residual one value per pixel and channel
        out_chans = stride**2 if edit == "erase" else in_chans * stride**2
        in_chans, img_size = in_chans * stride**2, img_size // stride
        if constraint not in CONSTRAINTS:
            raise ValueError(f"Unknown lens constraint '{constraint}'. Valid constraints: {', '.join(CONSTRAINTS)}")
        if constraint == "budget" and budget <= 0:
            raise ValueError(f"lens budget must be positive, got {budget}")
        self.levels = max(1, min(max_levels, int(math.log2(img_size / 4))))
        self.constraint, self.budget, self.clamp = constraint, budget, clamp
        self.data_range = data_range
        widths = [width * 2**i for i in range(self.levels + 1)]
        self.inc = _block(in_chans, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(self.levels))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(self.levels)))
        self.out = nn.Conv2d(widths[0], out_chans, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def fill(self, x: torch.Tensor) -> torch.Tensor:
        """``erase``'s target: the grey mean of each pixel's ``fill_size`` window, ``(B, C, H, W) -> (B, 1, H, W)``."""
        return grey_fill(x, self.fill_size)

    def raw_residual(self, x: torch.Tensor) -> torch.Tensor:
        r = self._unet(F.pixel_unshuffle(x, self.stride) if self.stride > 1 else x)
        r = F.pixel_shuffle(r, self.stride) if self.stride > 1 else r
        if self.edit_kind == "erase":
            # A clamp, not a sigmoid, so that the zero-initialised output is mask 0 and the lens starts as the
            # identity; passed straight through on the way back (Bengio et al. 2013), because a plain clamp has
            # no gradient below 0 and a pixel whose mask once went negative could never be erased again
            # (38% of the fringe pixels of one relative-location run, experiments/results/erase_lens_pilot).
            mask = r + (r.clamp(0.0, 1.0) - r).detach()
            return mask * (self.fill(x) - x)
        return r

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        h = skips[0]
        for block in self.down:
            # ceil_mode keeps odd sizes from losing a row; the decoder interpolates back exactly.
            h = block(F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return self.out(h)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        r = self.raw_residual(x)
        if self.constraint == "budget":
            mean_abs = r.abs().mean(dim=(1, 2, 3), keepdim=True)
            # Projection onto the L1 ball: scale down only edits that exceed the budget, so the
            # zero-initialised lens stays exactly the identity (and its gradient stays finite).
            r = r * torch.clamp(self.budget / mean_abs.clamp_min(1e-12), max=1.0)
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.residual(x)
        if self.clamp:
            out = out.clamp(*self.data_range)
        return out

    @torch.no_grad()
    def edit(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Edit new images at transfer time (eval mode, no gradients, batched): ``(N, C, H, W) -> (N, C, H, W)``.

        (Named ``edit``, not ``apply``: ``nn.Module.apply(fn)`` is PyTorch's recursive initialiser.)"""
        was_training = self.training
        self.eval()
        out = torch.cat([self(chunk) for chunk in images.split(batch_size)])
        self.train(was_training)
        return out


@LENSES.register("none")
def no_lens(**_: Any) -> None:
    return None


class _GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-scale`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Gradient reversal (Ganin & Lempitsky 2015): lets the lens and the feature extractor share one
    forward and one backward pass in ``full`` mode, the lens receiving the negated pretext gradient."""
    return _GradientReversal.apply(x, scale)
