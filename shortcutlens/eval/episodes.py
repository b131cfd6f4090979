"""``episodes``: Meta-Dataset-style variable-way, variable-shot episodes with three adapters.

Dumoulin et al., "Comparing Transfer and Meta Learning Approaches on a Unified Few-Shot Classification
Benchmark", NeurIPS 2021 (the MD half of VTAB+MD), with episodes sampled by the rules of Triantafillou
et al., ICLR 2020 (``shortcutlens.eval.episode_sampler``): 600 episodes by default, accuracy reported
as the mean over episodes with a 95% confidence interval (1.96·std/√episodes).

Adapters (the same episodes for every adapter and layer, so they can be compared pairwise):

- ``prototype``: nearest centroid by cosine similarity on frozen features (Prototypical Networks,
  Snell et al. 2017, with the cosine of Chen et al. 2019's Baseline++);
- ``ridge``: big_vision's closed-form ridge to ±1 targets (``shortcutlens.eval.ridge``) per episode;
- ``finetune``: the whole backbone plus a fresh head fine-tuned on each support set for a fixed small
  number of steps (``shortcutlens.eval.finetune``); images, not cached features, so it is slow on a
  CPU: ``finetune_episodes`` caps how many of the episodes it runs.

Shapes: pool features ``(N, D)``; an episode's support ``(S, D)`` with ``S ≤ 500``, query ``(W·q, D)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shortcutlens.data.loader import to_float
from shortcutlens.eval.base import EVALUATORS, FeatureEvaluator, ci95, metric_name, threads_for
from shortcutlens.eval.episode_sampler import Episode, EpisodeRules, EpisodeSampler
from shortcutlens.eval.ridge import DEFAULT_L2, solve_ridge
from shortcutlens.eval.source import FeatureSource

ADAPTERS = ("prototype", "ridge", "finetune")


def prototype_predict(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Cosine nearest centroid: centroids of L2-normalised support features ``(W, D)``; returns ``(Q,)``."""
    s = F.normalize(support.float(), dim=1)
    centroids = torch.zeros(ways, s.shape[1], dtype=s.dtype).index_add_(0, support_labels, s)
    return (F.normalize(query.float(), dim=1) @ F.normalize(centroids, dim=1).T).argmax(1)


def ridge_predict(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int,
                  l2: float = DEFAULT_L2) -> torch.Tensor:
    return solve_ridge(support, support_labels, num_classes=ways).scores(query.float(), l2).argmax(1)


@EVALUATORS.register("episodes")
@dataclass(kw_only=True)
class EpisodesEvaluator(FeatureEvaluator):
    """Episodic few-shot accuracy with 95% confidence intervals.

    Args:
        layers, which: taps and feature sources for the frozen adapters (see ``linear``).
        episodes: how many episodes (Meta-Dataset evaluates 600).
        adapters: any of ``prototype``, ``ridge``, ``finetune``.
        split: the pool episodes are drawn from (support and query are disjoint within an episode).
        min_ways, max_ways, max_query, max_support, max_support_per_class: Meta-Dataset's rules
            (5, 50, 10, 500, 100).
        ridge_l2: λ of the ridge adapter.
        finetune_episodes: run ``finetune`` on the first this-many episodes (None: all).
        finetune_steps, finetune_lr, finetune_batch_size: its fixed schedule.
    Yields ``episodes/<adapter>/<which>/<layer>/acc`` and ``.../ci95`` (``finetune`` has no layer), plus
    ``episodes/ways_mean`` and ``episodes/support_mean``.
    """

    name = "episodes"
    episodes: int = 600
    adapters: list = field(default_factory=lambda: ["prototype", "ridge"])
    split: str = "test"
    min_ways: int = 5
    max_ways: int = 50
    max_query: int = 10
    max_support: int = 500
    max_support_per_class: int = 100
    ridge_l2: float = DEFAULT_L2
    finetune_episodes: int | None = 50
    finetune_steps: int = 50
    finetune_lr: float = 0.01
    finetune_batch_size: int = 64

    def rules(self) -> EpisodeRules:
        return EpisodeRules(min_ways=self.min_ways, max_ways_upper_bound=self.max_ways, max_num_query=self.max_query,
                            max_support_set_size=self.max_support,
                            max_support_size_contrib_per_class=self.max_support_per_class)

    def sample(self, labels: torch.Tensor, seed: int) -> list[Episode]:
        sampler = EpisodeSampler(labels, rules=self.rules(), seed=seed)
        return [sampler.sample() for _ in range(self.episodes)]

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        unknown = [a for a in self.adapters if a not in ADAPTERS]
        if unknown:
            raise ValueError(f"Unknown episode adapter '{unknown[0]}'. Valid adapters: {', '.join(ADAPTERS)}")
        pool = source.split(self.split)
        episodes = self.sample(pool.labels, seed=source.seed)
        yield metric_name(self.name, "ways_mean"), sum(e.ways for e in episodes) / len(episodes)
        yield metric_name(self.name, "support_mean"), sum(e.support.numel() for e in episodes) / len(episodes)
        frozen = [a for a in self.adapters if a != "finetune"]
        for which in self.feature_sources():
            if not frozen:
                break
            feats, _ = source.features(self.split, layers=self.layers, which=which)
            for layer, x in feats.items():
                accs: dict[str, list[float]] = {a: [] for a in frozen}
                bar = tqdm(episodes, desc=f"episodes [{which}, {layer}]", disable=not source.progress, leave=False)
                with threads_for(self.max_support * x.shape[1] * x.shape[1]):
                    for ep in bar:
                        sx, qx = x[ep.support], x[ep.query]
                        for adapter in frozen:
                            if adapter == "prototype":
                                pred = prototype_predict(sx, ep.support_labels, qx, ep.ways)
                            else:
                                pred = ridge_predict(sx, ep.support_labels, qx, ep.ways, self.ridge_l2)
                            accs[adapter].append((pred == ep.query_labels).float().mean().item())
                for adapter, values in accs.items():
                    mean, half = ci95(values)
                    yield metric_name(self.name, adapter, which, layer, "acc"), mean
                    yield metric_name(self.name, adapter, which, layer, "ci95"), half
        if "finetune" in self.adapters:
            yield from self.run_finetune(source, pool, episodes)

    def run_finetune(self, source: FeatureSource, pool, episodes: list[Episode]) -> Iterator[tuple[str, float]]:
        from shortcutlens.eval.finetune import FineTuner

        whiches = self.feature_sources()
        count = len(episodes) if self.finetune_episodes is None else min(self.finetune_episodes, len(episodes))
        for which in whiches:
            if which == "concat":
                continue  # one network is fine-tuned; concatenated raw+lensed features have no single input
            lens = source.lens if which == "lensed" else None
            if which == "lensed" and lens is None:
                raise ValueError("feature source 'lensed' needs a lens, and this run has none")
            tuner = FineTuner(source.backbone, lens=lens, steps=self.finetune_steps, lr=self.finetune_lr,
                              batch_size=self.finetune_batch_size, amp=source.amp)
            transform = source.view_transform("clean")
            values = []
            for i, ep in enumerate(tqdm(episodes[:count], desc=f"episodes [finetune, {which}]",
                                        disable=not source.progress, leave=False)):
                def load(index: torch.Tensor) -> torch.Tensor:
                    return to_float(pool.images[index].to(source.device))

                values.append(tuner.episode_accuracy(
                    load(ep.support), ep.support_labels.to(source.device), load(ep.query),
                    ep.query_labels.to(source.device), ways=ep.ways, seed=source.seed * 100_003 + i,
                    transform=transform))
            mean, half = ci95(values)
            yield metric_name(self.name, "finetune", which, "acc"), mean
            yield metric_name(self.name, "finetune", which, "ci95"), half
            yield metric_name(self.name, "finetune", which, "episodes"), float(count)

