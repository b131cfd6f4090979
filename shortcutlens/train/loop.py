"""The training loop: one pretext task, an optional lens, read top to bottom.

Per step (Minderer et al. 2020 for the lens; docs/architecture.md for the data flow)::

    x  = batch(step)                          uint8 -> float on the device
    x  = shortcut(x); x = augment(x)          benchmarks only / kornia on the device
    v, t = pretext.views(x)                   what the feature extractor sees
    v' = lens(v)                              the lens edits exactly those pixels
    F minimises pretext.loss(F(v'), t)        the lens minimises its objective's loss + λ·rec

The lens's side of the step — its objective (``lens.mode``), how its gradient reaches it, the raw batch —
is ``shortcutlens.adversary``'s: ``train_step`` calls ``objective.play`` once.

Under torchrun the backbone and the pretext head are one module (``Player``) wrapped in one
``DistributedDataParallel`` — or sharded with FSDP2 (``trainer.strategy=fsdp``) — and the lens in its
own DDP; every forward pass goes through the wrappers, so DDP's gradient hooks (or FSDP's
reduce-scatter) fire for every parameter, in each mode. Rank 0 logs, checkpoints and probes; every
rank resumes from the same checkpoint.

Everything random is seeded from ``(seed, rank, step)`` at the start of each step and the batch is a
pure function of the step, so a run resumed from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pretexts import Pretext
from shortcutlens import distributed as dist
from shortcutlens.adversary import Player, create_objective
from shortcutlens.checkpoint import NonFiniteLossError, remove_stale_temporaries, unwrap
from shortcutlens.data import ImageData
from shortcutlens.data.augment import build_augment
from shortcutlens.data.loader import BatchLoader, to_float
from shortcutlens.data.shortcuts import Shortcut, shortcut_views
from shortcutlens.flops import flop_counter, training_compute
from shortcutlens.train import measure, state
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig, warn_long_warmup
from shortcutlens.train.optim import build_optimizer, lr_at, param_groups, set_lr
from shortcutlens.train.scaling_recipe import head_body_param_groups
from shortcutlens.visualize import save_png


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1)


def resolve_amp(amp: str, device: torch.device) -> bool:
    if amp not in ("auto", "bf16", "off"):
        raise ValueError(f"Unknown amp setting '{amp}'. Valid settings: auto, bf16, off")
    return (amp == "auto" and device.type == "cuda") or amp == "bf16"


class Trainer:
    """Owns the models, optimizers and loader of one run; ``fit()`` trains and probes.

    Args:
        backbone, pretext, lens, shortcut: the components (``lens``/``shortcut`` may be None).
        data: the dataset; SSL trains on ``data.pretrain_split`` (``data.train`` or a ``train_size`` subset of
            it; labels unused), the probe uses the whole train split and test.
        trainer, adversary, probe: typed settings.
        run_dir: where checkpoints, TensorBoard events, metrics.json and PNGs go.
        device: torch device; seed: the run's seed; resume: continue from ``run_dir/checkpoints``.
        spec: names and arguments of the components, stored in checkpoints for rebuilding.
        config: the full resolved config, written into metrics.json.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        pretext: Pretext,
        lens: nn.Module | None,
        shortcut: Shortcut | None,
        data: ImageData,
        trainer: TrainerConfig,
        adversary: AdversaryConfig,
        probe: ProbeConfig,
        run_dir: str | Path,
        device: torch.device,
        seed: int = 0,
        resume: bool = False,
        spec: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.adv, self.probe_cfg = trainer, adversary, probe
        self.run_dir = Path(run_dir)
        self.device, self.seed, self.resume = device, seed, resume
        self.spec, self.config = spec or {}, config or {}
        self.data, self.shortcut = data, shortcut
        self.rank, self.world = dist.rank(), dist.world_size()
        self.amp = resolve_amp(trainer.amp, device)
        warn_long_warmup(trainer)
        self.objective = (create_objective(adversary.mode, pretext=pretext, rec_weight=adversary.rec_weight,
                                           reverse_scale=adversary.reverse_scale, feed_raw=adversary.feed_raw)
                          if lens is not None else None)
        if self.objective is not None:  # lens.mode=auto resolved: metrics.json and TensorBoard name the objective
            self.adv = replace(adversary, mode=self.objective.name)

        if trainer.strategy not in dist.STRATEGIES:
            raise ValueError(f"Unknown strategy '{trainer.strategy}'. Valid strategies: {', '.join(dist.STRATEGIES)}")

        memory_format = torch.channels_last if trainer.channels_last else torch.preserve_format
        backbone, pretext = backbone.to(device, memory_format=memory_format), pretext.to(device)
        if trainer.sync_bn and self.world > 1:
            backbone, pretext = dist.convert_sync_batchnorm(backbone, device), dist.convert_sync_batchnorm(pretext, device)
        self.backbone, self.pretext = backbone, pretext
        self.lens = lens.to(device) if lens is not None else None
        self.player = Player(backbone, pretext)  # the plain module; DDP/compile wrap it in train_player
        self.fsdp = trainer.strategy == "fsdp" and self.world > 1
        self.eval_copy: Player | None = None
        if self.fsdp:
            # Rank 0 evaluates alone (probe, pretext accuracy) on whole weights: a host copy, refreshed from
            # the shards by finish(). It starts as the initial weights, for the untrained probe.
            self.eval_copy = copy.deepcopy(self.player).cpu() if self.rank == 0 else None
            train_player = dist.shard_fsdp(self.player, dist.fsdp_units(backbone))
        else:
            train_player = dist.wrap_ddp(self.player, device, find_unused_parameters=trainer.find_unused_parameters)
        train_lens = dist.wrap_ddp(self.lens, device) if self.lens is not None else None
        # Built after sharding: under FSDP these are the local shards, so optimizer state is sharded too.
        self.model_params = list(self.player.parameters())
        if trainer.head_weight_decay is None:
            groups = param_groups([self.backbone, self.pretext], trainer.weight_decay)
        else:  # Scaling ViT: a much higher decay on the head than on the body
            groups = head_body_param_groups(self.backbone, self.pretext, body_weight_decay=trainer.weight_decay,
                                            head_weight_decay=trainer.head_weight_decay)
        self.optimizer = build_optimizer(groups, name=trainer.optimizer, lr=trainer.lr, momentum=trainer.momentum)
        self.lens_optimizer = torch.optim.Adam(self.lens.parameters(), lr=adversary.lr) if self.lens is not None else None
        # Both players' leaves, for the objective's last backward pass (FSDP's shards are not the graph's leaves).
        self.game_params = (None if self.fsdp or self.lens is None else
                            [p for p in [*self.model_params, *self.lens.parameters()] if p.requires_grad])
        compile_ = torch.compile if trainer.compile else (lambda m: m)
        self.train_player: nn.Module = compile_(train_player)
        self.train_lens: nn.Module | None = compile_(train_lens) if train_lens is not None else None
        self.augment = build_augment(trainer.augment, image_size=data.image_size).to(device)
        self.loader = BatchLoader(data.pretrain_split, batch_size=trainer.batch_size, seed=seed, device=device,
                                  rank=self.rank, world_size=self.world)
        self.step = 0
        self.extra_state: dict[str, Any] = {}
        self.log_window: dict[str, list[torch.Tensor]] = {}  # per-step metrics since the last log step
        self.writer = None

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(step_seed(self.seed, self.rank, step))
        lr = lr_at(step, base_lr=self.cfg.lr, total_steps=self.cfg.steps, warmup_steps=self.cfg.warmup_steps,
                   schedule=self.cfg.schedule, cooldown_steps=self.cfg.cooldown_steps, timescale=self.cfg.rsqrt_timescale)
        set_lr(self.optimizer, lr)
        x, _ = self.loader.batch(step)
        inputs, targets = self.make_views(to_float(x), augment=self.augment)
        if self.cfg.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        self.optimizer.zero_grad(set_to_none=True)
        if self.lens_optimizer is not None:
            self.lens_optimizer.zero_grad(set_to_none=True)
        if self.objective is None:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, _, metrics = self.train_player(inputs, targets)
            loss.backward()
        else:  # the lens's side: forward passes and every backward pass (shortcutlens.adversary)
            metrics = self.objective.play(player=self.train_player, lens=self.train_lens, inputs=inputs, targets=targets,
                                          amp=self.amp, params=self.game_params, update_lens=self.lens_learns(step))
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model_params, self.cfg.grad_clip)
        self.optimizer.step()
        if self.lens_optimizer is not None and self.lens_learns(step):
            self.lens_optimizer.step()
        metrics["lr"] = torch.tensor(lr)
        return metrics

    def lens_learns(self, step: int) -> bool:  # lens.update_every: the lens takes a gradient step
        return step % self.adv.update_every == 0

    def make_views(self, x: torch.Tensor, *, augment: nn.Module | None = None, clean: bool = False,
                   pretext: Pretext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` in [0, 1] -> ``(inputs, targets)``: shortcut (left out when ``clean``),
        augmentation, the pretext's views, and a per-instance cue stamped on the views."""
        pretext = pretext or self.pretext
        return shortcut_views(self.shortcut, x, pretext.views, sources=pretext.view_sources, augment=augment, clean=clean)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.run_dir / "checkpoints" / "latest.pt"
        if self.rank == 0:  # one training process per run directory; then what a kill left behind can go
            from shortcutlens.run_lock import RunLock

            self.run_lock = RunLock(self.run_dir).acquire()
            remove_stale_temporaries(ckpt_path.parent)
            remove_stale_temporaries(self.run_dir)  # .metrics.json.tmp, .config.json.tmp
        if dist.broadcast_object(self.resume and ckpt_path.is_file()):  # rank 0 decides, every rank loads
            self.load(ckpt_path)
        elif self.probe_cfg.untrained and self.rank == 0:
            self.extra_state["probe_untrained"] = self.run_probe(desc="probe (untrained)")["accuracy"]
            if self.eval_copy is not None:
                self.eval_copy.cpu()
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step)
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", disable=not (self.cfg.progress and self.rank == 0),
                   dynamic_ncols=True)
        window = self.log_window  # restored by load(): a resumed run's means cover the same steps
        last_log, last_step = time.perf_counter(), self.step
        images_per_step = self.cfg.batch_size * self.world
        self.player.train()
        while self.step < self.cfg.steps:
            if "flops_per_step" not in self.extra_state:
                # The compute axis of scaling-law fits: the mean of one lens.update_every cycle's steps.
                with flop_counter() as counter:
                    metrics = self.train_step(self.step)
                counted = self.extra_state.setdefault("flops_counted", [])
                counted.append(int(counter.get_total_flops()) * self.world)
                if len(counted) >= (self.adv.update_every if self.lens is not None else 1):
                    self.extra_state["flops_per_step"] = sum(self.extra_state.pop("flops_counted")) // len(counted)
            else:
                metrics = self.train_step(self.step)
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            self.step += 1
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                # The only host-device synchronisation: once per logging interval.
                means = {k: torch.stack(v).float().mean().item() for k, v in window.items()}
                window.clear()
                now = time.perf_counter()
                means["images_per_s"] = images_per_step * (self.step - last_step) / max(now - last_log, 1e-9)
                last_log, last_step = now, self.step
                if not math.isfinite(means["loss"]):
                    raise NonFiniteLossError(f"pretext loss became {means['loss']} by step {self.step}; last checkpoint kept")
                means.update(self.lens_diagnostics())
                self.last_metrics = means
                bar.set_postfix({k: f"{means[k]:.3g}" for k in ("loss", "acc", "edit", "edit_ratio", "images_per_s") if k in means})
                if self.writer is not None:
                    for k, v in means.items():
                        self.writer.add_scalar(f"train/{k}", v, self.step)
                    measure.log_line(self.run_dir / "train.log", means, step=self.step, steps=self.cfg.steps)
            if self.lens is not None and self.cfg.image_every and (self.step % self.cfg.image_every == 0 or self.step == self.cfg.steps):
                self.save_edit_grid()
            if self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps:
                if not torch.isfinite(metrics["loss"]).item():  # never overwrite a good checkpoint with NaNs
                    raise NonFiniteLossError(f"pretext loss became non-finite at step {self.step}; last checkpoint kept")
                self.save(ckpt_path)
        bar.close()
        results = self.finish()
        if self.writer is not None:
            self.writer.close()
        if getattr(self, "run_lock", None) is not None:
            self.run_lock.release()
        return results

    # ------------------------------------------------------------------ what the run measures (train/measure.py)
    def lens_diagnostics(self, player: Player | None = None) -> dict[str, float]:
        """``measure.lens_diagnostics`` on 64 images of the current training batch. Rank 0 alone, on the plain
        modules (or the given ``player``); under FSDP, during training, every rank runs it (the sharded
        forward is a collective) and rank 0 keeps the numbers."""
        if self.lens is None or (self.rank != 0 and not (self.fsdp and player is None)):
            return {}
        return measure.lens_diagnostics(player=player or self.player, lens=unwrap(self.lens), shortcut=self.shortcut,
                                        images=self.loader.batch(self.step)[0][:64], make_views=self.make_views,
                                        amp=self.amp, device_type=self.device.type)

    def save_edit_grid(self) -> None:
        if self.rank != 0:
            return
        grid = measure.edit_picture(lens=unwrap(self.lens), shortcut=self.shortcut, images=self.loader.batch(0)[0][:8])
        path = save_png(grid, self.run_dir / "edits" / f"step_{self.step:06d}.png")
        save_png(grid, self.run_dir / "edits" / "latest.png")
        if self.writer is not None:
            self.writer.add_image("lens/edits", grid, self.step, dataformats="HWC")
        self.last_edit_png = str(path)

    def eval_player(self) -> Player:
        """Whole, unwrapped backbone and pretext for evaluation on rank 0 (under FSDP the host copy,
        brought to the device)."""
        if self.eval_copy is not None:
            return self.eval_copy.to(self.device)
        return self.player

    def run_probe(self, *, desc: str = "probe") -> dict[str, Any]:
        """``measure.linear_probe``: the ``linear`` evaluator on the current weights (``probe`` settings)."""
        return measure.linear_probe(player=self.eval_player(), lens=unwrap(self.lens) if self.lens is not None else None,
                                    data=self.data, shortcut=self.shortcut, settings=self.probe_cfg, device=self.device,
                                    amp=self.amp, progress=self.cfg.progress, desc=desc)

    def pretext_accuracy(self, *, with_shortcut: bool, through_lens: bool, max_images: int = 2048) -> float:
        """``measure.test_pretext_accuracy`` on the first ``max_images`` test images."""
        lens = unwrap(self.lens) if (through_lens and self.lens is not None) else None
        return measure.test_pretext_accuracy(
            player=self.eval_player(), lens=lens, images=self.data.test.images[:max_images], make_views=self.make_views,
            clean=not with_shortcut, seed=step_seed(self.seed, 0, 10**9), amp=self.amp, device=self.device)

    def finish(self) -> dict[str, Any]:
        if self.fsdp:  # gather the trained shards into rank 0's whole copy (a collective)
            full = dist.full_model_state_dict(self.player)
            if self.eval_copy is not None:
                self.eval_copy.load_state_dict(full)
        if self.rank != 0:
            dist.barrier()
            return {}
        results: dict[str, Any] = {"step": self.step, "train": getattr(self, "last_metrics", {})}
        if "flops_per_step" in self.extra_state:
            results["flops_per_step"] = self.extra_state["flops_per_step"]
            results["compute"] = training_compute(self.extra_state["flops_per_step"], self.step)
        results["pretext_acc"] = self.pretext_accuracy(with_shortcut=True, through_lens=False)
        if self.shortcut is not None:
            results["pretext_acc_clean"] = self.pretext_accuracy(with_shortcut=False, through_lens=False)
        if self.lens is not None:
            results["pretext_acc_lensed"] = self.pretext_accuracy(with_shortcut=True, through_lens=True)
            results.update(self.lens_diagnostics(self.eval_player()))
            if hasattr(self, "last_edit_png"):
                results["edit_png"] = self.last_edit_png
        probe = self.run_probe()
        results["probe"] = probe
        results["probe_acc"] = probe["accuracy"]
        if "probe_untrained" in self.extra_state:
            results["probe_untrained_acc"] = self.extra_state["probe_untrained"]
        results["config"] = self.config
        results["lens_mode"] = self.adv.mode if self.lens is not None else "none"  # lens.mode=auto resolved
        results["settings"] = {"trainer": asdict(self.cfg), "adversary": asdict(self.adv), "probe": asdict(self.probe_cfg)}
        tmp = self.run_dir / ".metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, default=str))
        tmp.replace(self.run_dir / "metrics.json")
        if self.writer is not None:
            measure.log_results(self.writer, results, spec=self.spec, mode=results["lens_mode"], trainer=self.cfg,
                                seed=self.seed, step=self.step)
        dist.barrier()
        return results

    # ------------------------------------------------------------------ checkpoints (train/state.py)
    def state_dict(self) -> dict[str, Any]:
        return state.capture(self)

    def save(self, path: Path) -> None:
        state.save(self, path)

    def load(self, path: Path) -> None:
        state.restore(self, path)
