"""``vtab1k``: the VTAB-1k protocol on frozen features, over whichever datasets are present.

Zhai et al., "A Large-scale Study of Representation Learning with the Visual Task Adaptation
Benchmark" (VTAB, arXiv 1910.04867), and its 1k variant as used in VTAB+MD (Dumoulin et al., NeurIPS
2021): each task gets 1000 labelled training examples; 800 train / 200 validation choose the
hyperparameters, the chosen setting is refit on all 1000 and scored on the *full* test split. Here
the adapter is the linear probe (``shortcutlens.eval.linear``; the hyperparameter is its L2 strength)
on standardised frozen features.

Datasets: ``digits`` and ``fashion_mnist`` (ship with scikit-learn / Debian), ``cifar10``, ``cifar100``,
``stl10`` when a user has them; a missing one is skipped and reported as unavailable. Images are
brought to the model's size and channel count (grayscale replicated, colour averaged).

Shapes: per task, train ``(1000, D)``, test ``(M, D)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from shortcutlens.data import DataNotFoundError, create_dataset
from shortcutlens.data.base import Split, seeded_split
from shortcutlens.eval.base import EVALUATORS, FeatureEvaluator, metric_name
from shortcutlens.eval.linear import DEFAULT_L2_GRID, linear_probe
from shortcutlens.eval.source import FeatureSource

VTAB_DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100", "stl10")


def vtab_subsets(labels: torch.Tensor, *, train_size: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint ``(train, val)`` index sets from a pool of ``len(labels)`` examples; shrunk
    proportionally (80/20 by default) when the pool holds fewer than ``train_size + val_size``."""
    n = labels.numel()
    total = train_size + val_size
    if n < total:
        val_size = max(1, round(n * val_size / total))
        train_size = n - val_size
    train, rest = seeded_split(n, train_size, seed=seed, sort=False)  # permutation order, as VTAB draws them
    return train, rest[:val_size]


@EVALUATORS.register("vtab1k")
@dataclass(kw_only=True)
class VTAB1kEvaluator(FeatureEvaluator):
    """Args:
    datasets: task names (skipped when their files are absent).
    layers, which: taps and feature sources (see ``linear``).
    train_size, val_size: 800 / 200 (VTAB-1k).
    l2_grid, max_iter: the linear probe's hyperparameter grid and L-BFGS iterations.
    root: where to look for the data (``data.root``; ``None``: the usual places).
    Yields ``vtab1k/<which>/<layer>/<dataset>/top1`` (and ``.../l2``), ``vtab1k/<which>/<layer>/mean/top1``
    over the tasks present, and ``vtab1k/<dataset>/available`` (1 or 0).
    """

    name = "vtab1k"
    datasets: list = field(default_factory=lambda: list(VTAB_DATASETS))
    train_size: int = 800
    val_size: int = 200
    l2_grid: list = field(default_factory=lambda: list(DEFAULT_L2_GRID))
    max_iter: int = 200
    root: str | None = None

    def load(self, name: str, source: FeatureSource):
        kwargs = {"image_size": source.data.image_size, "seed": source.seed}
        if self.root is not None:
            kwargs["root"] = self.root
        if name == source.data.name:
            return source.data
        return create_dataset(name, **kwargs)

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        whiches = self.feature_sources()
        scores: dict[tuple[str, str], list[float]] = {}
        for name in self.datasets:
            try:
                data = self.load(name, source)
            except DataNotFoundError:
                yield metric_name(self.name, name, "available"), 0.0
                continue
            yield metric_name(self.name, name, "available"), 1.0
            pool = Split(torch.cat([data.train.images, data.val.images]), torch.cat([data.train.labels, data.val.labels]))
            tr, va = vtab_subsets(pool.labels, train_size=self.train_size, val_size=self.val_size, seed=source.seed)
            train, val = pool.subset(tr), pool.subset(va)
            for which in whiches:
                ftr, ytr = source.features(train, layers=self.layers, which=which, desc=f"vtab1k {name} train")
                fva, yva = source.features(val, layers=self.layers, which=which, desc=f"vtab1k {name} val")
                fte, yte = source.features(data.test, layers=self.layers, which=which, desc=f"vtab1k {name} test")
                for layer in ftr:
                    result = linear_probe(ftr[layer], ytr, fte[layer], yte, num_classes=data.num_classes,
                                          l2=list(self.l2_grid), val_x=fva[layer], val_y=yva, max_iter=self.max_iter)
                    scores.setdefault((which, layer), []).append(result.accuracy)
                    yield metric_name(self.name, which, layer, name, "top1"), result.accuracy
                    yield metric_name(self.name, which, layer, name, "l2"), result.l2
        for (which, layer), values in scores.items():
            yield metric_name(self.name, which, layer, "mean", "top1"), sum(values) / len(values)

    def report(self, metrics: dict[str, float]) -> str | None:
        """A Markdown table: one row per task present, one column per (feature source, layer), and the mean."""
        cells: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 5 and parts[0] == self.name and parts[4] == "top1":
                cells.setdefault(parts[3], {})[f"{parts[1]}/{parts[2]}"] = value
        if not cells:
            return None
        columns = sorted({c for row in cells.values() for c in row})
        rows = [n for n in self.datasets if n in cells] + (["mean"] if "mean" in cells else [])
        lines = ["| task | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for row in rows:
            vals = [f"{100 * cells[row][c]:.1f}" if c in cells[row] else "–" for c in columns]
            label = f"**{row}**" if row == "mean" else row
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
        missing = [n for n in self.datasets if metrics.get(metric_name(self.name, n, "available")) == 0.0]
        if missing:
            lines.append(f"\nnot present (skipped): {', '.join(missing)}")
        return "\n".join(lines)
