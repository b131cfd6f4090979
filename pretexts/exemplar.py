"""Exemplar (Dosovitskiy, Springenberg, Riedmiller, Brox, "Discriminative Unsupervised Feature Learning
with Convolutional Neural Networks", NIPS 2014), in the form of Kolesnikov, Zhai, Beyer, "Revisiting
Self-Supervised Visual Representation Learning", CVPR 2019.

Every image is its own class. ``views`` makes ``copies`` heavily augmented copies of each image
(Kolesnikov et al.: 8 Inception-style crops of each image, grayscale with probability 0.66); a linear
embedding head maps the pooled features to ``embed_dim`` dimensions (their network's 1000-way output
layer) and a semi-hard triplet loss with margin 0.5 pulls copies of an image together and pushes
other images away. Kolesnikov et al. use TensorFlow's ``triplet_semihard_loss`` (Schroff et al., 2015),
which works on *squared* Euclidean distances; here the loss is pytorch-metric-learning's
``TripletMarginLoss`` over the triplets its ``TripletMarginMiner(type_of_triplets="semihard")`` finds
(``d(a, p) < d(a, n) <= d(a, p) + margin``), averaged over those with a positive loss, on L2-normalised
embeddings with squared distances by default (``squared_distance``).

Augmentation (``pretexts.instance_augment``), after TF's Inception preprocessing that Kolesnikov et
al. apply: crop of 5–100% of the area, flip, colour distortion (brightness 32/255, contrast and
saturation 0.5–1.5, hue 0.2), grayscale with p = 0.66 drawn once per source image and shared by its
copies (they convert before copying). On 1-channel images only brightness and contrast are jittered.

Not a classification task, so ``lens.mode=auto`` plays ``full``; the targeted objectives work too
(``targetable``): ``task_logits`` scores each copy against every image of the batch (its mean cosine
similarity to that image's other copies, over ``temperature``), its own image's column the target.
Triplets are mined within each rank's batch.

Shapes: ``views`` ``(B, C, H, W) -> inputs (copies·B, C, H, W), targets (copies·B,)`` (image index, copies
of one image adjacent); ``loss`` takes features ``(copies·B, D)``. Metrics: ``acc`` is the share of
copies whose nearest other embedding is a copy of the same image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import TripletMarginMiner
from torch import nn

from pretexts import PRETEXTS
from pretexts.base import Pretext
from pretexts.instance_augment import InstanceAugment


def nearest_neighbour_accuracy(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of rows whose most cosine-similar *other* row has the same label (detached)."""
    z = nn.functional.normalize(embeddings.detach().float(), dim=-1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    return (labels[sim.argmax(dim=1)] == labels).float().mean()


@PRETEXTS.register("exemplar")
class Exemplar(Pretext):
    """Args:
    num_features: backbone feature width ``D``.
    copies: augmented copies per image (Kolesnikov et al.: 8; at least 2 to form triplets).
    embed_dim: width of the embedding head (Kolesnikov et al.: 1000).
    margin: triplet margin (Kolesnikov et al.: 0.5).
    squared_distance: squared Euclidean distance between normalised embeddings, as TF's
        ``triplet_semihard_loss`` that Kolesnikov et al. use; False for plain Euclidean.
    crop_scale: area fraction of the random resized crop (Inception preprocessing: 0.05–1).
    brightness, contrast, saturation, hue: colour jitter (Inception's ``distort_color``).
    jitter_probability: chance of colour jitter per copy (Inception preprocessing: always).
    grayscale_probability: chance of grayscale per source image (Kolesnikov et al.: 0.66).
    """

    classification = False
    targetable = True
    temperature = 0.1  # of task_logits only (the triplet loss has its margin)

    def __init__(
        self,
        *,
        num_features: int,
        copies: int = 8,
        embed_dim: int = 1000,
        margin: float = 0.5,
        squared_distance: bool = True,
        crop_scale: Sequence[float] = (0.05, 1.0),
        brightness: float = 32 / 255,
        contrast: float = 0.5,
        saturation: float = 0.5,
        hue: float = 0.2,
        jitter_probability: float = 1.0,
        grayscale_probability: float = 0.66,
    ) -> None:
        super().__init__()
        if copies < 2:
            raise ValueError(f"exemplar needs at least 2 copies per image to form triplets, got {copies}")
        self.copies = copies
        self.head = nn.Linear(num_features, embed_dim)
        self.augment = InstanceAugment(crop_scale=crop_scale, brightness=brightness, contrast=contrast,
                                       saturation=saturation, hue=hue, jitter_probability=jitter_probability,
                                       grayscale_probability=grayscale_probability)
        distance = LpDistance(normalize_embeddings=True, p=2, power=2 if squared_distance else 1)
        self.miner = TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=distance)
        self.triplet = TripletMarginLoss(margin=margin, distance=distance)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        copies = self.augment(images.repeat_interleave(self.copies, dim=0), group=self.copies)
        return copies, torch.arange(b, device=images.device).repeat_interleave(self.copies)

    def embeddings(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).float()

    def view_sources(self, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
        return targets  # the target of a view is the index of its source image

    def task_logits(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(N, B)`` logits of ``N`` copies of ``B`` images: copy ``i``'s mean cosine similarity to the copies of
        each image (its own copy left out), over ``temperature``; column ``targets[i]`` is its own image."""
        z = nn.functional.normalize(self.embeddings(features), dim=-1)
        sim = (z @ z.T).fill_diagonal_(0.0)
        members = nn.functional.one_hot(targets, int(targets.max()) + 1).to(sim.dtype)  # (N, B)
        counts = members.sum(0, keepdim=True) - members  # copies of image j other than i itself
        return (sim @ members) / counts.clamp_min(1) / self.temperature

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.embeddings(features)
        triplets = self.miner(z, targets)
        loss = self.triplet(z, targets, triplets)
        metrics = {"loss": loss.detach(), "acc": nearest_neighbour_accuracy(z, targets),
                   "triplets": torch.tensor(float(triplets[0].numel()))}
        return loss, metrics
