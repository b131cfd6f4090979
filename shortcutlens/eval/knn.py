"""``knn``: weighted k-nearest-neighbour classification on frozen features.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018, as
used by DINO (Caron et al., ICCV 2021, ``eval_knn.py``): features are L2-normalised, each test point
takes its ``k`` most cosine-similar training points (k = 20), each votes for its label with weight
``exp(similarity / T)`` (T = 0.07), and the class with the largest total wins. Test points are
processed in chunks, so memory is ``chunk × N`` similarities, never ``M × N``.

Shapes: train ``(N, D)``, ``(N,)``; test ``(M, D)``; returns class scores ``(M, C)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shortcutlens.eval.base import EVALUATORS, FeatureEvaluator, metric_name
from shortcutlens.eval.source import FeatureSource

log = logging.getLogger(__name__)


@torch.no_grad()
def knn_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Summed neighbour votes ``(M, C)`` (on the CPU); ``argmax(1)`` is the prediction."""
    device = torch.device(device) if device is not None else train_x.device
    bank = F.normalize(train_x.float().to(device), dim=1)
    labels = train_y.long().to(device)
    k = min(k, bank.shape[0])
    out = []
    for part in test_x.split(chunk):
        q = F.normalize(part.float().to(device), dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)                    # (m, k)
        weights = (sims / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=device)
        votes.scatter_add_(1, labels[idx], weights)
        out.append(votes.cpu())
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean().item()


@EVALUATORS.register("knn")
@dataclass(kw_only=True)
class KNNEvaluator(FeatureEvaluator):
    """Weighted cosine kNN (DINO's protocol) per tapped layer and feature source.

    Args:
        layers, which: taps and feature sources (see ``linear``).
        k: neighbours (DINO reports 20 as best of 10, 20, 100, 200).
        temperature: vote sharpness T.
        chunk: test points per similarity block.
        train_split, test_split: the memory bank and the queries.
    Yields ``knn/<which>/<layer>/top1`` and ``.../top5`` (when there are more than 5 classes).
    """

    name = "knn"
    k: int = 20
    temperature: float = 0.07
    chunk: int = 1024
    train_split: str = "trainval"
    test_split: str = "test"

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        for which in self.feature_sources():
            bank, bank_y = source.features(self.train_split, layers=self.layers, which=which)
            test, test_y = source.features(self.test_split, layers=self.layers, which=which)
            for layer in bank:
                start = time.perf_counter()
                scores = knn_scores(bank[layer], bank_y, test[layer], num_classes=source.num_classes, k=self.k,
                                    temperature=self.temperature, chunk=self.chunk, device=source.device)
                log.info("knn [%s/%s]: %d queries against %d x %d in %.1f s", which, layer, len(test_y), *bank[layer].shape,
                         time.perf_counter() - start)
                yield metric_name(self.name, which, layer, "top1"), topk_accuracy(scores, test_y, 1)
                if source.num_classes > 5:
                    yield metric_name(self.name, which, layer, "top5"), topk_accuracy(scores, test_y, 5)
