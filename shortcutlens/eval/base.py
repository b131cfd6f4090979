"""The evaluator interface, its registry, and the small statistics evaluators share.

An evaluator is a small object selected by name (big_vision's ``evaluators/*.py``): built from typed
keyword arguments, it reads a :class:`~shortcutlens.eval.source.FeatureSource` and *yields*
``(metric, value)`` pairs, named ``<evaluator>/<what>/<layer>/<measure>``::

    ev = create_evaluator("fewshot", shots=(1, 5), layers=["pooled"])
    for metric, value in ev.run(source):
        print(metric, value)          # fewshot/pooled/5shot 0.61 ...

``settings()`` returns every argument, recorded next to the numbers in the JSON, so nobody has to guess
which layer, head or regulariser produced a number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from shortcutlens.data.base import seeded_split
from shortcutlens.registry import Registry

if TYPE_CHECKING:
    from shortcutlens.eval.source import FeatureSource

EVALUATORS = Registry("evaluator", entry_point_group="shortcutlens.evaluators")


def create_evaluator(name: str, **kwargs: Any) -> Evaluator:
    """Build an evaluator by registered name, e.g. ``create_evaluator("knn", k=20)``."""
    return EVALUATORS.create(name, **kwargs)


def list_evaluators() -> list[str]:
    return EVALUATORS.names()


class Evaluator:
    """Base class; subclasses are keyword-only dataclasses registered with ``@EVALUATORS.register``."""

    name: str = "evaluator"

    def run(self, source: FeatureSource) -> Iterator[tuple[str, float]]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {}

    def report(self, metrics: dict[str, float]) -> str | None:
        """An optional human-readable summary (Markdown) of this evaluator's metrics."""
        return None


@dataclasses.dataclass(kw_only=True)
class FeatureEvaluator(Evaluator):
    """Base of the evaluators that read frozen features: the taps and sources every one of them takes.

    Args:
        layers: feature taps, ``pooled`` and/or ``layer<k>`` (see ``shortcutlens.eval.features``).
        which: feature sources, one name or a list: ``raw`` (``F(x)``), ``lensed`` (``F(L(x))``) or
            ``concat`` (both side by side).
    """

    layers: list = dataclasses.field(default_factory=lambda: ["pooled"])
    which: list = dataclasses.field(default_factory=lambda: ["raw"])

    def feature_sources(self) -> list[str]:
        """``which`` as a list (a config may give one name)."""
        return [self.which] if isinstance(self.which, str) else list(self.which)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def mean_std(values: list[float] | torch.Tensor) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if t.numel() == 0:
        return float("nan"), float("nan")
    return t.mean().item(), (t.std().item() if t.numel() > 1 else 0.0)


def ci95(values: list[float] | torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval, 1.96·std/√n (Meta-Dataset's report)."""
    mean, std = mean_std(values)
    n = torch.as_tensor(values).numel()
    return mean, (1.96 * std / math.sqrt(n) if n > 1 else 0.0)


def carve_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``range(n)`` into ``(rest, carved)`` with ``round(n·fraction)`` carved."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    carved, rest = seeded_split(n, max(1, round(n * fraction)), seed=seed)
    return rest, carved


# Below this many multiply-adds per operation, OpenMP's fork/join costs more than it saves, and on a
# busy machine its spinning threads make a 300 × 128 probe 10-40× slower (measured); run such work on one.
SMALL_WORK = 4_000_000


@contextlib.contextmanager
def threads_for(work: int) -> Iterator[None]:
    """Run the block on one intra-op thread when ``work`` (multiply-adds per step) is small."""
    before = torch.get_num_threads()
    if work >= SMALL_WORK or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def evaluating(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Eval mode for the block (dropout off, BatchNorm on its running statistics), and afterwards every
    submodule back in the mode it had, so a live training run can be evaluated in the middle."""
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    try:
        for module in modules:
            if module is not None:
                module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` on one thread: LAPACK's threaded tridiagonal reduction was 2-18× *slower*
    than one thread for 250-1500-sized matrices on a 2-core machine (measured; worse under load)."""
    with threads_for(0):
        return torch.linalg.eigh(a)


def metric_name(*parts: object) -> str:
    return "/".join(str(p) for p in parts if p not in (None, ""))
