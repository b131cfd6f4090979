"""Linear probe: multinomial logistic regression on standardised, frozen features.

The usual protocol of Kolesnikov, Zhai, Beyer (CVPR 2019): a linear classifier on frozen features,
here one per tapped layer. Fitted full-batch with L-BFGS in torch (deterministic; no sklearn in the
hot path). Features are standardised with the training split's mean and std. The L2 strength is
either fixed or chosen from a grid on a validation split carved from train, then the best value is
refit on all of train (train + val) and scored on test.

The objective is ``mean_i CE(W x_i + b, y_i) + l2/2 · ||W||²`` (the bias is not penalised), which is
scikit-learn's ``LogisticRegression(C=1 / (l2 · N))``. The grid is walked from the strongest to the
weakest regulariser, each fit warm-started from the previous solution (the problem is strictly convex,
so the start changes the cost, not the answer); this is what makes a grid cheap.

Shapes: ``x`` ``(N, D)`` float, ``y`` ``(N,)`` int64 in ``[0, num_classes)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from shortcutlens.data.base import Split, seeded_split
from shortcutlens.eval.base import EVALUATORS, FeatureEvaluator, carve_indices, eigh, metric_name, threads_for
from shortcutlens.eval.source import FeatureSource

log = logging.getLogger(__name__)

DEFAULT_L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class ProbeResult:
    accuracy: float
    l2: float
    train_accuracy: float
    val_accuracies: dict[float, float] = field(default_factory=dict)


def standardise(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(eps)
    return [(t - mean) / std for t in (train, *others)]


class LogisticProblem:
    """One training set, solved for many L2 strengths (warm starts share the set-up).

    L-BFGS converges slowly when features are correlated, so the problem is solved in whitened
    coordinates: with ``S = xᵀx/N`` and ``A = (S + δI)^(-1/2)``, the weights are ``W = V·A`` and the
    logits ``x Wᵀ = (x A) Vᵀ``; the penalty ``l2/2·||W||² = l2/2·tr(V A² Vᵀ)`` keeps the objective
    unchanged, only the geometry improves (about 4× fewer iterations on 60,000 × 512 features; see
    experiments/bench_eval.py). Loss and gradient are written out (two matrix products per evaluation)
    rather than taken by autograd.

    Args:
        x: ``(N, D)`` standardised features; y: ``(N,)`` labels.
        dtype: optimisation precision; precondition: whiten (``δ = 1e-3`` of the unit feature scale).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, dtype: torch.dtype = torch.float64,
                 precondition: bool = True, delta: float = 1e-3) -> None:
        x = x.to(dtype)
        self.n, self.dim = x.shape
        self.num_classes = num_classes
        self.dtype = dtype
        self.onehot = nn.functional.one_hot(y.long(), num_classes).to(dtype)
        self.A: torch.Tensor | None = None
        if precondition and self.n > 0:
            evals, evecs = eigh((x.T @ x).double() / self.n)
            scale = (evals.clamp_min(0) + delta).rsqrt()
            self.A = ((evecs * scale) @ evecs.T).to(dtype)
            self.A_inv = ((evecs / scale) @ evecs.T).to(dtype)
            self.A2 = (self.A @ self.A)
            x = x @ self.A
        self.x = x

    def fit(self, l2: float, *, max_iter: int = 200, init: nn.Linear | None = None,
            tolerance_grad: float = 1e-7) -> nn.Linear:
        """Minimise ``mean CE + l2/2·||W||²``; returns a float32 ``nn.Linear(D, C)`` on the *unwhitened* x."""
        v = torch.zeros(self.num_classes, self.dim, dtype=self.dtype)
        b = torch.zeros(self.num_classes, dtype=self.dtype)
        if init is not None:
            w0 = init.weight.detach().to(self.dtype)
            v.copy_(w0 @ self.A_inv if self.A is not None else w0)
            b.copy_(init.bias.detach().to(self.dtype))
        v.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.LBFGS([v, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tolerance_grad,
                                tolerance_change=1e-10, line_search_fn="strong_wolfe")
        x, onehot, n = self.x, self.onehot, self.n

        def closure() -> torch.Tensor:
            with torch.no_grad():
                z = torch.addmm(b, x, v.T)
                lse = z.logsumexp(1, keepdim=True)
                va2 = v @ self.A2 if self.A is not None else v
                loss = lse.mean() - (z * onehot).sum() / n + 0.5 * l2 * (v * va2).sum()
                residual = z.sub_(lse).exp_().sub_(onehot).div_(n)  # softmax − onehot, over N
                v.grad = torch.addmm(va2, residual.T, x, beta=l2)
                b.grad = residual.sum(0)
            return loss

        with threads_for(n * self.dim * self.num_classes):
            opt.step(closure)
        model = nn.Linear(self.dim, self.num_classes)
        with torch.no_grad():
            w = v.detach() @ self.A if self.A is not None else v.detach()
            model.weight.copy_(w.float())
            model.bias.copy_(b.detach().float())
        return model


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    l2: float,
    max_iter: int = 200,
    init: nn.Linear | None = None,
    dtype: torch.dtype = torch.float64,
    precondition: bool = True,
) -> nn.Linear:
    """Minimise ``mean CE(Wx + b, y) + l2/2 · ||W||²`` with full-batch L-BFGS. ``x`` ``(N, D)`` float.

    Args:
        init: warm start (a previous solution on the same features); zeros otherwise.
        dtype: precision of the optimisation (float32 is about twice as fast on large sets).
        precondition: solve in whitened coordinates (same optimum, fewer iterations).
    Returns:
        a float32 ``nn.Linear(D, num_classes)``.
    """
    problem = LogisticProblem(x, y, num_classes=num_classes, dtype=dtype, precondition=precondition)
    return problem.fit(l2, max_iter=max_iter, init=init)


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
    dtype: torch.dtype = torch.float64,
) -> ProbeResult:
    """Fit on standardised train features, report top-1 on test.

    With a sequence of ``l2`` values and a validation split, each is scored on val (ties go to the
    stronger regulariser), the best is refit on train + val and evaluated on test.
    """
    grid = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
    val_acc: dict[float, float] = {}
    best = grid[0]
    warm: dict[float, nn.Linear] = {}
    if len(grid) > 1:
        if val_x is None or val_y is None:
            raise ValueError("choosing l2 from a grid needs val_x and val_y")
        tr, va = standardise(train_x.float(), val_x.float())
        problem = LogisticProblem(tr, train_y, num_classes=num_classes, dtype=dtype)
        model = None
        for value in sorted(grid, reverse=True):  # strongest first: each fit warm-starts the next
            model = problem.fit(value, max_iter=max_iter, init=model)
            warm[value] = model
            val_acc[value] = accuracy(model, va, val_y)
        best = max(grid, key=lambda v: (val_acc[v], v))
        train_x, train_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    tr, te = standardise(train_x.float(), test_x.float())
    model = fit_logistic(tr, train_y, num_classes=num_classes, l2=best, max_iter=max_iter, init=warm.get(best),
                         dtype=dtype)
    return ProbeResult(accuracy=accuracy(model, te, test_y), l2=best, train_accuracy=accuracy(model, tr, train_y),
                       val_accuracies=val_acc)


@EVALUATORS.register("linear")
@dataclass(kw_only=True)
class LinearEvaluator(FeatureEvaluator):
    """Top-1 of a linear probe per tapped layer and feature source.

    The pool is ``train_split`` (all of train, the dataset's train ∪ val, by default), or a seeded subset of
    ``max_train`` of its images. The L2 strength is chosen from ``l2_grid`` on a validation set — a seeded
    ``val_fraction`` of the pool, or the split ``val_split`` — and the best is refit on pool + validation
    images and scored on ``test``; a single ``l2_grid`` value is fitted on the pool directly. The training
    loop's end-of-run probe is this evaluator on ``train``, with ``val_split="val"`` (``ProbeConfig``).

    Args:
        layers: taps (``"pooled"`` and/or intermediate indices, e.g. ``["pooled", 2, -1]``).
        which: feature sources, any of ``raw``, ``lensed``, ``concat``.
        l2_grid: candidate L2 strengths of ``mean CE + l2/2·||W||²``.
        val_fraction: share of the pool held out for the choice (without ``val_split``).
        val_split: a split to choose on instead (e.g. ``val`` with ``train_split="train"``).
        train_split: the pool.
        max_train: a subset of the pool of this many images (seed ``source.seed``; 0 = all): the probe's cost
            is mostly feature extraction, linear in the images.
        max_iter: L-BFGS iterations per fit (100 reach sklearn's converged accuracy within 0.1 point on
            60,000 × 512 features; experiments/bench_eval.py).
        precision: ``float64`` or ``float32`` optimisation.
    Yields ``linear/<which>/<layer>/{top1, l2, val_top1, train_top1, train_images}``.
    """

    name = "linear"
    l2_grid: list = field(default_factory=lambda: list(DEFAULT_L2_GRID))
    val_fraction: float = 0.2
    val_split: str | None = None
    train_split: str = "trainval"
    max_train: int = 0
    max_iter: int = 100
    precision: str = "float32"

    def pool(self, source: FeatureSource) -> Split:
        """The training images: ``train_split``, or ``max_train`` of them (a seeded subset, in split order)."""
        split = source.split(self.train_split)
        if 0 < self.max_train < len(split):
            keep, _ = seeded_split(len(split), self.max_train, seed=source.seed)
            split = split.subset(keep)
        return split

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(self.precision)
        if dtype is None:
            raise ValueError(f"Unknown precision '{self.precision}'. Valid precisions: float32, float64")
        grid = [float(self.l2_grid)] if isinstance(self.l2_grid, (int, float)) else [float(v) for v in self.l2_grid]
        pool_split = self.pool(source)
        for which in self.feature_sources():
            pool, pool_y = source.features(pool_split, layers=self.layers, which=which,
                                           desc=f"features {self.train_split} [clean, {which}]")
            test, test_y = source.features("test", layers=self.layers, which=which)
            val = val_y = rest = held = None
            if len(grid) > 1 and self.val_split is not None:
                val, val_y = source.features(self.val_split, layers=self.layers, which=which)
            elif len(grid) > 1:
                rest, held = carve_indices(len(pool_y), self.val_fraction, source.seed)
            for layer in pool:
                x = pool[layer]
                start = time.perf_counter()
                if len(grid) == 1:  # nothing to choose: fit on the whole pool
                    result = linear_probe(x, pool_y, test[layer], test_y, num_classes=source.num_classes, l2=grid[0],
                                          max_iter=self.max_iter, dtype=dtype)
                elif val is not None:
                    result = linear_probe(x, pool_y, test[layer], test_y, num_classes=source.num_classes, l2=grid,
                                          val_x=val[layer], val_y=val_y, max_iter=self.max_iter, dtype=dtype)
                else:
                    result = linear_probe(x[rest], pool_y[rest], test[layer], test_y, num_classes=source.num_classes,
                                          l2=grid, val_x=x[held], val_y=pool_y[held], max_iter=self.max_iter,
                                          dtype=dtype)
                log.info("linear [%s/%s]: %d x %d features, L2 %g of %d: top-1 %.4f (%.1f s)", which, layer, *x.shape,
                         result.l2, len(grid), result.accuracy, time.perf_counter() - start)
                yield metric_name(self.name, which, layer, "top1"), result.accuracy
                yield metric_name(self.name, which, layer, "l2"), result.l2
                yield metric_name(self.name, which, layer, "val_top1"), result.val_accuracies.get(result.l2, float("nan"))
                yield metric_name(self.name, which, layer, "train_top1"), result.train_accuracy
                yield metric_name(self.name, which, layer, "train_images"), float(len(pool_y))
