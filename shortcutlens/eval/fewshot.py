"""``fewshot``: big_vision's closed-form few-shot linear evaluation on frozen features.

Zhai et al., "Scaling Vision Transformers", CVPR 2022, Sec. 2 and big_vision's
``evaluators/fewshot_lsr.py``: for each seed, every class's training examples are put in a seeded
random order and the first ``k`` of each class form the support set (k ∈ 1, 5, 10, 25; 3 seeds); a
ridge classifier to ±1 targets (``shortcutlens.eval.ridge``, λ = 1024) is solved in closed form and
scored on the full test split. Reported: mean and standard deviation over seeds.

Shapes: pool features ``(N, D)``, test ``(M, D)``; one eigendecomposition of at most ``(k·C + 1)²`` per
(seed, k), so all 12 fits on 50,000 × 768 features take well under a second of linear algebra.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from shortcutlens.eval.base import EVALUATORS, FeatureEvaluator, mean_std, metric_name
from shortcutlens.eval.ridge import DEFAULT_L2, solve_ridge
from shortcutlens.eval.source import FeatureSource

DEFAULT_SHOTS = (1, 5, 10, 25)

log = logging.getLogger(__name__)


def support_indices(labels: torch.Tensor, *, shots: Sequence[int], seed: int,
                    num_classes: int | None = None) -> dict[int, torch.Tensor]:
    """For each ``k`` in ``shots``, the indices of the first ``k`` examples of every class in one seeded
    permutation per class (so the 5-shot set contains the 1-shot set, as in big_vision)."""
    y = labels.cpu().numpy()
    classes = range(num_classes) if num_classes is not None else np.unique(y)
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    return {k: torch.from_numpy(np.concatenate([o[:k] for o in order]).astype(np.int64)) for k in shots}


def fewshot_accuracies(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = (0, 1, 2),
    l2: float | Sequence[float] = DEFAULT_L2,
) -> dict[tuple[int, float], list[float]]:
    """Test top-1 for each ``(k, λ)`` over ``seeds``: ``{(k, λ): [acc_seed0, acc_seed1, ...]}``."""
    l2s = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    shift = test_x.mean(0)
    centred = test_x - shift          # once: every support's standardisation folds into its weights
    out: dict[tuple[int, float], list[float]] = {(k, lam): [] for k in shots for lam in l2s}
    for seed in seeds:
        for k, idx in support_indices(train_y, shots=shots, seed=seed, num_classes=num_classes).items():
            solution = solve_ridge(train_x[idx], train_y[idx], num_classes=num_classes)
            for lam in l2s:
                pred = solution.scores(centred, lam, shift=shift).argmax(1)
                out[(k, lam)].append((pred == test_y).float().mean().item())
    return out


@EVALUATORS.register("fewshot")
@dataclass(kw_only=True)
class FewShotEvaluator(FeatureEvaluator):
    """Closed-form few-shot ridge per tapped layer and feature source.

    Args:
        layers, which: taps and feature sources (see ``linear``).
        shots: examples per class in the support set.
        seeds: how many seeded draws (seed ``i`` of ``source.seed·1000 + i``).
        l2: ridge λ, or a list of them (each reported).
        train_split, test_split: where supports come from (``trainval`` = all of train) and the test set.
    Yields ``fewshot/<which>/<layer>/<k>shot`` (mean over seeds) and ``.../<k>shot_std``; with several λ,
    ``.../<k>shot_l2=<λ>``.
    """

    name = "fewshot"
    shots: list = field(default_factory=lambda: list(DEFAULT_SHOTS))
    seeds: int = 3
    l2: float | list = DEFAULT_L2
    train_split: str = "trainval"
    test_split: str = "test"

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        l2s = [float(self.l2)] if isinstance(self.l2, (int, float)) else [float(v) for v in self.l2]
        seeds = [source.seed * 1000 + i for i in range(self.seeds)]
        for which in self.feature_sources():
            pool, pool_y = source.features(self.train_split, layers=self.layers, which=which)
            test, test_y = source.features(self.test_split, layers=self.layers, which=which)
            for layer in pool:
                start = time.perf_counter()
                accs = fewshot_accuracies(pool[layer], pool_y, test[layer], test_y, num_classes=source.num_classes,
                                          shots=self.shots, seeds=seeds, l2=l2s)
                log.info("fewshot [%s/%s]: %d supports in %.1f s", which, layer, len(accs) * len(seeds),
                         time.perf_counter() - start)
                for (k, lam), values in accs.items():
                    suffix = f"{k}shot" if len(l2s) == 1 else f"{k}shot_l2={lam:g}"
                    mean, std = mean_std(values)
                    yield metric_name(self.name, which, layer, suffix), mean
                    yield metric_name(self.name, which, layer, f"{suffix}_std"), std
