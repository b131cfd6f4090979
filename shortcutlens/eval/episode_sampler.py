"""Meta-Dataset episode sampling on any labelled set.

Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few Examples",
ICLR 2020 (Sec. 3.2 and the reference code, ``meta_dataset/data/sampling.py``), as used for the MD
half of VTAB+MD by Dumoulin et al., NeurIPS 2021. One episode:

1. **ways** ``W ~ U{min_ways, …, min(max_ways_upper_bound, #classes)}`` (5 and 50), classes drawn
   uniformly without replacement among those with at least 2 examples;
2. **query** per class ``q = min(max_num_query, min_c ⌊n_c / 2⌋)`` (10), the same for every class;
3. **support size** ``S = min(max_support_set_size, Σ_c ⌈β · min(max_support_size_contrib_per_class,
   n_c − q)⌉)`` with ``β ~ U(0, 1]`` (500 and 100), written ``⌊β·m + 1⌋`` as in the reference code;
4. **shares** ``k_c = min(n_c − q, ⌊p_c · (S − W)⌋ + 1)`` with ``p_c ∝ n_c · exp(α_c)``,
   ``α_c ~ U(log ½, log 2)``: roughly class-frequency proportional, jittered, at least one per class.

Examples of each chosen class are put in a random order; the first ``k_c`` are support, the next ``q``
query. Randomness comes from one ``numpy.random.RandomState(seed)`` drawn in the reference code's
order, so a seed fixes the whole sequence of episodes.

Shapes: ``labels`` ``(N,)``; an :class:`Episode` holds pool indices ``support (S,)``, ``query (W·q,)``
and episode-relative labels in ``[0, W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class EpisodeRules:
    """Meta-Dataset's ``EpisodeDescriptionConfig`` defaults for variable-way, variable-shot episodes."""

    min_ways: int = 5
    max_ways_upper_bound: int = 50
    max_num_query: int = 10
    max_support_set_size: int = 500
    max_support_size_contrib_per_class: int = 100
    min_log_weight: float = math.log(0.5)
    max_log_weight: float = math.log(2.0)
    min_examples_in_class: int = 0


@dataclass
class Episode:
    classes: torch.Tensor          # (W,) dataset class ids, in episode-label order
    support: torch.Tensor          # (S,) indices into the pool
    support_labels: torch.Tensor   # (S,) in [0, W)
    query: torch.Tensor            # (W·q,)
    query_labels: torch.Tensor     # (W·q,)
    num_support: torch.Tensor      # (W,) support examples per class
    num_query: int                 # query examples per class
    support_set_size: int          # the sampled S (Σ num_support ≤ S)
    beta: float                    # the draw behind S
    log_weights: torch.Tensor      # (W,) the draws behind the shares

    @property
    def ways(self) -> int:
        return int(self.classes.numel())


class EpisodeSampler:
    """Args:
    labels: ``(N,)`` class ids of the pool the episodes are drawn from.
    rules: the sampling constants (Meta-Dataset's defaults).
    seed: seeds the episode sequence.
    """

    def __init__(self, labels: torch.Tensor, *, rules: EpisodeRules = EpisodeRules(), seed: int = 0) -> None:
        self.rules = rules
        y = labels.cpu().numpy().astype(np.int64)
        floor = max(2, rules.min_examples_in_class)  # two per class: one support, one query at least
        self.by_class = {int(c): np.flatnonzero(y == c) for c in np.unique(y) if c >= 0}
        self.class_ids = np.array(sorted(c for c, idx in self.by_class.items() if len(idx) >= floor), dtype=np.int64)
        if rules.min_ways < 1:
            raise ValueError(f"min_ways must be at least 1, got {rules.min_ways}")
        if len(self.class_ids) < rules.min_ways:
            raise ValueError(
                f"episodes need at least min_ways={rules.min_ways} classes with {floor}+ examples; "
                f"this split has {len(self.class_ids)} (lower min_ways to use it)")
        if rules.max_support_set_size < rules.min_ways:
            raise ValueError("max_support_set_size is too small to hold one support example per class")
        self.rng = np.random.RandomState(seed)

    # Each step mirrors one function of the reference sampler.
    def sample_ways(self) -> int:
        high = min(self.rules.max_ways_upper_bound, len(self.class_ids))
        return int(self.rng.randint(low=self.rules.min_ways, high=high + 1))

    @staticmethod
    def num_query(images_per_class: np.ndarray, max_num_query: int) -> int:
        return int(min(max_num_query, (images_per_class // 2).min()))

    def support_set_size(self, remaining: np.ndarray) -> tuple[int, float]:
        beta = float(self.rng.uniform())
        contributions = np.minimum(self.rules.max_support_size_contrib_per_class, remaining)
        return int(min(np.floor(beta * contributions + 1).sum(), self.rules.max_support_set_size)), beta

    def support_per_class(self, images_per_class: np.ndarray, remaining: np.ndarray,
                          size: int) -> tuple[np.ndarray, np.ndarray]:
        log_w = self.rng.uniform(self.rules.min_log_weight, self.rules.max_log_weight, size=images_per_class.shape)
        proportions = images_per_class * np.exp(log_w)
        proportions = proportions / proportions.sum()
        desired = np.floor(proportions * (size - len(remaining))).astype(np.int64) + 1
        return np.minimum(desired, remaining), log_w

    def sample(self) -> Episode:
        ways = self.sample_ways()
        classes = self.rng.choice(self.class_ids, ways, replace=False)
        images_per_class = np.array([len(self.by_class[int(c)]) for c in classes])
        q = self.num_query(images_per_class, self.rules.max_num_query)
        remaining = images_per_class - q
        size, beta = self.support_set_size(remaining)
        shots, log_w = self.support_per_class(images_per_class, remaining, size)
        support, support_labels, query, query_labels = [], [], [], []
        for label, (c, k) in enumerate(zip(classes, shots)):
            order = self.rng.permutation(self.by_class[int(c)])
            support.append(order[:k])
            query.append(order[k:k + q])
            support_labels.append(np.full(k, label))
            query_labels.append(np.full(q, label))

        def cat(parts: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(parts).astype(np.int64))

        return Episode(classes=torch.from_numpy(classes.astype(np.int64)), support=cat(support),
                       support_labels=cat(support_labels), query=cat(query), query_labels=cat(query_labels),
                       num_support=torch.from_numpy(shots.astype(np.int64)), num_query=q, support_set_size=size,
                       beta=beta, log_weights=torch.from_numpy(log_w))
