"""Linear probe: multinomial logistic regression on standardised frozen features."""

from __future__ import annotations

import pytest
import torch

from shortcutlens.eval.linear import fit_logistic, linear_probe, standardise


def blobs(n_per_class: list[int], dim: int = 12, *, spread: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around orthogonal class centres (linearly separable for a small spread)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n in enumerate(n_per_class):
        centre = torch.zeros(dim)
        centre[c] = 3.0
        xs.append(centre + spread * torch.randn(n, dim, generator=g))
        ys.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def test_separable_features_are_classified_perfectly() -> None:
    train_x, train_y = blobs([30, 30, 30, 30], seed=0)
    test_x, test_y = blobs([20, 20, 20, 20], seed=1)
    # Features on a wild scale and offset: the probe standardises with the training statistics.
    result = linear_probe(train_x * 1e4 + 5e5, train_y, test_x * 1e4 + 5e5, test_y, num_classes=4)
    assert result.accuracy == 1.0 and result.train_accuracy == 1.0
    assert result.l2 == 1e-4 and result.val_accuracies == {}


def test_xor_is_not_linearly_separable() -> None:
    # The probe is linear: XOR stays near chance, which a hidden layer would solve.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (400, 2), generator=g).float()
    y = (x[:, 0] != x[:, 1]).long()
    x = x + 0.05 * torch.randn(400, 2, generator=g)
    assert linear_probe(x, y, x, y, num_classes=2).accuracy < 0.8


def test_grid_picks_the_validation_best_l2() -> None:
    # Imbalanced classes: a huge L2 shrinks the weights to nothing and leaves the (unpenalised) bias,
    # which predicts the majority class everywhere; a small one separates the classes.
    train_x, train_y = blobs([60, 10, 10], seed=0)
    val_x, val_y = blobs([10, 10, 10], seed=1)
    test_x, test_y = blobs([10, 10, 10], seed=2)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=3, l2=[1e-3, 1e4],
                          val_x=val_x, val_y=val_y)
    assert result.val_accuracies[1e-3] == 1.0
    assert result.val_accuracies[1e4] == pytest.approx(1 / 3)
    assert result.l2 == 1e-3 and result.accuracy == 1.0


def test_ties_go_to_the_stronger_regulariser() -> None:
    train_x, train_y = blobs([20, 20], seed=0)
    val_x, val_y = blobs([10, 10], seed=1)
    result = linear_probe(train_x, train_y, val_x, val_y, num_classes=2, l2=[1e-4, 1e-2, 1e-3],
                          val_x=val_x, val_y=val_y)
    assert set(result.val_accuracies.values()) == {1.0}
    assert result.l2 == 1e-2


def test_grid_without_validation_split_is_an_error() -> None:
    x, y = blobs([5, 5])
    with pytest.raises(ValueError, match="needs val_x and val_y"):
        linear_probe(x, y, x, y, num_classes=2, l2=[1e-4, 1e-2])


def test_l2_shrinks_the_weights_and_the_fit_is_deterministic() -> None:
    x, y = blobs([15, 15, 15], seed=3)
    weak = fit_logistic(x, y, num_classes=3, l2=1e-3)
    strong = fit_logistic(x, y, num_classes=3, l2=1.0)
    assert strong.weight.norm() < 0.5 * weak.weight.norm()
    again = fit_logistic(x, y, num_classes=3, l2=1e-3)
    assert torch.equal(weak.weight, again.weight) and torch.equal(weak.bias, again.bias)


def test_standardise_uses_the_training_statistics() -> None:
    train = torch.tensor([[0.0, 10.0], [2.0, 10.0]])
    test = torch.tensor([[1.0, 11.0]])
    tr, te = standardise(train, test)
    torch.testing.assert_close(tr.mean(0), torch.zeros(2))
    assert te[0, 0].item() == pytest.approx(0.0)
    assert torch.isfinite(te).all()  # a constant feature (std 0) does not divide by zero
