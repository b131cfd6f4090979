"""Weighted cosine kNN (DINO): chunked scores equal a brute-force loop; the evaluator's metrics."""

import math

import pytest
import torch

from shortcutlens.eval.knn import KNNEvaluator, knn_scores, topk_accuracy


def brute_force(train_x, train_y, test_x, *, num_classes, k, temperature):
    out = torch.zeros(test_x.shape[0], num_classes, dtype=torch.float64)
    for i, q in enumerate(test_x.double()):
        sims = [(float(q @ t / (q.norm() * t.norm())), int(c)) for t, c in zip(train_x.double(), train_y)]
        sims.sort(key=lambda s: -s[0])
        for s, c in sims[:k]:
            out[i, c] += math.exp(s / temperature)
    return out


@pytest.mark.parametrize("k", [1, 5, 20])
def test_equals_brute_force(k):
    g = torch.Generator().manual_seed(k)
    train_x, train_y = torch.randn(90, 12, generator=g), torch.randint(0, 6, (90,), generator=g)
    test_x = torch.randn(23, 12, generator=g)
    fast = knn_scores(train_x, train_y, test_x, num_classes=6, k=k, temperature=0.07, chunk=7)
    slow = brute_force(train_x, train_y, test_x, num_classes=6, k=k, temperature=0.07)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-6)
    assert torch.equal(fast.argmax(1), slow.argmax(1))


def test_k_larger_than_bank_and_topk_accuracy():
    x, y = torch.eye(4), torch.arange(4)
    scores = knn_scores(x, y, x, num_classes=4, k=50)
    assert topk_accuracy(scores, y, 1) == 1.0
    assert topk_accuracy(torch.tensor([[0.1, 0.5, 0.4]]), torch.tensor([2]), 1) == 0.0
    assert topk_accuracy(torch.tensor([[0.1, 0.5, 0.4]]), torch.tensor([2]), 2) == 1.0


def test_evaluator_layers_and_top5():
    from shortcutlens import create_backbone, create_dataset
    from shortcutlens.eval import FeatureSource

    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=6, num_train=120, num_test=36)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    source = FeatureSource(backbone=backbone, data=data, batch_size=64)
    metrics = dict(KNNEvaluator(layers=["pooled", 2]).run(source))
    assert set(metrics) == {f"knn/raw/{layer}/{m}" for layer in ("pooled", "layer2") for m in ("top1", "top5")}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
