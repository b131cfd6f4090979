"""Evaluations of frozen representations. Evaluators read checkpoints and features, never the
training loop.

Each evaluator lives in its own module, registers under a name and yields ``(metric, value)`` pairs
from a :class:`~shortcutlens.eval.source.FeatureSource` (a frozen model, a dataset and a feature cache
shared by all evaluators of a run)::

    from shortcutlens.eval import FeatureSource, create_evaluator
    source = FeatureSource.from_checkpoint("runs/arrow_lens")
    for name in ("linear", "fewshot", "knn"):
        for metric, value in create_evaluator(name).run(source):
            print(metric, value)

Registered: ``linear`` (multi-layer logistic probes), ``fewshot`` (big_vision's closed-form ridge),
``knn`` (DINO's weighted kNN), ``episodes`` (Meta-Dataset episodes: prototype, ridge, finetune),
``vtab1k`` (the VTAB-1k protocol), ``shortcut_audit`` and ``lens_edit`` (where the lens edits, and what
that does to the pretext task).
"""

# Importing the modules registers their evaluators.
from shortcutlens.eval import episodes, fewshot, knn, lens_edit, linear, shortcut_audit, vtab1k  # noqa: F401
from shortcutlens.eval.base import EVALUATORS, Evaluator, create_evaluator, list_evaluators
from shortcutlens.eval.source import FeatureSource

__all__ = ["EVALUATORS", "Evaluator", "FeatureSource", "create_evaluator", "list_evaluators"]
