"""Decoupled weight decay for the head and the body (the "Scaling ViT" recipe's parameter groups).

Zhai, Kolesnikov, Houlsby, Beyer, "Scaling Vision Transformers", CVPR 2022, §3.4 and Figure 5: a
weight decay on the final prediction layer (the *head*) much stronger than on the rest of the
network (the *body*) barely changes upstream accuracy but markedly improves few-shot transfer of
the body's representation. Here the body is the backbone and the head is whatever the pretext task
owns (docs/architecture.md: heads belong to pretext tasks).

Decay follows the ``AdamW``/``ScalingAdafactor`` convention ``W ← W·(1 − lr·wd)``, the convention of
torch optimizers; big_vision multiplies its ``wd`` by the schedule but not by the base rate, so its
values equal these times the base learning rate. As in ``optim.param_groups``, only tensors of two
or more dimensions decay (matrices, kernels, and ViT's position embedding and class token), never
biases or normalisation parameters.

The groups carry ``lr_scale`` (the loop's ``optim.set_lr`` multiplies the scheduled rate by it) and
a ``name`` so that logs and tests can tell them apart::

    groups = head_body_param_groups(backbone, pretext, body_weight_decay=0.03, head_weight_decay=3.0)
    opt = build_optimizer(groups, name="adafactor", lr=1e-3)
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from shortcutlens.train.optim import param_groups

ModuleLike = nn.Module | Iterable[nn.Module]


def _modules(m: ModuleLike) -> list[nn.Module]:
    return [m] if isinstance(m, nn.Module) else list(m)


def head_body_param_groups(
    body: ModuleLike,
    head: ModuleLike,
    *,
    body_weight_decay: float,
    head_weight_decay: float | None = None,
    body_lr_scale: float = 1.0,
    head_lr_scale: float = 1.0,
) -> list[dict]:
    """Up to four parameter groups: body/head × decayed (``ndim >= 2``)/not decayed.

    Args:
        body: the backbone (a module or several).
        head: the modules holding the head, e.g. the pretext task.
        body_weight_decay: decoupled decay of the body's matrices.
        head_weight_decay: decoupled decay of the head's matrices; ``None`` uses the body's rate, which
            gives the same decay as ``optim.param_groups([body, head], body_weight_decay)``.
        body_lr_scale, head_lr_scale: multipliers of the scheduled learning rate.
    Returns:
        non-empty groups, each ``{"params", "weight_decay", "lr_scale", "name"}``.
    Raises:
        ValueError: a parameter shared by head and body (it would be updated twice).
    """
    body_mods, head_mods = _modules(body), _modules(head)
    body_ids = {id(p) for m in body_mods for p in m.parameters()}
    shared = [n for m in head_mods for n, p in m.named_parameters() if id(p) in body_ids]
    if shared:
        raise ValueError(f"parameters in both head and body: {', '.join(shared[:5])}")
    head_wd = body_weight_decay if head_weight_decay is None else head_weight_decay
    groups = []
    for part, mods, wd, scale in (("body", body_mods, body_weight_decay, body_lr_scale),
                                  ("head", head_mods, head_wd, head_lr_scale)):
        decay, no_decay = param_groups(mods, wd)
        decay.update(name=part, lr_scale=scale)
        no_decay.update(name=f"{part}_no_decay", lr_scale=scale)
        groups += [g for g in (decay, no_decay) if g["params"]]
    return groups
