"""Exemplar: copies of one image share a label and differ in pixels; the semi-hard triplet loss equals
an independent computation; grayscale is drawn once per source image."""

import itertools

import pytest
import torch

from pretexts import create_pretext
from pretexts.exemplar import nearest_neighbour_accuracy


@pytest.mark.parametrize("channels", [1, 3])
def test_copies_of_an_image_share_a_label_and_differ_in_pixels(channels):
    torch.manual_seed(0)
    task = create_pretext("exemplar", num_features=8, copies=4)
    images = torch.rand(3, channels, 16, 16)
    inputs, targets = task.views(images)
    assert inputs.shape == (12, channels, 16, 16) and inputs.min() >= 0 and inputs.max() <= 1
    assert targets.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    for i in range(3):
        copies = inputs[targets == i]
        for a, b in itertools.combinations(range(4), 2):
            assert not torch.allclose(copies[a], copies[b], atol=1e-3), f"copies {a} and {b} of image {i} are equal"


def test_grayscale_is_drawn_once_per_source_image():
    torch.manual_seed(0)
    task = create_pretext("exemplar", num_features=8, copies=4, grayscale_probability=0.5, jitter_probability=0.0)
    inputs, _ = task.views(torch.rand(32, 3, 8, 8))
    gray = (inputs[:, 0] - inputs[:, 1]).abs().amax(dim=(1, 2)) < 1e-6
    per_image = gray.reshape(32, 4)
    assert torch.equal(per_image.all(dim=1), per_image.any(dim=1))  # all copies gray, or none
    assert 0 < per_image[:, 0].sum() < 32


def semihard_triplet_reference(z: torch.Tensor, labels: torch.Tensor, margin: float, squared: bool) -> tuple[float, int]:
    """Plain loops: L2-normalise, then every (a, p, n) with d(a,p) < d(a,n) <= d(a,p) + margin contributes
    d(a,p) − d(a,n) + margin; the loss is the mean over those (all positive)."""
    z = z / z.norm(dim=1, keepdim=True)
    losses = []
    n = len(labels)
    for a, p, q in itertools.product(range(n), repeat=3):
        if a == p or labels[a] != labels[p] or labels[q] == labels[a]:
            continue
        d_ap, d_an = (z[a] - z[p]).norm(), (z[a] - z[q]).norm()
        if squared:
            d_ap, d_an = d_ap**2, d_an**2
        if 0 < d_an - d_ap <= margin:
            losses.append(float(d_ap - d_an + margin))
    return sum(losses) / len(losses), len(losses)


@pytest.mark.parametrize("squared", [True, False])
def test_triplet_loss_matches_an_independent_semihard_computation(squared):
    torch.manual_seed(0)
    task = create_pretext("exemplar", num_features=6, copies=3, embed_dim=5, squared_distance=squared)
    features = torch.randn(12, 6)
    targets = torch.arange(4).repeat_interleave(3)
    loss, metrics = task.loss(features, targets)
    want, count = semihard_triplet_reference(task.head(features).detach(), targets, 0.5, squared)
    assert count > 0
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert metrics["triplets"].item() == count
    loss.backward()
    assert task.head.weight.grad.abs().sum() > 0


def test_nearest_neighbour_accuracy():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # Rows 0..3 find their partner; row 4's most similar row is row 1 (label 0): 4 of 5.
    assert nearest_neighbour_accuracy(z, labels).item() == pytest.approx(0.8)


def test_needs_two_copies():
    with pytest.raises(ValueError, match="at least 2 copies"):
        create_pretext("exemplar", num_features=8, copies=1)
