"""The Scaling-ViT recipe: Adafactor variant, rsqrt schedule with cooldown branches, head/body decay."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from shortcutlens.train.adafactor import ScalingAdafactor, optimizer_state_bytes
from shortcutlens.train.optim import build_optimizer, lr_at, param_groups, set_lr
from shortcutlens.train.rsqrt_schedule import branch_checkpoint_steps, plan_cooldown_branches, rsqrt_lr
from shortcutlens.train.scaling_recipe import head_body_param_groups

# ------------------------------------------------------------------ Adafactor


def test_momentum_is_bfloat16_and_stays_so_through_a_checkpoint() -> None:
    w = nn.Parameter(torch.randn(8, 6))
    b = nn.Parameter(torch.randn(6))
    opt = build_optimizer([{"params": [w, b], "weight_decay": 0.0}], name="adafactor", lr=0.01, momentum=0.9)
    assert isinstance(opt, ScalingAdafactor)
    (w.sum() + b.pow(2).sum()).backward()
    opt.step()
    assert opt.state[w]["momentum"].dtype == torch.bfloat16
    assert opt.state[b]["momentum"].dtype == torch.bfloat16
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = ScalingAdafactor([w, b], lr=0.01)
    fresh.load_state_dict(state)
    assert fresh.state[w]["momentum"].dtype == torch.bfloat16
    torch.testing.assert_close(fresh.state[w]["row_var"], opt.state[w]["row_var"])


def test_factored_statistics_match_an_explicit_computation() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(4)]
    lr, wd = 0.1, 0.5
    w = nn.Parameter(w0.clone())
    opt = ScalingAdafactor([w], lr=lr, weight_decay=wd, momentum=0.9)
    r, c, m, ref = torch.zeros(4, 1), torch.zeros(1, 3), torch.zeros(4, 3), w0.clone()
    for t, g in enumerate(grads, start=1):
        w.grad = g.clone()
        opt.step()
        beta2 = min(0.999, 1 - t**-0.8)
        g2 = g**2 + 1e-30
        r = beta2 * r + (1 - beta2) * g2.mean(dim=1, keepdim=True)
        c = beta2 * c + (1 - beta2) * g2.mean(dim=0, keepdim=True)
        v_hat = r @ c / r.mean()
        m = 0.9 * m + 0.1 * g / v_hat.sqrt()
        ref = ref * (1 - lr * wd) - lr * m
        torch.testing.assert_close(opt.state[w]["row_var"], r)
        torch.testing.assert_close(opt.state[w]["col_var"], c)
        assert opt.state[w]["step"].item() == t
    # the only difference left is the momentum's bfloat16 rounding (8 bits of mantissa)
    torch.testing.assert_close(w.detach(), ref, atol=2e-3, rtol=0)


def test_factored_second_moment_is_exact_for_rank_one_squares() -> None:
    # G² = a·bᵀ is rank one, so row·col/mean(row) reproduces it and the first update is sign(G)·lr.
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 4.0])
    g = (a[:, None] * b[None, :]).sqrt() * torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    w = nn.Parameter(torch.zeros(3, 2))
    opt = ScalingAdafactor([w], lr=0.25, momentum=None)
    w.grad = g
    opt.step()
    torch.testing.assert_close(w.detach(), -0.25 * g.sign())


def test_beta2_schedule_is_capped() -> None:
    assert ScalingAdafactor.beta2_at(1) == 0.0
    assert ScalingAdafactor.beta2_at(10) == pytest.approx(1 - 10**-0.8)
    assert ScalingAdafactor.beta2_at(5_000) < 0.999
    assert ScalingAdafactor.beta2_at(100_000) == 0.999
    # and the optimizer uses it: at step 10^5 the statistics move by exactly 1 − 0.999
    w = nn.Parameter(torch.zeros(2, 2))
    opt = ScalingAdafactor([w], lr=0.0, momentum=None)
    w.grad = torch.ones(2, 2)
    opt.step()
    opt.state[w]["step"].fill_(99_999)
    w.grad = torch.full((2, 2), 2.0)
    opt.step()
    torch.testing.assert_close(opt.state[w]["row_var"], torch.full((2, 1), 0.999 * 1 + 0.001 * 4))


def test_state_is_much_smaller_than_adams() -> None:
    w = nn.Parameter(torch.randn(256, 256))
    states = {}
    for name in ("adafactor", "adamw"):
        opt = build_optimizer([{"params": [w]}], name=name, lr=1e-3)
        w.grad = torch.randn(256, 256)
        opt.step()
        states[name] = optimizer_state_bytes(opt)
    assert states["adafactor"] < 0.26 * states["adamw"]  # 2 bytes/param of momentum vs Adam's 8


def test_bad_adafactor_arguments() -> None:
    w = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="beta2_cap"):
        ScalingAdafactor(w, beta2_cap=1.0)
    with pytest.raises(ValueError, match="Valid dtypes"):
        ScalingAdafactor(w, momentum_dtype="int8")
    with pytest.raises(ValueError, match="adafactor"):
        build_optimizer([{"params": w}], name="lamb", lr=1.0)


# ------------------------------------------------------------------ rsqrt schedule


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),                            # warm-up: (0 + 1)/10
        (4, 0.5),
        (9, 1.0),                            # end of warm-up
        (10, 1.0),                           # rsqrt starts at 1/sqrt(1 + 0)
        (50, 1 / math.sqrt(5)),              # 1/sqrt(1 + 40/10)
        (80, 1 / math.sqrt(8)),              # cooldown starts at T - 20
        (90, 1 / 3 * 0.5),                   # rsqrt × (100 - 90)/20
        (99, 1 / math.sqrt(9.9) / 20),
        (100, 0.0),
    ],
)
def test_rsqrt_schedule_values(step: int, expected: float) -> None:
    kw = {"base_lr": 1.0, "total_steps": 100, "warmup_steps": 10, "cooldown_steps": 20, "timescale": 10}
    assert rsqrt_lr(step, **kw) == pytest.approx(expected)
    assert lr_at(step, schedule="rsqrt", **kw) == pytest.approx(expected)


def test_existing_schedules_are_unchanged() -> None:
    assert lr_at(0, base_lr=1.0, total_steps=100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(55, base_lr=1.0, total_steps=100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(55, base_lr=1.0, total_steps=100, warmup_steps=10, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="rsqrt"):
        lr_at(0, base_lr=1.0, total_steps=10, warmup_steps=0, schedule="step")
    with pytest.raises(ValueError, match="fit in"):
        rsqrt_lr(0, base_lr=1.0, total_steps=10, warmup_steps=8, cooldown_steps=5)


def test_cooldown_branches_share_the_long_run_until_they_branch() -> None:
    branches = plan_cooldown_branches([400, 100, 200], cooldown_fraction=0.2, warmup_steps=10)
    assert [(b.total_steps, b.branch_step, b.cooldown_steps) for b in branches] == [
        (100, 80, 20), (200, 160, 40), (400, 320, 80)]
    assert branch_checkpoint_steps(branches) == [80, 160]
    kw = {"base_lr": 1.0, "warmup_steps": 10, "timescale": 25}
    for b in branches:
        for step in range(b.branch_step):  # identical to the long run before the branch point
            assert rsqrt_lr(step, total_steps=b.total_steps, cooldown_steps=b.cooldown_steps, **kw) == \
                rsqrt_lr(step, total_steps=400, cooldown_steps=80, **kw)
        assert rsqrt_lr(b.total_steps, total_steps=b.total_steps, cooldown_steps=b.cooldown_steps, **kw) == 0.0
    fixed = plan_cooldown_branches([100, 300], cooldown_steps=50)
    assert [b.branch_step for b in fixed] == [50, 250]
    with pytest.raises(ValueError, match="warm-up"):
        plan_cooldown_branches([100], cooldown_steps=95, warmup_steps=10)
    with pytest.raises(ValueError, match="exactly one"):
        plan_cooldown_branches([100])


# ------------------------------------------------------------------ head/body weight decay


def _body_and_head() -> tuple[nn.Module, nn.Module]:
    body = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8))
    head = nn.Linear(8, 3)
    return body, head


def test_head_body_groups_default_to_a_single_rate() -> None:
    body, head = _body_and_head()
    groups = head_body_param_groups(body, head, body_weight_decay=0.1)
    assert [g["name"] for g in groups] == ["body", "body_no_decay", "head", "head_no_decay"]
    ref = param_groups([body, head], 0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert decayed == {id(p) for p in ref[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(body.parameters())) + len(list(head.parameters()))


def test_head_decays_faster_than_body() -> None:
    torch.manual_seed(0)
    body, head = _body_and_head()
    groups = head_body_param_groups(body, head, body_weight_decay=0.03, head_weight_decay=3.0, head_lr_scale=2.0)
    opt = build_optimizer(groups, name="adafactor", lr=1.0)
    set_lr(opt, 0.01)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {
        "body": 0.01, "body_no_decay": 0.01, "head": 0.02, "head_no_decay": 0.02}
    before = {"body": body[0].weight.detach().clone(), "head": head.weight.detach().clone(),
              "bias": head.bias.detach().clone()}
    for p in list(body.parameters()) + list(head.parameters()):
        p.grad = torch.zeros_like(p)  # isolate the decay: a zero gradient makes a zero update
    opt.step()
    torch.testing.assert_close(body[0].weight.detach(), before["body"] * (1 - 0.01 * 0.03))
    torch.testing.assert_close(head.weight.detach(), before["head"] * (1 - 0.02 * 3.0))
    torch.testing.assert_close(head.bias.detach(), before["bias"])


def test_shared_parameters_are_refused() -> None:
    body, _ = _body_and_head()
    with pytest.raises(ValueError, match="both head and body"):
        head_body_param_groups(body, body[2], body_weight_decay=0.1)
