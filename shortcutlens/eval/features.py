"""Feature extraction from a frozen backbone, optionally through the lens.

``which`` selects what the probe sees (Minderer et al. 2020 probe the concatenation):
``raw`` = F(x), ``lensed`` = F(L(x)), ``concat`` = [F(x), F(L(x))].
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from shortcutlens.data.base import Split
from shortcutlens.data.loader import iterate

FEATURE_SOURCES = ("raw", "lensed", "concat")


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    split: Split,
    *,
    device: torch.device,
    batch_size: int = 512,
    lens: nn.Module | None = None,
    which: str = "raw",
    amp: bool = False,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``(N, D)`` (``(N, 2D)`` for ``concat``) as float32 on the CPU, and labels ``(N,)``."""
    if which not in FEATURE_SOURCES:
        raise ValueError(f"Unknown feature source '{which}'. Valid sources: {', '.join(FEATURE_SOURCES)}")
    if which != "raw" and lens is None:
        raise ValueError(f"feature source '{which}' needs a lens, and this run has none")
    was_training = backbone.training
    backbone.eval()
    if lens is not None:
        lens.eval()
    feats, labels = [], []
    batches = iterate(split, batch_size=batch_size, device=device)
    total = (len(split) + batch_size - 1) // batch_size
    for x, y in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            parts = []
            if which in ("raw", "concat"):
                parts.append(backbone(x).float())
            if which in ("lensed", "concat"):
                parts.append(backbone(lens(x)).float())
        feats.append(torch.cat(parts, dim=1).cpu())
        labels.append(y.cpu())
    backbone.train(was_training)
    if lens is not None:
        lens.train(was_training)
    return torch.cat(feats), torch.cat(labels)
