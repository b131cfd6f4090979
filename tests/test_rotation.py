"""Rotation pretext: views rotate back to the input, target order, one-random-rotation mode, and the
adversarial targets the lens trains against."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretexts import Pretext, create_pretext
from pretexts.rotation import Rotation, rotate
from shortcutlens.adversary import OBJECTIVES, create_objective, least_likely_targets, random_wrong_targets


def lens_loss(task: Pretext, features: torch.Tensor, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """What the lens minimises under ``lens.mode=mode`` (the objective registry, validated for ``task``)."""
    return create_objective(mode, pretext=task).lens_loss(task, features, targets)


def test_all_rotations_rotate_back_to_the_input() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 2, 8, 8)
    task = create_pretext("rotation", num_features=16)
    inputs, targets = task.views(images)
    assert inputs.shape == (12, 2, 8, 8) and targets.dtype == torch.int64
    # Rotation-major order: all images at 0°, then all at 90°, 180°, 270°.
    assert targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in range(12):
        back = torch.rot90(inputs[i], -int(targets[i]), dims=(-2, -1))
        assert torch.equal(back, images[i % 3])
    # The four views of one image differ (the task is not trivial), and 180° is two 90° turns.
    assert not torch.equal(inputs[0], inputs[3])
    assert torch.equal(inputs[6], torch.rot90(inputs[3], 1, dims=(-2, -1)))


def test_rotation_is_counter_clockwise() -> None:
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = 1.0  # top-left pixel
    inputs, _ = Rotation(num_features=4).views(image)
    corners = [tuple(torch.nonzero(v[0]).flatten().tolist()) for v in inputs]
    # 90° counter-clockwise takes the top-left corner to the bottom-left, and so on around.
    assert corners == [(0, 0), (3, 0), (3, 3), (0, 3)]


def test_one_random_rotation_mode() -> None:
    torch.manual_seed(0)
    images = torch.rand(64, 1, 6, 6)
    task = Rotation(num_features=8, all_rotations=False)
    torch.manual_seed(1)
    inputs, targets = task.views(images)
    assert inputs.shape == images.shape and targets.shape == (64,)
    assert set(targets.tolist()) == {0, 1, 2, 3}
    for i in range(64):
        assert torch.equal(torch.rot90(inputs[i], -int(targets[i]), dims=(-2, -1)), images[i])
    torch.manual_seed(1)
    assert torch.equal(task.views(images)[1], targets)  # drawn from the (seeded) global RNG


def test_rotate_helper_matches_rot90() -> None:
    images = torch.rand(5, 3, 4, 4)
    k = torch.tensor([0, 1, 2, 3, 1])
    out = rotate(images, k)
    for i in range(5):
        assert torch.equal(out[i], torch.rot90(images[i], int(k[i]), dims=(-2, -1)))


def test_non_square_images_are_rejected() -> None:
    for task in (Rotation(num_features=4), Rotation(num_features=4, all_rotations=False)):
        with pytest.raises(ValueError, match=r"square images, got \(8, 6\)"):
            task.views(torch.rand(2, 1, 8, 6))


def test_loss_is_cross_entropy_of_the_head() -> None:
    torch.manual_seed(0)
    task = Rotation(num_features=8)
    features, targets = torch.randn(12, 8), torch.arange(4).repeat_interleave(3)
    loss, metrics = task.loss(features, targets)
    logits = task.head(features)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, targets))
    assert metrics["acc"].item() == pytest.approx((logits.argmax(1) == targets).float().mean().item())
    assert not metrics["loss"].requires_grad and not metrics["acc"].requires_grad


# ------------------------------------------------------------------------------ adversarial targets


@pytest.fixture
def scored() -> tuple[Rotation, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    task = Rotation(num_features=8)
    return task, torch.randn(32, 8), torch.randint(0, 4, (32,))


def test_full_is_the_negated_pretext_loss(scored) -> None:
    task, features, targets = scored
    torch.testing.assert_close(lens_loss(task, features, targets, "full"), -task.loss(features, targets)[0])


def test_least_likely_targets_the_argmin_class(scored) -> None:
    task, features, targets = scored
    logits = task.head(features)
    expected = logits.softmax(-1).argmin(-1)
    assert torch.equal(least_likely_targets(logits), expected)
    torch.testing.assert_close(lens_loss(task, features, targets, "least_likely"),
                               nn.functional.cross_entropy(logits, expected))
    # The target is a constant for the gradient: only the cross-entropy's path carries gradient.
    features.requires_grad_(True)
    lens_loss(task, features, targets, "least_likely").backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_random_wrong_never_picks_the_true_class(scored) -> None:
    task, features, targets = scored
    torch.manual_seed(0)
    draws = torch.stack([random_wrong_targets(targets, 4) for _ in range(200)])  # (200, 32)
    assert (draws != targets).all()
    assert ((draws >= 0) & (draws < 4)).all()
    # Uniform over the three wrong classes: each appears for every example.
    for i in range(32):
        assert set(draws[:, i].tolist()) == set(range(4)) - {int(targets[i])}
    torch.manual_seed(5)
    wrong = random_wrong_targets(targets, 4)
    torch.manual_seed(5)
    torch.testing.assert_close(lens_loss(task, features, targets, "random_wrong"),
                               nn.functional.cross_entropy(task.head(features), wrong))


class Regression(Pretext):
    """A non-classification task: predict a number."""

    classification = False

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 1)

    def loss(self, features, targets):
        loss = (self.head(features).squeeze(-1) - targets).pow(2).mean()
        return loss, {"loss": loss.detach()}


def test_classification_modes_on_a_non_classification_pretext_are_refused() -> None:
    task, features, targets = Regression(), torch.randn(4, 8), torch.randn(4)
    torch.testing.assert_close(lens_loss(task, features, targets, "full"), -task.loss(features, targets)[0])
    for mode in ("least_likely", "random_wrong", "entropy"):
        with pytest.raises(ValueError) as info:
            lens_loss(task, features, targets, mode)
        assert "needs a classification pretext" in str(info.value) and "Regression" in str(info.value)
        assert "lens.mode=full" in str(info.value)
    assert create_objective("auto", pretext=task).name == "full"


def test_unknown_lens_mode_lists_the_modes(scored) -> None:
    task, _, _ = scored
    assert set(OBJECTIVES.names()) >= {"full", "least_likely", "random_wrong", "entropy"}
    with pytest.raises(ValueError, match="Unknown lens mode 'most_likely'. Valid lens modes: auto, entropy, full, "
                                         "least_likely, random_wrong"):
        create_objective("most_likely", pretext=task)
    assert create_objective("auto", pretext=task).name == "random_wrong"


def test_hidden_head_is_fc_bn_relu_fc_and_linear_keeps_its_keys() -> None:
    linear = Rotation(num_features=8)
    assert list(linear.state_dict()) == ["head.weight", "head.bias"]  # old checkpoints still load
    task = Rotation(num_features=8, hidden_dim=16)
    layers = [type(m) for m in task.head]
    assert layers == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    # 8*16 + 16 (FC) + 2*16 (BN) + 16*4 + 4 (FC) parameters.
    assert sum(p.numel() for p in task.parameters()) == 8 * 16 + 16 + 2 * 16 + 16 * 4 + 4
    torch.manual_seed(0)
    features, targets = torch.randn(12, 8), torch.arange(4).repeat_interleave(3)
    loss, _ = task.loss(features, targets)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(task.head(features), targets))
    with pytest.raises(ValueError, match="hidden_dim must be >= 0"):
        Rotation(num_features=8, hidden_dim=-1)
