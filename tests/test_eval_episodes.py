"""Meta-Dataset episode sampling (Triantafillou et al. 2020): every rule holds over many sampled
episodes on an unbalanced label set; the adapters and the evaluator."""

import math

import numpy as np
import pytest
import torch

from shortcutlens.eval.episode_sampler import EpisodeRules, EpisodeSampler
from shortcutlens.eval.episodes import EpisodesEvaluator, prototype_predict, ridge_predict


def unbalanced_labels(seed: int = 0) -> torch.Tensor:
    """70 classes with 1..400 examples (class 0 has one: never eligible), shuffled."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([[1], rng.integers(2, 25, size=30), rng.integers(25, 400, size=39)])
    labels = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(rng.permutation(labels))


def test_every_rule_holds_over_many_episodes():
    labels = unbalanced_labels()
    counts = torch.bincount(labels)
    rules = EpisodeRules()
    sampler = EpisodeSampler(labels, rules=rules, seed=3)
    eligible = int((counts >= 2).sum())
    ways_seen = []
    for _ in range(400):
        ep = sampler.sample()
        w = ep.ways
        ways_seen.append(w)
        n = counts[ep.classes]
        # ways: uniform in [5, min(50, classes)], distinct classes with at least two examples
        assert rules.min_ways <= w <= min(rules.max_ways_upper_bound, eligible)
        assert len(set(ep.classes.tolist())) == w and bool((n >= 2).all())
        # query: min(10, floor(smallest class / 2)) for every class
        q = min(rules.max_num_query, int((n // 2).min()))
        assert ep.num_query == q
        assert torch.equal(torch.bincount(ep.query_labels, minlength=w), torch.full((w,), q))
        # support size: min(500, sum ceil(beta * min(100, n - q))), beta in (0, 1]
        remaining = n - q
        assert 0.0 <= ep.beta < 1.0
        expected = min(rules.max_support_set_size,
                       int(np.floor(ep.beta * np.minimum(100, remaining.numpy()) + 1).sum()))
        assert ep.support_set_size == expected
        # shares: floor(p_c (S - W)) + 1 capped by what is left, p_c ∝ n_c exp(α_c), α_c in [log ½, log 2]
        assert bool((ep.log_weights >= math.log(0.5)).all() and (ep.log_weights <= math.log(2.0)).all())
        p = n.double() * ep.log_weights.exp()
        p = p / p.sum()
        shares = torch.minimum(torch.floor(p * (ep.support_set_size - w)).long() + 1, remaining)
        assert torch.equal(ep.num_support, shares)
        assert torch.equal(torch.bincount(ep.support_labels, minlength=w), ep.num_support)
        assert bool((ep.num_support >= 1).all()) and w <= ep.support.numel() <= min(500, ep.support_set_size)
        # support and query are disjoint and carry the right classes
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        assert torch.equal(labels[ep.support], ep.classes[ep.support_labels])
        assert torch.equal(labels[ep.query], ep.classes[ep.query_labels])
    # uniform ways: both ends are reached and the mean sits in the middle
    assert min(ways_seen) == 5 and max(ways_seen) == 50
    assert abs(np.mean(ways_seen) - 27.5) < 2.5


def test_small_classes_and_few_classes():
    labels = torch.tensor([0] * 3 + [1] * 7 + [2] * 40 + [3] * 40 + [4] * 40 + [5] * 1)
    ep = EpisodeSampler(labels, seed=0).sample()
    assert ep.ways == 5 and 5 not in ep.classes.tolist()  # the 1-example class is never drawn
    assert ep.num_query == 1  # floor(3 / 2)
    with pytest.raises(ValueError, match="min_ways=5"):
        EpisodeSampler(torch.arange(4).repeat(10))
    assert EpisodeSampler(torch.arange(4).repeat(10), rules=EpisodeRules(min_ways=2)).sample().ways in (2, 3, 4)


def test_seeded_sequence_is_reproducible():
    labels = unbalanced_labels(1)
    s1, s2, s3 = EpisodeSampler(labels, seed=5), EpisodeSampler(labels, seed=5), EpisodeSampler(labels, seed=6)
    for _ in range(5):
        e1, e2 = s1.sample(), s2.sample()
        assert torch.equal(e1.support, e2.support) and torch.equal(e1.query, e2.query)
    assert not torch.equal(s1.sample().support, s3.sample().support)


def test_adapters_on_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 5
    sy, qy = torch.arange(25) % 5, torch.arange(50) % 5
    sx, qx = centres[sy] + torch.randn(25, 16, generator=g), centres[qy] + torch.randn(50, 16, generator=g)
    assert torch.equal(prototype_predict(sx, sy, qx, 5), qy)
    assert torch.equal(ridge_predict(sx, sy, qx, 5, l2=1.0), qy)


def test_evaluator_with_all_adapters_leaves_the_backbone_untouched():
    from shortcutlens import create_backbone, create_dataset
    from shortcutlens.eval import FeatureSource

    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=6, num_train=60, num_test=90)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    source = FeatureSource(backbone=backbone, data=data, batch_size=64)
    ev = EpisodesEvaluator(episodes=12, layers=["pooled", 1], adapters=["prototype", "ridge", "finetune"],
                           finetune_episodes=2, finetune_steps=3, finetune_batch_size=16)
    metrics = dict(ev.run(source))
    for adapter in ("prototype", "ridge"):
        for layer in ("pooled", "layer1"):
            assert 0.0 <= metrics[f"episodes/{adapter}/raw/{layer}/acc"] <= 1.0
            assert metrics[f"episodes/{adapter}/raw/{layer}/ci95"] >= 0.0
    assert 0.0 <= metrics["episodes/finetune/raw/acc"] <= 1.0 and metrics["episodes/finetune/raw/episodes"] == 2
    assert 5 <= metrics["episodes/ways_mean"] <= 6
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    with pytest.raises(ValueError, match="Valid adapters"):
        dict(EpisodesEvaluator(adapters=["maml"]).run(source))
