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


def create_lens(name: str, **kwargs: Any) -> nn.Module | None:
    """``create_lens("none")`` returns ``None`` (train without a lens)."""
    return LENSES.create(name, **kwargs)


def list_lenses() -> list[str]:
    return LENSES.names()


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
    ) -> None:
        super().__init__()
        if stride < 1 or img_size % stride:
            raise ValueError(f"lens stride must be a positive divisor of the image size {img_size}, got {stride}")
        if img_size // stride < 8:
            raise ValueError(f"the U-Net lens needs images of at least 8 px (after stride {stride}), got {img_size}")
        self.stride = stride
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
        self.out = nn.Conv2d(widths[0], in_chans, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def raw_residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.pixel_unshuffle(x, self.stride)
        skips = [self.inc(x)]
        h = skips[0]
        for block in self.down:
            # ceil_mode keeps odd sizes from losing a row; the decoder interpolates back exactly.
            h = block(F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        r = self.out(h)
        return F.pixel_shuffle(r, self.stride) if self.stride > 1 else r

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
