"""``shortcut_audit``: how much a representation relies on an injected shortcut.

Minderer et al., "Automatic Shortcut Removal for Self-Supervised Representation Learning", ICML 2020,
measure a shortcut's pull by what the pretext head and a downstream probe do with and without it.
Three measurements, each with the raw images and through the lens (when the run has one):

(a) **pretext on the shortcut alone** — the pretext head's accuracy on images whose content is
    blanked (a constant ``fill``) but the shortcut kept. Far above chance (1/K) means the head reads
    the shortcut; a lens that removes it brings this to chance. Reference rows: shortcut-bearing
    images, and clean images (content only).
(b) **probe, clean vs shortcut-bearing test images** — a linear probe fitted on clean training
    features, scored on clean test images and on the same images with the shortcut: the gap is how
    much the shortcut moves the features that downstream tasks read.
(c) **decodability of the shortcut's state** — linear probes trained on one set of images and tested on
    another: ``presence`` (with vs without the shortcut; chance 50%) and ``orientation`` (the shortcut
    rotated by k·90° against upright content, ``rot(−k)∘shortcut∘rot(k)``, k ∈ 0..3; chance 25% —
    what a rotation pretext can exploit).

Shapes: at most ``max_images`` images per set; features ``(n, D)`` per layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from shortcutlens.data.base import Split, seeded_split
from shortcutlens.data.loader import to_float
from shortcutlens.eval.base import EVALUATORS, Evaluator, metric_name
from shortcutlens.eval.linear import accuracy, fit_logistic, standardise
from shortcutlens.eval.source import FeatureSource

PRETEXT_VIEWS = ("blank_shortcut", "shortcut", "clean")


@torch.no_grad()
def pretext_accuracy(source: FeatureSource, split: Split, *, view: str, through_lens: bool, batch_size: int = 128) -> float:
    """Accuracy of the pretext head on ``split`` under ``view`` (pretext views seeded by ``source.seed``)."""
    pretext, backbone = source.pretext, source.backbone
    lens = source.lens if through_lens else None
    transform = source.view_transform(view)
    correct, total = 0.0, 0
    devices = [source.device] if source.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(source.seed)
        for start in range(0, len(split), batch_size):
            x = transform(to_float(split.images[start:start + batch_size].to(source.device)))
            inputs, targets = pretext.views(x)
            if lens is not None:
                inputs = lens(inputs)
            with torch.autocast(source.device.type, dtype=torch.bfloat16, enabled=source.amp):
                _, m = pretext.loss(pretext.embed(backbone, inputs), targets)
            correct += m["acc"].item() * targets.shape[0]
            total += targets.shape[0]
    return correct / max(total, 1)


def _decode(train: list[torch.Tensor], test: list[torch.Tensor], *, l2: float, max_iter: int) -> float:
    """Top-1 of a probe telling the ``len(train)`` groups of features apart (group index = label)."""
    ytr = torch.cat([torch.full((t.shape[0],), i) for i, t in enumerate(train)])
    yte = torch.cat([torch.full((t.shape[0],), i) for i, t in enumerate(test)])
    xtr, xte = standardise(torch.cat(train), torch.cat(test))
    model = fit_logistic(xtr, ytr, num_classes=len(train), l2=l2, max_iter=max_iter, dtype=torch.float32)
    return accuracy(model, xte, yte)


@EVALUATORS.register("shortcut_audit")
@dataclass(kw_only=True)
class ShortcutAuditEvaluator(Evaluator):
    """Args:
    layers: taps for (b) and (c) (see ``linear``).
    fill: the constant that replaces the content in (a) (0 = black, the background of most sets).
    max_images: images per set in (a) and (c) (a seeded subset).
    probe_l2, probe_max_iter: the fixed L2 strength and iterations of the probes of (b) and (c).
    decode: which states (c) decodes: ``presence`` and/or ``orientation``.
    Yields ``shortcut_audit/pretext/<raw|lensed>/<view>/acc``, ``shortcut_audit/probe/<which>/<layer>/
    {clean_top1, shortcut_top1, gap}``, ``shortcut_audit/decode/<which>/<layer>/<state>`` and
    ``shortcut_audit/pretext/chance``.
    """

    name = "shortcut_audit"
    layers: list = field(default_factory=lambda: ["pooled"])
    fill: float = 0.0
    max_images: int = 2000
    probe_l2: float = 1e-4
    probe_max_iter: int = 200
    decode: list = field(default_factory=lambda: ["presence", "orientation"])

    def subset(self, source: FeatureSource, split: str, salt: int) -> Split:
        s = source.split(split)
        if len(s) <= self.max_images:
            return s
        keep, _ = seeded_split(len(s), self.max_images, seed=source.seed * 7919 + salt)
        return s.subset(keep)

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        if source.shortcut is None:
            raise ValueError("shortcut_audit needs a shortcut: the checkpoint has none (pass one, e.g. shortcut=arrow)")
        unknown = [d for d in self.decode if d not in ("presence", "orientation")]
        if unknown:
            raise ValueError(f"Unknown shortcut state '{unknown[0]}'. Valid states: presence, orientation")
        whiches = ["raw"] + (["lensed"] if source.lens is not None else [])
        blank = f"blank_shortcut@{self.fill:g}"

        # (a) the pretext head on the shortcut alone
        if source.pretext is not None and getattr(source.pretext, "classification", False):
            test = self.subset(source, "test", 1)
            yield metric_name(self.name, "pretext", "chance"), 1.0 / int(source.pretext.num_classes)
            for which in whiches:
                for view in PRETEXT_VIEWS:
                    acc = pretext_accuracy(source, test, view=blank if view == "blank_shortcut" else view,
                                           through_lens=which == "lensed", batch_size=max(1, source.batch_size // 4))
                    yield metric_name(self.name, "pretext", which, view, "acc"), acc

        for which in whiches:
            # (b) a probe fitted on clean images, scored on clean and shortcut-bearing test images
            ftr, ytr = source.features("trainval", layers=self.layers, which=which, view="clean")
            fte, yte = source.features("test", layers=self.layers, which=which, view="clean")
            fsc, _ = source.features("test", layers=self.layers, which=which, view="shortcut")
            for layer in ftr:
                xtr, xte, xsc = standardise(ftr[layer], fte[layer], fsc[layer])
                model = fit_logistic(xtr, ytr, num_classes=source.num_classes, l2=self.probe_l2,
                                     max_iter=self.probe_max_iter, dtype=torch.float32)
                clean, shortcut = accuracy(model, xte, yte), accuracy(model, xsc, yte)
                yield metric_name(self.name, "probe", which, layer, "clean_top1"), clean
                yield metric_name(self.name, "probe", which, layer, "shortcut_top1"), shortcut
                yield metric_name(self.name, "probe", which, layer, "gap"), clean - shortcut

            # (c) the shortcut's state, decoded by a linear probe (train images -> test images)
            train, test = self.subset(source, "trainval", 2), self.subset(source, "test", 3)
            states = {"presence": ["clean", "shortcut"], "orientation": [f"mark_rot{k}" for k in range(4)]}
            for state in self.decode:
                groups_tr = [source.features(train, layers=self.layers, which=which, view=v)[0] for v in states[state]]
                groups_te = [source.features(test, layers=self.layers, which=which, view=v)[0] for v in states[state]]
                for layer in groups_tr[0]:
                    acc = _decode([g[layer] for g in groups_tr], [g[layer] for g in groups_te], l2=self.probe_l2,
                                  max_iter=self.probe_max_iter)
                    yield metric_name(self.name, "decode", which, layer, state), acc
