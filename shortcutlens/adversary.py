"""The lens game: the lens's objectives (``lens.mode``: what the lens maximises and how its gradient
reaches it) and the feature extractor's side as one module (``Player``).

Minderer, Bachem, Houlsby, Tschannen, "Automatic Shortcut Removal for Self-Supervised Representation
Learning", ICML 2020 (arXiv 2002.08822). The feature extractor ``F`` minimises the pretext loss on lensed
views ``x' = L(x)``; the lens ``L`` minimises ``L_adv + λ·mean((x − x')²)``. Each objective below is one
choice of ``L_adv``, and owns the whole of the lens's side of one training step:

- ``full``: ``L_adv = −L_pretext``. One forward and one backward pass for both players: a
  gradient-reversal layer between lens and backbone hands the lens the negated pretext gradient.
- ``least_likely``: cross-entropy towards ``argmin_y p(y | F(x'))`` per view (the paper's second variant).
- ``random_wrong``: cross-entropy towards a uniformly random class other than the true one, drawn each
  step: non-saturating, and with no fixed direction to redirect a shortcut to (docs/architecture.md
  records it focusing and erasing a shortcut where the others did not).
- ``entropy``: maximise the pretext's predictive entropy ``H(p(y | F(x')))``.
- ``auto`` (the default): ``random_wrong`` for a classification pretext, ``full`` otherwise.

The targeted objectives (and ``full`` with ``feed_raw``) hand the backbone the lensed views as a detached
leaf: ``∂L_adv/∂x'`` is taken at that leaf with one input-gradient pass through the backbone (no weight
gradients), then one backward pass gives the feature extractor its gradients and the lens ``∂L_adv/∂x'``
pulled back through itself. Either way the lens and the feature extractor get exactly the gradients of
their own losses.

A new objective is one class and one registry entry::

    from shortcutlens.adversary import OBJECTIVES, TargetedObjective

    @OBJECTIVES.register("most_likely_other")
    class MostLikelyOther(TargetedObjective):
        '''Cross-entropy towards the most likely wrong class.'''

        def lens_loss(self, pretext, features, targets):
            logits = pretext.task_logits(features, targets).float()
            wrong = logits.detach().scatter(1, targets[:, None], float("-inf")).argmax(1)
            return torch.nn.functional.cross_entropy(logits, wrong)

then ``shortcutlens-train lens=unet lens.mode=most_likely_other``. Third-party packages register through
the entry-point group ``shortcutlens.lens_modes``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from shortcutlens.lens import reverse_gradient
from shortcutlens.registry import Registry

if TYPE_CHECKING:
    from pretexts import Pretext

OBJECTIVES = Registry("lens mode", entry_point_group="shortcutlens.lens_modes")
AUTO = "auto"

#: ``player(inputs, targets, n, objective) -> (loss, adv_loss | None, metrics)``: a ``Player``, or its DDP/FSDP wrapper
PlayerFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]]


class Objective:
    """One lens objective. Subclasses implement ``lens_loss``; ``play`` runs the lens's side of a step.

    Args:
        rec_weight: λ of the reconstruction penalty ``λ·mean((x − x')²)`` (0 with the lens's edit budget).
        reverse_scale: multiplier of the lens's gradient under gradient reversal (``full``).
        feed_raw: the feature extractor also sees the raw views (the paper's setting): one batch of ``2N``
            images, the mean of the lensed and raw losses; the lens's gradient comes from the lensed half only.
    """

    #: the objective reads the pretext's class logits (``Pretext.task_logits``)
    needs_classification: ClassVar[bool] = False
    #: the registered name (``lens.mode``), set by ``create_objective``
    name: str = ""

    def __init__(self, *, rec_weight: float = 0.0, reverse_scale: float = 1.0, feed_raw: bool = False) -> None:
        self.rec_weight, self.reverse_scale, self.feed_raw = rec_weight, reverse_scale, feed_raw

    @property
    def reverses(self) -> bool:
        """True: the lens's gradient comes through a gradient-reversal layer in the shared backward pass;
        False: through a detached leaf and its own input-gradient pass."""
        return False

    def lens_loss(self, pretext: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What the lens minimises (besides ``λ·rec``), from the features of the ``N`` lensed views and their
        pretext targets ``(N,)``; a scalar."""
        raise NotImplementedError

    def reconstruction(self, lensed: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``mean((x − x')²)`` over ``(N, C, H, W)`` views, in float32 (the paper's ``L_rec``)."""
        return (lensed.float() - inputs.float()).pow(2).mean()

    def play(self, *, player: PlayerFn, lens: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             amp: bool = False, params: list[torch.Tensor] | None = None, update_lens: bool = True) -> dict[str, torch.Tensor]:
        """One step of the game on views ``inputs (N, C, H, W)`` with pretext ``targets``: forward passes and
        every backward pass; leaves the gradients of both players in ``.grad`` (the caller steps the
        optimizers). Returns detached per-step metrics (``loss``, ``acc``, ``rec``, ``edit``, ...).

        ``params``: every parameter of both players, when they are the autograd graph's leaves (not under
        FSDP, whose sharded parameters are not): the last backward pass then fills only their gradients and
        skips the input gradient of the backbone's first layer at the leaf, which nothing reads (measured:
        1–2% of a ``random_wrong`` step with the default ResNet on a CPU).

        ``update_lens=False`` (``lens.update_every``: the steps between the lens's updates): the lens only
        edits — no gradient for it, no objective, one backward pass for the feature extractor."""
        n = inputs.shape[0]
        if not update_lens:
            return self.edit_only(player=player, lens=lens, inputs=inputs, targets=targets, amp=amp)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            lensed = lens(inputs)
            rec = self.reconstruction(lensed, inputs)
            if self.reverses:  # identity forward, negated gradient into the lens
                seen = reverse_gradient(lensed, self.reverse_scale)
            else:  # a leaf: the lens's gradient is taken here, by its own input-gradient pass
                seen = leaf = lensed.detach().requires_grad_()
            if self.feed_raw:
                seen = torch.cat([seen, inputs])
            loss, adv_loss, metrics = player(seen, targets, n, None if self.reverses else self)
        metrics["rec"], metrics["edit"] = rec.detach(), (lensed.detach() - inputs).abs().mean()
        if self.reverses:
            (loss + self.rec_weight * rec).backward()
            return metrics
        metrics["adv_loss"] = (adv_loss + self.rec_weight * rec).detach()
        # ∂L_adv/∂x' first, weight gradients skipped; retain the graph for the feature extractor's pass.
        # (backward(inputs=...) rather than autograd.grad: the FLOP counter's module hooks reject the latter.)
        adv_loss.backward(inputs=[leaf], retain_graph=True)
        grad, leaf.grad = leaf.grad, None
        # Then one pass for both players: the feature extractor's loss, and ∂L_adv/∂x' pulled back
        # through the lens (its graph is separate from the backbone's) plus λ·∂rec.
        torch.autograd.backward([loss, lensed, rec], [torch.ones_like(loss), grad, torch.full_like(rec, self.rec_weight)],
                                inputs=params)
        return metrics

    def edit_only(self, *, player: PlayerFn, lens: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  amp: bool = False) -> dict[str, torch.Tensor]:
        """A step in which the lens does not learn: the feature extractor trains on the lensed views (and the
        raw ones with ``feed_raw``) exactly as in ``play``, the lens's forward pass runs without a graph."""
        n = inputs.shape[0]
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                lensed = lens(inputs)
            seen = torch.cat([lensed, inputs]) if self.feed_raw else lensed
            loss, _, metrics = player(seen, targets, n, None)
        loss.backward()
        metrics["rec"], metrics["edit"] = self.reconstruction(lensed, inputs), (lensed - inputs).abs().mean()
        return metrics


class TargetedObjective(Objective):
    """Base of the objectives that read the pretext's class logits: a detached leaf, its own gradient pass."""

    needs_classification = True


@OBJECTIVES.register("full")
class Full(Objective):
    """``L_adv = −L_pretext`` (Minderer et al. 2020, Sec. 3): works with every pretext. Gradient reversal
    shares the feature extractor's backward pass; with ``feed_raw`` a detached leaf instead, so that the
    lens is not also rewarded for the loss on the raw half (BatchNorm couples the two halves)."""

    @property
    def reverses(self) -> bool:
        return not self.feed_raw

    def lens_loss(self, pretext: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -self.reverse_scale * pretext.loss(features, targets)[0]


@OBJECTIVES.register("least_likely")
class LeastLikely(TargetedObjective):
    """Cross-entropy towards ``argmin_y p(y | F(x'))`` per view (Minderer et al. 2020, Sec. 3)."""

    def lens_loss(self, pretext: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = pretext.task_logits(features, targets).float()
        return nn.functional.cross_entropy(logits, least_likely_targets(logits))


@OBJECTIVES.register("random_wrong")
class RandomWrong(TargetedObjective):
    """Cross-entropy towards a class drawn uniformly among the wrong ones, anew each step."""

    def lens_loss(self, pretext: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = pretext.task_logits(features, targets).float()
        return nn.functional.cross_entropy(logits, random_wrong_targets(targets, logits.shape[-1]))


@OBJECTIVES.register("entropy")
class Entropy(TargetedObjective):
    """Maximise the predictive entropy ``H(p) = −Σ_y p(y) log p(y)``, averaged over the views: the lens
    minimises ``−H``. (Saturates like ``full`` once the pretext is at chance: docs/architecture.md.)"""

    def lens_loss(self, pretext: nn.Module, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = pretext.task_logits(features, targets).float().log_softmax(-1)
        return (log_p.exp() * log_p).sum(-1).mean()


class Player(nn.Module):
    """The feature extractor's side of the game as one module: backbone, pretext head and losses.

    One module so that DDP and FSDP see a single forward pass that uses every parameter (a head called
    outside its wrapper's forward would never have its gradient synchronised, and FSDP would find its
    weights still sharded).

    ``forward(inputs, targets, n, objective)`` -> ``(loss, adv_loss | None, metrics)``: the pretext loss on
    ``inputs[:n]``, or, when ``inputs`` is longer (``feed_raw``: the raw copies ``inputs[n:]``), the mean of
    that loss and the same loss on the raw copies; ``objective`` adds the lens's loss on ``inputs[:n]``.
    """

    def __init__(self, backbone: nn.Module, pretext: Pretext) -> None:
        super().__init__()
        self.backbone, self.pretext = backbone, pretext

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, n: int | None = None,
                objective: Objective | None = None) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        n = inputs.shape[0] if n is None else n
        features = self.pretext.embed(self.backbone, inputs)
        loss, metrics = self.pretext.loss(features[:n], targets)
        if features.shape[0] > n:  # one batch of 2n images: the mean loss, so the step is no larger than without
            raw_loss, raw_metrics = self.pretext.loss(features[n:], targets)
            loss = (loss + raw_loss) / 2
            metrics["acc_raw"] = raw_metrics["acc"]
        adv_loss = objective.lens_loss(self.pretext, features[:n], targets) if objective is not None else None
        return loss, adv_loss, metrics


def least_likely_targets(logits: torch.Tensor) -> torch.Tensor:
    """``argmin_y p(y|x)`` per row of ``(N, K)`` logits (softmax is monotone, so argmin of logits)."""
    return logits.detach().argmin(dim=-1)


def random_wrong_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly random class different from ``targets`` (shape ``(N,)``), drawn from the global RNG."""
    offset = torch.randint(1, num_classes, targets.shape, device=targets.device)
    return (targets + offset) % num_classes


def list_modes() -> list[str]:
    """Every valid ``lens.mode``: ``auto`` and the registered objectives."""
    return [AUTO, *OBJECTIVES.names()]


def check_mode(*, mode: str, pretext: Any) -> str:
    """The objective ``mode`` stands for with ``pretext`` (a ``Pretext``, its class or its registered name):
    ``auto`` resolved; ``ValueError`` (one line) for an unknown mode or one the pretext cannot play."""
    if mode != AUTO and mode not in OBJECTIVES:
        raise ValueError(f"Unknown lens mode '{mode}'. Valid lens modes: {', '.join(list_modes())}")
    if isinstance(pretext, str):
        from pretexts import PRETEXTS

        pretext = PRETEXTS.get(pretext)
    classification = bool(getattr(pretext, "classification", True))
    targetable = getattr(pretext, "targetable", None)
    targetable = classification if targetable is None else bool(targetable)
    name = getattr(pretext, "__name__", None) or type(pretext).__name__  # a class or builder, or an instance
    if mode == AUTO:
        return "random_wrong" if classification else "full"
    if OBJECTIVES.get(mode).needs_classification and not targetable:
        raise ValueError(f"lens mode '{mode}' needs a classification pretext (or one with task logits); {name} "
                         "is not one. Use lens.mode=full (or auto).")
    return mode


def create_objective(mode: str, *, pretext: Any, rec_weight: float = 0.0, reverse_scale: float = 1.0,
                     feed_raw: bool = False) -> Objective:
    """The objective for ``lens.mode=mode`` (``auto`` resolved for ``pretext``), validated here and only here."""
    resolved = check_mode(mode=mode, pretext=pretext)
    objective = OBJECTIVES.create(resolved, rec_weight=rec_weight, reverse_scale=reverse_scale, feed_raw=feed_raw)
    objective.name = resolved
    return objective
