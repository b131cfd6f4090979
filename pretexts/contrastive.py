"""Contrastive learning with NT-Xent (SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020; code github.com/google-research/simclr).

``views`` draws two augmented views of every image; an MLP projection head ``g(h) = W2·ReLU(W1·h)``
(SimCLR Sec. 2.1, 128-d output, hidden width = feature width) maps the pooled features to ``z``, and
NT-Xent scores each view against all others: for a view ``i`` with partner ``j``,
``ℓ_i = −log( exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ) )`` with cosine similarity; the loss
is the mean over views. Computed by pytorch-metric-learning's ``NTXentLoss`` from explicit index tuples.

Settings are SimCLR's CIFAR-10 recipe (their README command and Appendix B.9) since this library trains
on small images: temperature τ = 0.5, colour-jitter strength 0.5 (brightness, contrast, saturation
0.4 and hue 0.1 = 0.8·s, 0.8·s, 0.8·s, 0.2·s, with p = 0.8), grayscale p = 0.2, crops of 8–100% of
the area, flips, no Gaussian blur. 1-channel images get brightness and contrast only.

**Negatives from every rank.** Under torchrun the projected views of all ranks are gathered *with
gradients* (``shortcutlens.distributed.all_gather_with_grad``); each rank's loss is the mean over its
own views as anchors against the views of all ranks (SimCLR's implementation), and DDP's gradient
average then equals the gradient of one process on the concatenated batch (pinned by a 2-rank test).
All ranks must use the same batch size (the loop's sampler drops the last partial batch). Under
``torch.no_grad()`` — evaluation, which the loop runs on rank 0 alone — nothing is gathered, so a
single rank never waits on the others.

NT-Xent as ``NTXentLoss`` computes it holds a ``(2B) × (2B)·(2BW − 2)`` matrix (B images per rank, W
ranks): about 66 MB at B = 128 on one rank, but cubic in the batch, so very large batches per rank
need chunking or pytorch-metric-learning's ``SupConLoss`` (the same value with one positive per view).

Not a classification task, so ``lens.mode=auto`` plays ``full``; the targeted objectives work too
(``targetable``): ``task_logits`` reads the pairs as a B-way classification — each view against the
other half's view of every image, its partner's column the target — so ``random_wrong`` pushes a view
towards a random *other* image (the instance analogue of a random wrong rotation). Shapes: ``views`` ``(B, C, H, W) -> inputs
(2B, C, H, W)`` (all first views, then all second views), ``targets (2B,)`` = ``[0..B−1, 0..B−1]``;
``loss`` takes features ``(2B, D)``. Metric ``acc``: share of views whose most similar other view is
their partner.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_metric_learning.losses import NTXentLoss
from torch import nn

from pretexts import PRETEXTS
from pretexts.base import Pretext
from pretexts.instance_augment import InstanceAugment
from shortcutlens import distributed as dist


@PRETEXTS.register("contrastive")
class Contrastive(Pretext):
    """Args:
    num_features: backbone feature width ``D``.
    temperature: NT-Xent temperature τ (SimCLR on CIFAR-10: 0.5).
    proj_dim: output width of the projection head (SimCLR: 128).
    proj_hidden_dim: hidden width of the projection head (SimCLR: the feature width; None = ``D``).
    crop_scale: area fraction of the random resized crop (SimCLR: 0.08–1).
    jitter_strength: colour-distortion strength ``s`` (SimCLR: 1.0 on ImageNet, 0.5 on CIFAR-10).
    jitter_probability: chance of colour jitter per view (SimCLR: 0.8).
    grayscale_probability: chance of grayscale per view (SimCLR: 0.2).
    gather_distributed: draw negatives from every rank under torchrun.
    """

    classification = False
    targetable = True

    def __init__(
        self,
        *,
        num_features: int,
        temperature: float = 0.5,
        proj_dim: int = 128,
        proj_hidden_dim: int | None = None,
        crop_scale: Sequence[float] = (0.08, 1.0),
        jitter_strength: float = 0.5,
        jitter_probability: float = 0.8,
        grayscale_probability: float = 0.2,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NT-Xent temperature must be positive, got {temperature}")
        hidden = proj_hidden_dim or num_features
        self.head = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))
        s = jitter_strength
        self.augment = InstanceAugment(crop_scale=crop_scale, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s,
                                       hue=0.2 * s, jitter_probability=jitter_probability,
                                       grayscale_probability=grayscale_probability)
        self.ntxent = NTXentLoss(temperature=temperature)
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        inputs = torch.cat([self.augment(images), self.augment(images)])
        return inputs, torch.arange(b, device=images.device).repeat(2)

    def view_sources(self, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
        return targets  # the target of a view is the index of its source image

    def task_logits(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(2B, B)`` cross-view logits: each view's cosine similarity to the other half's view of every
        image, over the temperature; column ``targets[i]`` holds view ``i``'s partner. Features ``(2B, D)``
        laid out as ``views`` makes them (this rank's views; nothing is gathered)."""
        z = nn.functional.normalize(self.head(features).float(), dim=-1)
        b = z.shape[0] // 2
        first = z[:b][targets[:b].argsort()]  # row j: image j's first view
        second = z[b:][targets[b:].argsort()]
        return torch.cat([z[:b] @ second.T, z[b:] @ first.T]) / self.temperature

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.head(features).float()
        n = z.shape[0]
        gather = self.gather_distributed and torch.is_grad_enabled() and dist.world_size() > 1
        rank, world = (dist.rank(), dist.world_size()) if gather else (0, 1)
        ref = dist.all_gather_with_grad(z) if gather else z
        # Pair ids unique across ranks: every rank's targets follow the same layout (ids in [0, n)), so
        # shift them by rank.
        labels = targets + rank * n
        ref_labels = torch.cat([targets + r * n for r in range(world)])
        self_index = torch.arange(n, device=z.device) + rank * n  # each anchor's own column in ``ref``
        same = labels[:, None] == ref_labels[None, :]
        positives = same.clone()
        positives[torch.arange(n, device=z.device), self_index] = False
        a1, p = positives.nonzero(as_tuple=True)
        a2, neg = (~same).nonzero(as_tuple=True)
        loss = self.ntxent(z, indices_tuple=(a1, p, a2, neg), ref_emb=ref)

        with torch.no_grad():
            zn = nn.functional.normalize(z, dim=-1)
            sim = zn @ nn.functional.normalize(ref, dim=-1).T
            sim[torch.arange(n, device=z.device), self_index] = float("-inf")
            acc = positives[torch.arange(n, device=z.device), sim.argmax(dim=1)].float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}
