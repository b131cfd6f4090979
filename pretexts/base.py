"""The pretext-task interface (docs/architecture.md, "Contracts").

A pretext task is an ``nn.Module`` that owns its head. The training loop calls, per step::

    inputs, targets = pretext.views(images)          # what the feature extractor sees
    inputs = lens(inputs)                            # the lens edits exactly those pixels
    features = pretext.embed(backbone, inputs)       # (N, num_features) by default backbone(inputs)
    loss, metrics = pretext.loss(features, targets)  # the feature extractor minimises this

and the lens minimises one of ``shortcutlens.adversary``'s objectives, which read ``task_logits`` (a
classification pretext) or ``loss`` (any pretext).

``images`` are float ``(B, C, H, W)`` in [0, 1] on the training device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from pretexts.patch_grid import GridGeometry

class Pretext(nn.Module):
    """Base class. Subclasses set ``classification`` and implement ``views``, ``logits`` (or override
    ``loss`` when the task is not a classification)."""

    #: True when the task is a classification over ``num_classes`` pretext labels; this is what
    #: ``least_likely`` and ``random_wrong`` adversarial targets need.
    classification: bool = True
    num_classes: int = 0
    #: True when ``task_logits`` gives one row of logits per view with the right column at ``targets`` —
    #: what the lens's targeted objectives (``least_likely``, ``random_wrong``, ``entropy``) read. None:
    #: the same as ``classification``. The instance tasks set it: their logits are a view's similarities
    #: to each image of the batch, and the target is its own image.
    targetable: bool | None = None

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def view_sources(self, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``(N,)`` index of the source image of each of the ``N`` views that ``views`` made from
        ``batch_size`` images (a per-instance shortcut is stamped on every view of one image alike)."""
        raise ValueError(f"{type(self).__name__} does not say which image each view comes from, so a per-instance "
                         "shortcut cannot be used with it (the instance tasks exemplar and contrastive can)")

    def embed(self, backbone: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Features of ``inputs``; patch tasks override this to run the shared trunk per patch."""
        return backbone(inputs)

    # What the builder and the evaluators ask of a task, with the answers of a whole-image task.
    @classmethod
    def trunk_input_size(cls, image_size: int, **settings: Any) -> int:
        """Side of the images the backbone sees in training, for ``image_size``-px images and a task built
        with ``settings`` (its constructor's keyword arguments). A class method: ``build_components``
        builds the backbone for this size before the task exists (its head needs the backbone's width).
        Default: the whole image."""
        return image_size

    def geometry(self, image_size: int) -> GridGeometry | None:
        """The 3×3 grid of tiles the trunk sees for ``image_size``-px images (``pretexts.patch_grid``);
        ``None`` (the default): the trunk sees whole images."""
        return None

    def probe_backbone(self, backbone: nn.Module, image_size: int) -> nn.Module:
        """The module a probe embeds whole ``image_size``-px images with: ``backbone`` itself by default;
        a trunk built for a patch task's tiles is probed on the mean of its features over the grid."""
        return backbone

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy of the head's logits; metrics hold detached tensors (no host sync here)."""
        logits = self.logits(features)
        loss = nn.functional.cross_entropy(logits.float(), targets)
        acc = (logits.argmax(-1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc.detach()}

    def task_logits(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits, one row per target in ``targets (N,)``, from what ``embed`` returned:
        what the lens's targeted objectives (``shortcutlens.adversary``) read. Patch tasks combine tile
        features first."""
        return self.logits(features)
