"""A pretext task from another package: was the image mirrored left-right?

The entry point in pyproject.toml registers it under ``hflip``: ``pretexts.create_pretext("hflip",
num_features=...)``, or from Hydra ``shortcutlens-train '~pretext' +pretext.name=hflip`` (settings as
``+pretext.<key>=...``). Being a classification task, it works with every lens mode.
"""

import torch
from torch import nn

from pretexts import Pretext


class HorizontalFlip(Pretext):
    """2-way: 0 = as is, 1 = mirrored. ``views`` ``(B, C, H, W) -> (2B, C, H, W), (2B,)``."""

    classification = True
    num_classes = 2

    def __init__(self, *, num_features: int) -> None:
        super().__init__()
        self.head = nn.Linear(num_features, self.num_classes)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = torch.arange(2, device=images.device).repeat_interleave(images.shape[0])
        return torch.cat([images, images.flip(-1)]), targets

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)
