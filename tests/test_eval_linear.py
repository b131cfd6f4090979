"""Linear probe: 100% on separable data, the validation-best L2 is the one chosen, the training loop's
signatures still work, the whitened solver reaches sklearn's optimum, and one result per tapped layer."""

import torch

from shortcutlens.eval.linear import (
    LinearEvaluator,
    LogisticProblem,
    ProbeResult,
    accuracy,
    fit_logistic,
    linear_probe,
    standardise,
)


def blobs(n: int, d: int, classes: int, *, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 4
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_separable_data_reaches_100_percent():
    xtr, ytr = blobs(300, 16, 5, spread=0.3, seed=0)
    xte, yte = blobs(200, 16, 5, spread=0.3, seed=1)
    result = linear_probe(xtr, ytr, xte, yte, num_classes=5, l2=1e-4)
    assert isinstance(result, ProbeResult)
    assert result.accuracy == 1.0 and result.train_accuracy == 1.0


def test_picks_the_validation_best_l2():
    # Few noisy examples in many dimensions: the regulariser matters, so validation accuracies differ.
    xtr, ytr = blobs(60, 200, 3, spread=9.0, seed=2)
    xva, yva = blobs(200, 200, 3, spread=9.0, seed=3)
    xte, yte = blobs(200, 200, 3, spread=9.0, seed=4)
    grid = [1e-5, 1e-2, 1.0, 30.0]
    result = linear_probe(xtr, ytr, xte, yte, num_classes=3, l2=grid, val_x=xva, val_y=yva, max_iter=300)
    # An independent choice: cold-started float64 fits, one per value.
    tr, va = standardise(xtr, xva)
    independent = {v: accuracy(fit_logistic(tr, ytr, num_classes=3, l2=v, max_iter=500), va, yva) for v in grid}
    assert len(set(independent.values())) > 1
    best = max(grid, key=lambda v: (independent[v], v))
    assert result.l2 == best
    for v in grid:
        assert abs(result.val_accuracies[v] - independent[v]) <= 1.5 / len(yva)


def test_whitened_solver_matches_sklearn_optimum():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(400, 12, 4, spread=3.0, seed=5)
    x = x @ torch.randn(12, 12, generator=torch.Generator().manual_seed(1))  # correlated features
    (xs,) = standardise(x)
    l2 = 1e-2
    ours = LogisticProblem(xs, y, num_classes=4, dtype=torch.float64).fit(l2, max_iter=500, tolerance_grad=1e-10)
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(xs.double().numpy(), y.numpy())
    # sklearn's multinomial weights are defined up to a shift shared by all classes: compare centred.
    w_ref = torch.from_numpy(ref.coef_).float()
    torch.testing.assert_close(ours.weight - ours.weight.mean(0), w_ref - w_ref.mean(0), atol=2e-3, rtol=2e-3)


def test_evaluator_one_result_per_tapped_layer_and_settings_recorded():
    from shortcutlens import create_backbone, create_dataset
    from shortcutlens.eval import FeatureSource

    torch.manual_seed(0)
    data = create_dataset("synthetic", num_classes=4, num_train=160, num_test=48)
    backbone = create_backbone("resnet", depth=18, width=0.125, in_chans=1, img_size=16)
    source = FeatureSource(backbone=backbone, data=data, batch_size=64)
    ev = LinearEvaluator(layers=["pooled", 1, -1], l2_grid=[1e-3, 1e-1], max_iter=60)
    metrics = dict(ev.run(source))
    tops = sorted(k for k in metrics if k.endswith("/top1") and "val" not in k and "train" not in k)
    assert tops == ["linear/raw/layer1/top1", "linear/raw/layer4/top1", "linear/raw/pooled/top1"]
    for layer in ("pooled", "layer1", "layer4"):
        assert metrics[f"linear/raw/{layer}/l2"] in (1e-3, 1e-1)
    settings = ev.settings()
    assert settings["layers"] == ["pooled", 1, -1] and settings["l2_grid"] == [1e-3, 1e-1]
    assert settings["val_fraction"] == 0.2 and settings["precision"] == "float32"
