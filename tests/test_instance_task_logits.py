"""The instance tasks' task logits: what lets the targeted lens objectives (random_wrong, least_likely)
play against exemplar and contrastive — checked against hand-built similarities."""

import pytest
import torch

from pretexts import create_pretext
from shortcutlens.adversary import check_mode, create_objective


def test_contrastive_logits_are_cross_view_similarities_with_the_partner_as_target():
    torch.manual_seed(0)
    pretext = create_pretext("contrastive", num_features=8, temperature=0.5)
    features = torch.randn(6, 8)                       # 3 images x 2 views: [0, 1, 2, 0, 1, 2]
    targets = torch.arange(3).repeat(2)
    logits = pretext.task_logits(features, targets)
    z = torch.nn.functional.normalize(pretext.head(features), dim=-1)
    assert logits.shape == (6, 3)
    for i in range(6):
        other = z[3:] if i < 3 else z[:3]              # the other half, image j at row j
        for j in range(3):
            assert logits[i, j].item() == pytest.approx((z[i] @ other[j]).item() / 0.5, abs=1e-5)
    # a view's own column is its partner: a perfectly trained head puts the maximum there
    aligned = torch.cat([torch.eye(8)[:3], torch.eye(8)[:3]]) * 10
    pretext.head = torch.nn.Identity()
    assert torch.equal(pretext.task_logits(aligned, targets).argmax(1), targets)


def test_exemplar_logits_average_the_other_copies_and_leave_the_copy_itself_out():
    torch.manual_seed(0)
    pretext = create_pretext("exemplar", num_features=8, copies=3, embed_dim=8)
    features = torch.randn(6, 8)                       # 2 images x 3 copies: [0, 0, 0, 1, 1, 1]
    targets = torch.arange(2).repeat_interleave(3)
    logits = pretext.task_logits(features, targets)
    z = torch.nn.functional.normalize(pretext.head(features), dim=-1)
    assert logits.shape == (6, 2)
    own = ((z[0] @ z[1]) + (z[0] @ z[2])) / 2 / pretext.temperature
    other = (z[0] @ z[3:].T).mean() / pretext.temperature
    assert logits[0, 0].item() == pytest.approx(own.item(), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(other.item(), abs=1e-5)


@pytest.mark.parametrize("name", ["exemplar", "contrastive"])
def test_targeted_objectives_accept_the_instance_tasks_and_auto_stays_full(name):
    assert check_mode(mode="auto", pretext=name) == "full"
    assert check_mode(mode="random_wrong", pretext=name) == "random_wrong"
    pretext = create_pretext(name, num_features=8)
    objective = create_objective("random_wrong", pretext=pretext)
    torch.manual_seed(0)
    features = torch.randn(8, 8, requires_grad=True)
    targets = torch.arange(4).repeat(2) if name == "contrastive" else torch.arange(4).repeat_interleave(2)
    loss = objective.lens_loss(pretext, features, targets)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and features.grad.abs().sum() > 0


def test_a_pretext_without_task_logits_still_refuses_targeted_modes():
    class NoLogits:
        classification = False

    with pytest.raises(ValueError, match="needs a classification pretext"):
        check_mode(mode="random_wrong", pretext=NoLogits)
