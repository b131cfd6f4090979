"""Few-shot ridge (big_vision's closed form): weights against an independent least-squares solve, the
N ≥ D and D > N branches against each other, the support draw, and the evaluator's outputs."""

import pytest
import torch

from shortcutlens.eval.fewshot import FewShotEvaluator, fewshot_accuracies, support_indices
from shortcutlens.eval.ridge import BIAS_CONSTANT, solve_ridge


def reference_weights(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> torch.Tensor:
    """Ridge as an ordinary least-squares problem on the augmented system [X; √λ I] W = [Y; 0]."""
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False) + 1e-5
    xs = torch.cat([(x - mean) / std, torch.full((x.shape[0], 1), BIAS_CONSTANT, dtype=torch.float64)], 1)
    targets = 2.0 * torch.nn.functional.one_hot(y, num_classes).double() - 1.0
    d = xs.shape[1]
    a = torch.cat([xs, l2**0.5 * torch.eye(d, dtype=torch.float64)])
    b = torch.cat([targets, torch.zeros(d, num_classes, dtype=torch.float64)])
    return torch.linalg.lstsq(a, b).solution


@pytest.mark.parametrize("n,d", [(200, 20), (15, 60)])
@pytest.mark.parametrize("l2", [1.0, 1024.0])
def test_weights_equal_least_squares(n, d, l2):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g) * 3 + 5
    y = torch.arange(n) % 5
    solution = solve_ridge(x, y, num_classes=5)
    assert solution.branch == ("xtx" if n >= d + 1 else "xxt")
    torch.testing.assert_close(solution.weights(l2), reference_weights(x, y, 5, l2), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n,d", [(120, 30), (20, 50)])
def test_branches_agree(n, d):
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)
    a = solve_ridge(x, y, num_classes=4, branch="xtx")
    b = solve_ridge(x, y, num_classes=4, branch="xxt")
    for l2 in (0.5, 1024.0):
        torch.testing.assert_close(a.weights(l2), b.weights(l2), rtol=1e-6, atol=1e-9)


def test_scores_fold_standardisation():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 8, generator=g) + 10, torch.arange(40) % 4
    query = torch.randn(25, 8, generator=g) + 10
    solution = solve_ridge(x, y, num_classes=4)
    w = solution.weights(16.0)
    xs = torch.cat([(query.double() - solution.mean) / solution.std, torch.full((25, 1), BIAS_CONSTANT).double()], 1)
    expected = xs @ w
    torch.testing.assert_close(solution.scores(query.double(), 16.0), expected)
    shift = query.mean(0)
    torch.testing.assert_close(solution.scores((query - shift).double(), 16.0, shift=shift.double()), expected)


def test_support_draw_is_nested_seeded_and_per_class():
    labels = torch.arange(300) % 10
    a = support_indices(labels, shots=[1, 5, 25], seed=0, num_classes=10)
    b = support_indices(labels, shots=[1, 5, 25], seed=0, num_classes=10)
    c = support_indices(labels, shots=[1, 5, 25], seed=1, num_classes=10)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[5], c[5])
    for k, idx in a.items():
        assert torch.bincount(labels[idx], minlength=10).tolist() == [k] * 10
    assert set(a[1].tolist()) <= set(a[5].tolist()) <= set(a[25].tolist())


def test_fewshot_accuracies_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=g) * 10
    ytr, yte = torch.arange(1000) % 10, torch.arange(200) % 10
    xtr = centres[ytr] + torch.randn(1000, 32, generator=g)
    xte = centres[yte] + torch.randn(200, 32, generator=g)
    accs = fewshot_accuracies(xtr, ytr, xte, yte, num_classes=10, shots=[1, 5, 10, 25], seeds=[0, 1, 2])
    assert set(accs) == {(k, 1024.0) for k in (1, 5, 10, 25)}
    assert all(len(v) == 3 for v in accs.values())
    assert min(accs[(25, 1024.0)]) == 1.0


def test_evaluator_yields_mean_and_std_per_layer_and_shot():
    from shortcutlens import create_backbone, create_dataset
    from shortcutlens.eval import FeatureSource

    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=4, num_train=120, num_test=40)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    source = FeatureSource(backbone=backbone, data=data, batch_size=64)
    metrics = dict(FewShotEvaluator(layers=["pooled", 1], shots=[1, 5], seeds=2).run(source))
    for layer in ("pooled", "layer1"):
        for k in (1, 5):
            assert 0.0 <= metrics[f"fewshot/raw/{layer}/{k}shot"] <= 1.0
            assert metrics[f"fewshot/raw/{layer}/{k}shot_std"] >= 0.0
    assert len(metrics) == 2 * 2 * 2
