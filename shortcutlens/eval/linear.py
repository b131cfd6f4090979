"""Linear probe: multinomial logistic regression on standardised, frozen features.

The usual protocol of Kolesnikov, Zhai, Beyer (CVPR 2019): a linear classifier on frozen
pooled features. Fitted full-batch with L-BFGS in torch (deterministic; no sklearn dependency in
the hot path). Features are standardised with the training split's mean and std; the L2 strength
is either fixed or chosen on a validation split from a grid, then refit on train (+ val).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn


@dataclass
class ProbeResult:
    accuracy: float
    l2: float
    train_accuracy: float
    val_accuracies: dict[float, float] = field(default_factory=dict)


def standardise(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(eps)
    return [(t - mean) / std for t in (train, *others)]


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, *, num_classes: int, l2: float, max_iter: int = 200
) -> nn.Linear:
    """Minimise ``mean CE(Wx + b, y) + l2/2 · ||W||²`` with full-batch L-BFGS. ``x`` ``(N, D)`` float."""
    x, y = x.double(), y.long()
    model = nn.Linear(x.shape[1], num_classes).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 0.5 * l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return model.float()


@torch.no_grad()
def accuracy(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x.float()).argmax(1) == y).float().mean().item()


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    l2: float | Sequence[float] = 1e-4,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    max_iter: int = 200,
) -> ProbeResult:
    """Fit on standardised train features, report top-1 on test.

    With a sequence of ``l2`` values and a validation split, each is scored on val, the best is
    refit on train + val and evaluated on test.
    """
    grid = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    val_acc: dict[float, float] = {}
    best = grid[0]
    if len(grid) > 1:
        if val_x is None or val_y is None:
            raise ValueError("choosing l2 from a grid needs val_x and val_y")
        tr, va = standardise(train_x.float(), val_x.float())
        for value in grid:
            val_acc[value] = accuracy(fit_logistic(tr, train_y, num_classes=num_classes, l2=value, max_iter=max_iter), va, val_y)
        best = max(grid, key=lambda v: (val_acc[v], v))  # ties go to the stronger regulariser
        train_x, train_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    tr, te = standardise(train_x.float(), test_x.float())
    model = fit_logistic(tr, train_y, num_classes=num_classes, l2=best, max_iter=max_iter)
    return ProbeResult(accuracy=accuracy(model, te, test_y), l2=best, train_accuracy=accuracy(model, tr, train_y), val_accuracies=val_acc)
