"""Augmented copies of an image on the device (kornia), for the instance-discrimination tasks (exemplar,
contrastive).

Per image, one random draw of: a crop of ``crop_scale`` of the area (aspect ratio 3/4–4/3) resized
back to the input size, a horizontal flip (p = 0.5), colour jitter with probability
``jitter_probability``, and grayscale with probability ``grayscale_probability``. 1-channel images get
brightness and contrast only (saturation and hue do not exist there; grayscale is the identity).
Grayscale draws can be shared by ``group`` consecutive images (Exemplar's copies of one image, as in
Kolesnikov et al.'s reference, which converts the source image before making copies).

Input and output: float ``(N, C, H, W)`` in [0, 1], ``C`` 1 or 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia
import kornia.augmentation as K
import torch
from torch import nn


class InstanceAugment(nn.Module):
    """Args:
    crop_scale: (min, max) area fraction of the random resized crop.
    brightness, contrast, saturation, hue: kornia ``ColorJitter`` strengths.
    jitter_probability: chance that an image is colour-jittered.
    grayscale_probability: chance that an image (or a group of images) is converted to grayscale.
    """

    def __init__(
        self,
        *,
        crop_scale: Sequence[float],
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        jitter_probability: float,
        grayscale_probability: float,
    ) -> None:
        super().__init__()
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale is a (min, max) area fraction in (0, 1], got {list(crop_scale)}")
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.jitter = (brightness, contrast, saturation, hue)
        self.jitter_probability, self.grayscale_probability = jitter_probability, grayscale_probability
        self._pipelines: dict[tuple[int, int, int], nn.Module] = {}  # kornia ops hold no parameters

    def pipeline(self, channels: int, h: int, w: int) -> nn.Module:
        key = (channels, h, w)
        if key not in self._pipelines:
            b, c, s, hue = self.jitter
            if channels == 1:
                s, hue = 0.0, 0.0
            elif channels != 3:
                raise ValueError(f"colour augmentation needs 1 or 3 channels, got {channels}")
            self._pipelines[key] = nn.Sequential(
                K.RandomResizedCrop((h, w), scale=self.crop_scale, ratio=(3 / 4, 4 / 3)),
                K.RandomHorizontalFlip(),
                K.ColorJitter(b, c, s, hue, p=self.jitter_probability),
            )
        return self._pipelines[key]

    def forward(self, images: torch.Tensor, *, group: int = 1) -> torch.Tensor:
        n, c, h, w = images.shape
        out = self.pipeline(c, h, w)(images)
        if c == 3 and self.grayscale_probability > 0:
            if n % group:
                raise ValueError(f"{n} images do not split into groups of {group}")
            pick = torch.rand(n // group, device=images.device) < self.grayscale_probability
            pick = pick.repeat_interleave(group).reshape(n, 1, 1, 1).to(out.dtype)
            out = pick * kornia.color.rgb_to_grayscale(out).expand_as(out) + (1 - pick) * out
        return out.clamp(0, 1)
