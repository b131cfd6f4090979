"""Data parallelism is exact: two gloo ranks on batch B train the same model as one process on the
combined batch 2B.

Two ranks are spawned once for the module; each runs every variant for a few steps of the library's
``Trainer.train_step`` (DDP, and FSDP2 sharding) and saves what it ended with. The test process runs the
same variants in a single process on the combined batch. The views are deterministic (all four
rotations, no augmentation, no random targets) and BatchNorm is synchronised (``trainer.sync_bn``), so
the two must agree to float rounding — and the ranks must agree bitwise. A variant without
``sync_bn`` shows the comparison has teeth: per-rank batch statistics give a different model.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from shortcutlens.build import build_components, build_data
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.loop import Trainer

STEPS, BATCH = 3, 8  # per rank; the single-process reference takes 2 × BATCH
# Small enough that training is not chaotic: at SGD 0.1 this tiny net turns a 1e-7 perturbation of the
# weights into 6e-3 within three steps (measured), and float rounding alone would fail a 1e-5 bound.
LR = 0.01
RESNET = {"name": "resnet", "depth": 18, "width": 0.125}
# GELU and LayerNorm: no kinks. With the ResNet's ReLUs, feeding raw images (exact uint8 levels, flat
# regions) puts whole regions of pre-activations within rounding of 0 and one step's gradient then
# differs by 1e-3 between *any* two batchings of the same images (checked: it vanishes with GELU).
VIT = {"name": "vit", "variant": "Ti/4", "width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2}
VIT_CKPT = {**VIT, "grad_checkpointing": True}  # recomputed blocks under FSDP, with the lens's two backwards
SPEC = {
    "data": {"name": "synthetic", "image_size": 16, "num_train": 64, "num_test": 16},
    "pretext": {"name": "rotation", "all_rotations": True},
    "shortcut": {"name": "none"},
}
# name: (backbone, strategy, lens mode or None, feed_raw, sync_bn)
VARIANTS = {
    "ddp": (RESNET, "ddp", None, False, True),
    "ddp_least_likely": (RESNET, "ddp", "least_likely", False, True),
    "ddp_vit_full_feed_raw": (VIT, "ddp", "full", True, True),
    "ddp_no_sync_bn": (RESNET, "ddp", None, False, False),
    "fsdp": (RESNET, "fsdp", None, False, True),
    "fsdp_vit_least_likely": (VIT_CKPT, "fsdp", "least_likely", False, True),
    "fsdp_vit_full_adafactor": (VIT, "fsdp", "full", False, True),
}
DDP_VARIANTS = [v for v in VARIANTS if v.startswith("ddp")]


def make_trainer(variant: str, batch: int, run_dir: Path) -> Trainer:
    backbone, strategy, mode, feed_raw, sync_bn = VARIANTS[variant]
    spec = {**SPEC, "backbone": backbone,
            "lens": {"name": "unet", "width": 4, "constraint": "penalty"} if mode else {"name": "none"}}
    torch.manual_seed(0)
    data = build_data(spec)
    parts = build_components(spec, in_chans=data.channels, image_size=data.image_size)
    if parts.lens is not None:
        with torch.no_grad():  # a lens that is not the identity, so its edits matter
            parts.lens.out.weight.normal_(0, 0.05)
    optimizer = "adafactor" if "adafactor" in variant else "sgd"
    trainer = Trainer(backbone=parts.backbone, pretext=parts.pretext, lens=parts.lens, shortcut=parts.shortcut, data=data,
                      trainer=TrainerConfig(batch_size=batch, steps=STEPS, lr=LR, warmup_steps=0, progress=False,
                                            strategy=strategy, sync_bn=sync_bn, optimizer=optimizer),
                      adversary=AdversaryConfig(mode=mode or "full", feed_raw=feed_raw, rec_weight=1.0),
                      probe=ProbeConfig(untrained=False), run_dir=run_dir, device=torch.device("cpu"))
    if trainer.lens_optimizer is not None:
        # SGD instead of the lens's Adam, for this comparison only: Adam's first steps are ≈ lr·sign(g), so
        # a gradient that is 0 up to rounding moves by ±lr depending on the rounding.
        trainer.lens_optimizer = torch.optim.SGD(trainer.lens.parameters(), lr=LR)
    if optimizer == "adafactor":
        # Adafactor's first step is G/|G| elementwise for vectors, the same sign problem (the attention's
        # key bias has a gradient of exactly 0 up to rounding: softmax ignores it); ε² = 1e-6 keeps the
        # update of a rounding-noise gradient at ~1e-6. And float32 momentum: a bfloat16 one rounds to
        # 2^-8, so a rounding difference can move an update by 0.4%.
        for group in trainer.optimizer.param_groups:
            group.update(eps=(1e-6, group["eps"][1]), momentum_dtype="float32")
    return trainer


def final_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Whole weights after training (gathered under FSDP: every rank calls, rank 0 gets them)."""
    state = trainer.state_dict()
    out = {f"{m}.{k}": v for m in ("backbone", "pretext", "lens") for k, v in state.get(m, {}).items()}
    return {k: v.detach().cpu().clone() for k, v in out.items()}


def worker(rank: int, port: int, out_dir: str, variants: list[str], resume_variant: str | None) -> None:
    from shortcutlens import distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    dist.init(torch.device("cpu"))
    results = {}
    for variant in variants:
        trainer = make_trainer(variant, BATCH, Path(out_dir) / variant)
        for step in range(STEPS):
            trainer.train_step(step)
        local = {n: (p.to_local() if hasattr(p, "to_local") else p).detach().clone()  # shards under FSDP
                 for n, p in trainer.player.named_parameters()}
        results[variant] = {"state": final_state(trainer), "local": local}
    if resume_variant:  # checkpoints: save after 2 steps, reload into a fresh trainer, take step 3 in both
        a = make_trainer(resume_variant, BATCH, Path(out_dir) / "ckpt")
        for step in range(2):
            a.train_step(step)
        a.step = 2
        path = Path(out_dir) / "ckpt" / "latest.pt"
        a.save(path)
        b = make_trainer(resume_variant, BATCH, Path(out_dir) / "ckpt")
        b.load(path)
        a.train_step(2)
        b.train_step(2)
        results["resumed"] = {"continued": final_state(a), "resumed": final_state(b), "file": str(path)}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    dist.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(out: Path, variants: list[str], resume_variant: str | None = None) -> list[dict]:
    torch.multiprocessing.spawn(worker, args=(free_port(), str(out), variants, resume_variant), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def run_single(out: Path, variants: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The reference: one process, the combined batch."""
    results = {}
    for variant in variants:
        trainer = make_trainer(variant, 2 * BATCH, out)
        for step in range(STEPS):
            trainer.train_step(step)
        results[variant] = final_state(trainer)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(tmp_path_factory.mktemp("ddp"), DDP_VARIANTS)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    return run_single(tmp_path_factory.mktemp("single"), DDP_VARIANTS)


def trained(variant: str, state: dict[str, torch.Tensor]) -> set[str]:
    """Names of the tensors that moved away from their initial value."""
    init = final_state(make_trainer(variant, BATCH, Path("/nonexistent")))
    return {k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, state[k])}


def assert_close(got: dict, want: dict, *, atol: float) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        if value.is_floating_point():
            torch.testing.assert_close(got[name], value, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant", [v for v in DDP_VARIANTS if v != "ddp_no_sync_bn"])
def test_ddp_ranks_end_identical_and_equal_to_one_process_on_the_combined_batch(ranks, single, variant):
    a, b = ranks[0][variant]["state"], ranks[1][variant]["state"]
    for name in a:
        if "running_" not in name and "num_batches" not in name:
            assert torch.equal(a[name], b[name]), f"{name} differs between ranks"
    assert_close(a, single[variant], atol=1e-5)
    # It really trained — backbone, head and lens — rather than comparing initial weights.
    moved = trained(variant, a)
    for module in ("backbone.", "pretext.") + (("lens.",) if VARIANTS[variant][2] else ()):
        assert any(k.startswith(module) for k in moved), module


def test_without_sync_bn_ranks_agree_but_differ_from_the_combined_batch(ranks, single):
    a, b = ranks[0]["ddp_no_sync_bn"]["state"], ranks[1]["ddp_no_sync_bn"]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a if "running_" not in k and "num_batches" not in k)
    diff = max((a[k] - v).abs().max().item() for k, v in single["ddp_no_sync_bn"].items() if v.is_floating_point())
    assert diff > 1e-4
