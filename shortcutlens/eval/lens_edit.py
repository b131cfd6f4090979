"""``lens_edit``: how much and where the lens edits, and how much of the pretext task it takes away.

Minderer et al., "Automatic Shortcut Removal for Self-Supervised Representation Learning", ICML 2020,
judge a lens by where its edits fall (on the shortcut, not on the content) and by what they do to the
pretext task. On images with the run's shortcut stamped on (the cue the lens was trained to remove):

- ``mean_abs_edit``: mean ``|L(x) − x|`` over pixels, channels and images;
- ``edit_ratio``: mean ``|edit|`` inside the shortcut's region over the mean outside (above 1: the lens
  works on the shortcut; only for shortcuts that have a region);
- ``pretext_acc/raw`` and ``pretext_acc/lensed``: the pretext head's accuracy on views of the same
  images, as they are and through the lens (eval mode, the head included): how much of the task the
  lens has taken away, and how much the raw images still give away.

The functions below are the whole measurement; the training loop's diagnostics (every log interval, on
a training batch, with views made exactly as in training) and ``shortcutlens-visualize`` (from a
checkpoint) call them, and the ``lens_edit`` evaluator runs them on a :class:`FeatureSource`::

    shortcutlens-probe checkpoint=runs/arrow_lens evaluators=[lens_edit]

Shapes: images ``(B, C, H, W)`` in [0, 1]; edits likewise; a region ``(1, 1, H, W)`` or ``(B, 1, H, W)`` of 0/1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shortcutlens.data.loader import to_float
from shortcutlens.data.shortcuts import edit_ratio
from shortcutlens.eval.base import EVALUATORS, Evaluator, evaluating, metric_name
from shortcutlens.eval.source import FeatureSource

#: ``(inputs, targets) -> accuracy`` (a 0-dim tensor) of a pretext head on a batch of views.
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def lens_edits(lens: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """``L(x) − x`` ``(B, C, H, W)`` with the lens in eval mode (its mode restored after)."""
    return lens.edit(images, batch_size=batch_size) - images


def edit_summary(edits: torch.Tensor, region: torch.Tensor | None) -> dict[str, float]:
    """``mean_abs_edit`` and, when the shortcut has a region on these images, ``edit_ratio`` (inside over
    outside; ``shortcutlens.data.shortcuts.edit_ratio``)."""
    out = {"mean_abs_edit": edits.abs().float().mean().item()}
    ratio = None if region is None else edit_ratio(edits, region)
    if ratio is not None:
        out["edit_ratio"] = ratio
    return out


def head_scorer(backbone: nn.Module, pretext: nn.Module) -> Scorer:
    """The pretext head's accuracy on views: ``pretext.loss(pretext.embed(backbone, inputs), targets)``."""
    return lambda inputs, targets: pretext.loss(pretext.embed(backbone, inputs), targets)[1]["acc"]


@torch.no_grad()
def pretext_accuracy(score: Scorer, views: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                     lenses: Sequence[nn.Module | None] = (None,), amp: bool = False,
                     device_type: str = "cpu") -> list[float]:
    """Accuracy over batches of ``views`` ``(inputs, targets)``, one figure per entry of ``lenses``
    (``None``: the views as they are; a lens: the same views through it), weighted by each batch's size.

    ``views`` may be a generator: each batch is drawn after the previous one was scored, so views and
    forward passes take their random numbers (a patch task's grid) in the same order as a plain loop.
    Put the scored modules in eval mode first (``evaluating``).
    """
    correct, total = [0.0] * len(lenses), 0
    for inputs, targets in views:
        for i, lens in enumerate(lenses):
            seen = inputs if lens is None else lens.edit(inputs)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
                correct[i] += score(seen, targets).item() * targets.shape[0]
        total += targets.shape[0]
    return [c / max(total, 1) for c in correct]


@EVALUATORS.register("lens_edit")
@dataclass(kw_only=True)
class LensEditEvaluator(Evaluator):
    """Where and how much the lens edits ``max_images`` images of ``split`` under ``view``, and the pretext
    head's accuracy on their views with and without the lens.

    Args:
        split: the images (``test`` by default, as ``shortcutlens-visualize``).
        max_images: the first this many images of the split.
        view: what the lens is shown (``shortcut``: the run's cue stamped on, what it was trained on; see
            ``FeatureSource.view_transform``).
        pretext: also score the pretext head (views seeded by ``source.seed``).
        batch_size: images per lens and pretext pass.
    Yields ``lens_edit/mean_abs_edit``, ``lens_edit/edit_ratio`` (shortcuts with a region), and
    ``lens_edit/pretext_acc/{raw,lensed}``.
    """

    name = "lens_edit"
    split: str = "test"
    max_images: int = 2048
    view: str = "shortcut"
    pretext: bool = True
    batch_size: int = 256

    def images(self, source: FeatureSource) -> Iterator[torch.Tensor]:
        """Batches of what the lens is shown, float on ``source.device``."""
        transform = source.view_transform(self.view)
        images = source.split(self.split).images[: self.max_images]
        for chunk in images.split(self.batch_size):
            yield transform(to_float(chunk.to(source.device)))

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        if source.lens is None:
            raise ValueError("the lens_edit evaluator needs a run with a lens; this checkpoint has none (lens=none)")
        edits = torch.cat([lens_edits(source.lens, x, batch_size=self.batch_size) for x in self.images(source)])
        shortcut = source.shortcut
        region = None
        if shortcut is not None:  # where the cue acts on each of these images (before any view's transform)
            raw = source.split(self.split).images[: self.max_images]
            region = torch.cat([shortcut.regions(to_float(chunk.to(source.device))) for chunk in raw.split(self.batch_size)])
        for key, value in edit_summary(edits, region).items():
            yield metric_name(self.name, key), value
        if not self.pretext or source.pretext is None:
            return
        devices = [source.device] if source.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), evaluating(source.backbone, source.pretext, source.lens):
            torch.manual_seed(source.seed)
            views = (source.pretext.views(x) for x in self.images(source))
            raw, lensed = pretext_accuracy(head_scorer(source.backbone, source.pretext), views,
                                           lenses=(None, source.lens), amp=source.amp, device_type=source.device.type)
        yield metric_name(self.name, "pretext_acc", "raw"), raw
        yield metric_name(self.name, "pretext_acc", "lensed"), lensed
