"""Contrastive (SimCLR): NT-Xent equals the paper's formula, and two gloo ranks gathering negatives
with gradients give the loss and gradients of one process on the concatenated batch."""

import datetime

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

from pretexts import create_pretext

WORLD, IMAGES_PER_RANK, IN_DIM, FEATURES = 2, 3, 5, 6


def nt_xent_reference(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR Eq. (1) with a loop: ℓ_i = −log(exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ)), mean over i."""
    z = z / z.norm(dim=1, keepdim=True)
    s = z @ z.T / temperature
    losses = []
    for i in range(len(labels)):
        (j,) = [k for k in range(len(labels)) if k != i and labels[k] == labels[i]]
        others = torch.cat([s[i, :i], s[i, i + 1 :]])
        losses.append(-s[i, j] + torch.logsumexp(others, dim=0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_matches_the_paper_formula(temperature):
    torch.manual_seed(0)
    task = create_pretext("contrastive", num_features=8, proj_dim=4, temperature=temperature)
    features = torch.randn(10, 8)
    targets = torch.arange(5).repeat(2)
    loss, metrics = task.loss(features, targets)
    torch.testing.assert_close(loss, nt_xent_reference(task.head(features), targets, temperature), rtol=1e-5, atol=1e-6)
    assert 0 <= metrics["acc"].item() <= 1


def test_accuracy_counts_views_whose_nearest_view_is_their_partner():
    task = create_pretext("contrastive", num_features=2, proj_dim=2)
    with torch.no_grad():  # make the head the identity
        task.head[0].weight.copy_(torch.eye(2)), task.head[0].bias.zero_()
        task.head[2].weight.copy_(torch.eye(2)), task.head[2].bias.zero_()
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.5, 0.5]])  # pairs (0, 2), (1, 3)
    _, metrics = task.loss(features, torch.tensor([0, 1, 0, 1]))
    # Views 0 and 2 find each other, view 1 finds view 3, but view 3 is nearer view 2 than view 1.
    assert metrics["acc"].item() == pytest.approx(0.75)


@pytest.mark.parametrize("channels", [1, 3])
def test_two_views_per_image_share_a_label_and_differ(channels):
    torch.manual_seed(0)
    task = create_pretext("contrastive", num_features=8)
    inputs, targets = task.views(torch.rand(4, channels, 16, 16))
    assert inputs.shape == (8, channels, 16, 16) and targets.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    for i in range(4):
        assert not torch.allclose(inputs[i], inputs[i + 4], atol=1e-3)


def _setup() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """Identical on every process: a pretext, a linear stand-in backbone, and all ranks' inputs
    ``(WORLD, 2·IMAGES_PER_RANK, IN_DIM)`` (each rank's rows laid out as ``views`` lays them out)."""
    torch.manual_seed(0)
    task = create_pretext("contrastive", num_features=FEATURES, proj_dim=4, temperature=0.5)
    trunk = nn.Linear(IN_DIM, FEATURES)
    x = torch.randn(WORLD, 2 * IMAGES_PER_RANK, IN_DIM)
    return task, trunk, x


def _single_process_reference() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One process on the concatenated batch: the views of rank r's images get ids r·B .. r·B + B − 1."""
    task, trunk, x = _setup()
    task.gather_distributed = False  # also inside the workers, where the process group is up
    x = x.reshape(-1, IN_DIM).requires_grad_()
    local = torch.arange(IMAGES_PER_RANK).repeat(2)
    targets = torch.cat([local + r * IMAGES_PER_RANK for r in range(WORLD)])
    loss, _ = task.loss(trunk(x), targets)
    loss.backward()
    params = list(trunk.parameters()) + list(task.parameters())
    return loss.detach(), [p.grad.clone() for p in params], x.grad.reshape(WORLD, 2 * IMAGES_PER_RANK, IN_DIM)


def _rank_worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)  # before any op: a forked child must not reuse the parent's thread pool
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                                  timeout=datetime.timedelta(seconds=60))
    try:
        want_loss, want_grads, want_x_grad = _single_process_reference()  # computed without gathering

        task, trunk, x = _setup()
        x_local = x[rank].clone().requires_grad_()
        loss, _ = task.loss(trunk(x_local), torch.arange(IMAGES_PER_RANK).repeat(2))
        loss.backward()
        # What DDP does with parameter gradients (and the loop with the logged loss): average over ranks.
        mean_loss = loss.detach().clone()
        torch_dist.all_reduce(mean_loss)
        torch.testing.assert_close(mean_loss / WORLD, want_loss, rtol=1e-5, atol=1e-6)
        params = list(trunk.parameters()) + list(task.parameters())
        for p, want in zip(params, want_grads):
            g = p.grad.clone()
            torch_dist.all_reduce(g)
            torch.testing.assert_close(g / WORLD, want, rtol=1e-4, atol=1e-6)
        # Per-sample gradients reach this rank's own inputs through the gather's backward.
        torch.testing.assert_close(x_local.grad / WORLD, want_x_grad[rank], rtol=1e-4, atol=1e-6)
        assert want_x_grad[1 - rank].abs().sum() > 0  # the other rank's views matter to this rank's loss

        # Evaluation (no_grad) gathers nothing, so rank 0 alone can run it without the other rank.
        torch_dist.barrier()
        if rank == 0:
            with torch.no_grad():
                alone, _ = task.loss(trunk(x[0]), torch.arange(IMAGES_PER_RANK).repeat(2))
            task.gather_distributed = False
            local, _ = task.loss(trunk(x[0]), torch.arange(IMAGES_PER_RANK).repeat(2))
            torch.testing.assert_close(alone, local.detach())
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    # fork: the ranks inherit this process's imports (spawn re-imports torch, kornia, scipy: ~10 s each
    # on a busy 2-core machine); spawn where fork does not exist.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_rank_worker, args=(str(tmp_path / "pg_init"),), nprocs=WORLD, join=True, start_method=method)


def test_single_process_reference_is_not_trivial():
    loss, grads, x_grad = _single_process_reference()
    assert torch.isfinite(loss) and all(g.abs().sum() > 0 for g in grads) and x_grad.abs().sum() > 0
