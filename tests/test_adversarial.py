"""The lens game inside the training step, checked against explicit two-pass computations."""

import pytest
import torch

from shortcutlens.adversary import (
    OBJECTIVES,
    TargetedObjective,
    create_objective,
    least_likely_targets,
    random_wrong_targets,
)
from shortcutlens.build import build_components, build_data
from shortcutlens.data.loader import to_float
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer, step_seed

SPEC = {
    "data": {"name": "synthetic", "image_size": 16, "num_train": 64, "num_test": 32},
    "backbone": {"name": "resnet", "depth": 18, "width": 0.125},
    "pretext": {"name": "rotation", "all_rotations": False},
    "lens": {"name": "unet", "width": 4, "constraint": "penalty"},
    "shortcut": {"name": "arrow"},
}


def make_trainer(tmp_path, mode: str, rec_weight: float = 0.0, feed_raw: bool = False, update_every: int = 1) -> Trainer:
    torch.manual_seed(0)
    data = build_data(SPEC)
    parts = build_components(SPEC, in_chans=data.channels, image_size=data.image_size)
    with torch.no_grad():  # a lens that is not the identity, so its edits matter
        parts.lens.out.weight.normal_(0, 0.05)
    trainer = Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                      trainer=TrainerConfig(batch_size=16, steps=1, warmup_steps=0, progress=False),
                      adversary=AdversaryConfig(mode=mode, rec_weight=rec_weight, feed_raw=feed_raw,
                                                update_every=update_every), probe=ProbeConfig(untrained=False),
                      run_dir=tmp_path, device=torch.device("cpu"))
    # Keep the gradients of the step for inspection: no parameter updates.
    trainer.optimizer.step = lambda *a, **k: None
    trainer.lens_optimizer.step = lambda *a, **k: None
    return trainer


def explicit_losses(trainer: Trainer, mode: str, step: int = 0):
    """Recompute the step's inputs and losses in plain autograd (two separate passes)."""
    torch.manual_seed(step_seed(trainer.seed, 0, step))
    x, _ = trainer.loader.batch(step)
    x = trainer.shortcut(to_float(x))
    inputs, targets = trainer.pretext.views(x)
    lensed = trainer.lens(inputs)
    features = trainer.backbone(lensed)
    loss, _ = trainer.pretext.loss(features, targets)
    rec = (lensed - inputs).pow(2).mean()
    return loss, rec, features, targets


def grads(params):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize("rec_weight", [0.0, 3.0])
def test_full_mode_gradient_reversal_equals_negated_pretext_gradient(tmp_path, rec_weight):
    trainer = make_trainer(tmp_path, "full", rec_weight)
    trainer.train_step(0)
    lens_params = list(trainer.lens.parameters())
    got_lens, got_model = grads(lens_params), grads(trainer.model_params)

    loss, rec, _, _ = explicit_losses(trainer, "full")
    want_lens = torch.autograd.grad(-loss + rec_weight * rec, lens_params, retain_graph=True)
    want_model = torch.autograd.grad(loss, trainer.model_params, allow_unused=True)
    for g, w in zip(got_lens, want_lens):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    for g, w in zip(got_model, want_model):
        torch.testing.assert_close(g, w if w is not None else torch.zeros_like(g), rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in got_lens)


@pytest.mark.parametrize("mode", ["least_likely", "random_wrong"])
def test_targeted_modes_give_each_player_its_own_gradient(tmp_path, mode):
    trainer = make_trainer(tmp_path, mode)
    trainer.train_step(0)
    lens_params = list(trainer.lens.parameters())
    got_lens, got_model = grads(lens_params), grads(trainer.model_params)

    loss, _, features, targets = explicit_losses(trainer, mode)
    logits = trainer.pretext.logits(features)
    if mode == "least_likely":
        adv_targets = logits.detach().argmin(-1)
    else:  # the step draws these right after the forward passes, from the same seeded stream
        adv_targets = random_wrong_targets(targets, logits.shape[-1])
    want_model = torch.autograd.grad(loss, trainer.model_params, retain_graph=True, allow_unused=True)
    for g, w in zip(got_model, want_model):
        torch.testing.assert_close(g, w if w is not None else torch.zeros_like(g), rtol=1e-4, atol=1e-6)
    adv = torch.nn.functional.cross_entropy(logits, adv_targets)
    want_lens = torch.autograd.grad(adv, lens_params)
    for g, w in zip(got_lens, want_lens):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in got_lens)


def test_least_likely_targets_are_the_argmin_class():
    logits = torch.tensor([[0.1, -2.0, 3.0, 0.0], [5.0, 4.0, -1.0, -1.5]])
    assert least_likely_targets(logits).tolist() == [1, 3]


def test_random_wrong_targets_never_hit_the_true_class_and_cover_the_others():
    torch.manual_seed(0)
    targets = torch.randint(0, 4, (4000,))
    wrong = random_wrong_targets(targets, 4)
    assert not torch.any(wrong == targets)
    for t in range(4):
        assert set(wrong[targets == t].tolist()) == set(range(4)) - {t}


def test_least_likely_needs_a_classification_pretext(tmp_path):
    trainer = make_trainer(tmp_path, "full")
    trainer.pretext.classification = False
    with pytest.raises(ValueError, match="needs a classification pretext"):
        create_objective("least_likely", pretext=trainer.pretext)


def test_entropy_mode_hands_the_lens_the_gradient_of_the_negated_entropy(tmp_path):
    trainer = make_trainer(tmp_path, "entropy", rec_weight=2.0)
    trainer.train_step(0)
    lens_params = list(trainer.lens.parameters())
    got_lens, got_model = grads(lens_params), grads(trainer.model_params)

    loss, rec, features, _ = explicit_losses(trainer, "entropy")
    p = trainer.pretext.logits(features).softmax(-1)
    neg_entropy = (p * p.log()).sum(-1).mean()
    want_lens = torch.autograd.grad(neg_entropy + 2.0 * rec, lens_params, retain_graph=True)
    want_model = torch.autograd.grad(loss, trainer.model_params, allow_unused=True)
    for g, w in zip(got_lens, want_lens):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    for g, w in zip(got_model, want_model):
        torch.testing.assert_close(g, w if w is not None else torch.zeros_like(g), rtol=1e-4, atol=1e-6)


def feed_raw_losses(trainer: Trainer):
    """The step's views, lensed and raw, in one batch of 2N through the backbone (BatchNorm sees both)."""
    torch.manual_seed(step_seed(trainer.seed, 0, 0))
    x, _ = trainer.loader.batch(0)
    inputs, targets = trainer.pretext.views(trainer.shortcut(to_float(x)))
    lensed = trainer.lens(inputs)
    features = trainer.backbone(torch.cat([lensed, inputs]))
    n = inputs.shape[0]
    return trainer.pretext.loss(features[:n], targets)[0], trainer.pretext.loss(features[n:], targets)[0]


def test_full_mode_with_feed_raw_rewards_the_lens_for_the_lensed_half_only(tmp_path):
    """Issue 14: BatchNorm couples the raw and lensed halves of the batch, so gradient reversal over the
    whole batch also handed the lens the gradient of the raw half's loss. The lens gets −∂L_lensed only;
    the feature extractor the mean of the two losses."""
    trainer = make_trainer(tmp_path, "full", feed_raw=True)
    trainer.train_step(0)
    lens_params = list(trainer.lens.parameters())
    got_lens, got_model = grads(lens_params), grads(trainer.model_params)

    lensed_loss, raw_loss = feed_raw_losses(trainer)
    want_lens = torch.autograd.grad(-lensed_loss, lens_params, retain_graph=True)
    both = torch.autograd.grad(-(lensed_loss + raw_loss), lens_params, retain_graph=True)
    want_model = torch.autograd.grad((lensed_loss + raw_loss) / 2, trainer.model_params, allow_unused=True)
    for g, w in zip(got_lens, want_lens):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    for g, w in zip(got_model, want_model):
        torch.testing.assert_close(g, w if w is not None else torch.zeros_like(g), rtol=1e-4, atol=1e-6)
    # The raw half does reach the lens through BatchNorm: the check above is not vacuous.
    assert max((b - w).abs().max().item() for b, w in zip(both, want_lens)) > 1e-3 * max(w.abs().max().item() for w in want_lens)


def test_a_new_objective_is_one_class_and_one_registry_entry(tmp_path):
    @OBJECTIVES.register("test_first_class")
    class FirstClass(TargetedObjective):  # every view towards pretext class 0
        def lens_loss(self, pretext, features, targets):
            logits = pretext.task_logits(features, targets)
            return torch.nn.functional.cross_entropy(logits.float(), torch.zeros_like(targets))

    try:
        trainer = make_trainer(tmp_path, "test_first_class")
        assert trainer.adv.mode == "test_first_class"
        trainer.train_step(0)
        lens_params = list(trainer.lens.parameters())
        _, _, features, targets = explicit_losses(trainer, "full")
        first = torch.nn.functional.cross_entropy(trainer.pretext.logits(features), torch.zeros_like(targets))
        for g, w in zip(grads(lens_params), torch.autograd.grad(first, lens_params)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    finally:
        OBJECTIVES._builders.pop("test_first_class")


@pytest.mark.parametrize("mode", ["random_wrong", "full"])
def test_update_every_lets_the_lens_learn_on_every_kth_step_only(tmp_path, mode):
    """lens.update_every=2: on step 0 both players get the gradients of an every-step run; on step 1 the
    feature extractor still trains on the lensed views (the pretext gradient through the lens's edit) and
    the lens gets no gradient and no optimizer step."""
    every_step, alternate = make_trainer(tmp_path / "a", mode), make_trainer(tmp_path / "b", mode, update_every=2)
    lens_params = list(alternate.lens.parameters())
    for tr in (every_step, alternate):
        tr.train_step(0)
    for g, w in zip(grads(lens_params) + grads(alternate.model_params),
                    grads(list(every_step.lens.parameters())) + grads(every_step.model_params)):
        torch.testing.assert_close(g, w)
    assert any(g.abs().sum() > 0 for g in grads(lens_params))

    alternate.optimizer.zero_grad(set_to_none=True)
    alternate.lens_optimizer.zero_grad(set_to_none=True)
    stepped = []
    alternate.lens_optimizer.step = lambda *a, **k: stepped.append(True)
    metrics = alternate.train_step(1)
    assert all(p.grad is None for p in lens_params) and not stepped
    assert "adv_loss" not in metrics and metrics["edit"] > 0
    loss, _, _, _ = explicit_losses(alternate, mode, step=1)
    want = torch.autograd.grad(loss, alternate.model_params, allow_unused=True)
    for g, w in zip(grads(alternate.model_params), want):
        torch.testing.assert_close(g, w if w is not None else torch.zeros_like(g), rtol=1e-4, atol=1e-6)


def test_update_every_must_be_a_positive_count():
    from shortcutlens.cli.common import compose
    from shortcutlens.config_schema import ConfigError, validate_train

    with pytest.raises(ConfigError, match="lens.update_every"):
        validate_train(compose(["lens=unet", "lens.update_every=0"]))


def test_flops_per_step_is_the_mean_of_one_update_every_cycle(tmp_path):
    """With lens.update_every=2 the steps alternate between two costs; the recorded FLOPs per step (the
    compute axis of scaling fits) is their mean, counted over one cycle, not the first step's."""
    from shortcutlens.flops import flop_counter

    costs = []
    for step in (0, 1):
        probe = make_trainer(tmp_path / f"probe{step}", "random_wrong", update_every=2)
        with flop_counter() as counter:
            probe.train_step(step)
        costs.append(int(counter.get_total_flops()))
    assert costs[0] > costs[1]  # the lens's update (its objective and backward passes) costs more

    trainer = make_trainer(tmp_path / "fit", "random_wrong", update_every=2)
    trainer.cfg.steps, trainer.cfg.log_every = 2, 2
    trainer.finish = dict  # the run's end (probe, pictures) is not what this test is about
    trainer.fit()
    assert trainer.extra_state["flops_per_step"] == sum(costs) // 2
    assert "flops_counted" not in trainer.extra_state
