"""The ``finetune`` episode adapter: fine-tune the whole backbone and a fresh head on a support set.

Dumoulin et al., "Comparing Transfer and Meta Learning Approaches on a Unified Few-Shot Classification
Benchmark", NeurIPS 2021: the transfer learners that won (BiT) adapt to each episode by fine-tuning
every weight plus a new linear head for a fixed, small number of steps, with one hyperparameter setting
for all episodes. Here: a zero-initialised head (BiT's choice, so the first steps only move the head's
logits), SGD with momentum 0.9, a constant learning rate, mini-batches drawn from the support set with
a seeded generator, and normalisation statistics frozen (the backbone runs in eval mode: a 5-image
support set cannot estimate BatchNorm statistics). The lens, when used, stays frozen in front.

Shapes: support images ``(S, C, H, W)`` float in [0, 1] on the device, labels ``(S,)`` in ``[0, W)``;
query images ``(Q, C, H, W)``. The caller's backbone is never modified: a working copy is reloaded
from the pristine weights for every episode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


class FineTuner:
    """Args:
    backbone: the frozen backbone to start every episode from (not modified).
    lens: optional frozen lens applied in front (``which="lensed"``).
    steps: optimisation steps per episode; lr: SGD learning rate (body and head);
    batch_size: support examples per step (all of them when the support set is smaller);
    weight_decay: L2 on every weight; amp: bfloat16 autocast on CUDA.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        lens: nn.Module | None = None,
        steps: int = 50,
        lr: float = 0.01,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        amp: bool = False,
    ) -> None:
        if steps < 0:
            raise ValueError(f"finetune steps must be non-negative, got {steps}")
        self.pristine = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        self.work = copy.deepcopy(backbone)
        self.lens = lens
        self.steps, self.lr, self.batch_size, self.weight_decay, self.amp = steps, lr, batch_size, weight_decay, amp
        self.num_features = int(backbone.num_features)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.lens is not None:
            with torch.no_grad():
                x = self.lens(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.work(x).float()

    def episode_accuracy(
        self,
        support: torch.Tensor,
        support_labels: torch.Tensor,
        query: torch.Tensor,
        query_labels: torch.Tensor,
        *,
        ways: int,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> float:
        """Fine-tune on the support set, return top-1 on the query set."""
        device = support.device
        self.work.load_state_dict(self.pristine)
        self.work.eval()  # frozen normalisation statistics; gradients still flow
        head = nn.Linear(self.num_features, ways).to(device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        for p in self.work.parameters():
            p.requires_grad_(True)
        params = list(self.work.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        if transform is not None:
            support, query = transform(support), transform(query)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = support.shape[0]
        with torch.enable_grad():
            for _ in range(self.steps):
                idx = torch.randperm(n, generator=gen)[: self.batch_size].to(device) if n > self.batch_size else None
                x = support if idx is None else support[idx]
                y = support_labels if idx is None else support_labels[idx]
                loss = nn.functional.cross_entropy(head(self._features(x)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            correct = 0
            for xq, yq in zip(query.split(256), query_labels.split(256)):
                correct += (head(self._features(xq)).argmax(1) == yq).sum().item()
        return correct / max(1, query.shape[0])
