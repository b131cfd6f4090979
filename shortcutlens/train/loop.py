"""The training loop: one pretext task, an optional lens, read top to bottom.

Per step (Minderer et al. 2020 for the lens; docs/architecture.md for the data flow)::

    x  = batch(step)                          uint8 -> float on the device
    x  = shortcut(x); x = augment(x)          benchmarks only / kornia on the device
    v, t = pretext.views(x)                   what the feature extractor sees
    v' = lens(v)                              the lens edits exactly those pixels
    F minimises pretext.loss(F(v'), t)        the lens minimises pretext.adversarial_loss(...) + λ·rec

``full`` mode shares one forward and backward pass: a gradient-reversal layer between lens and
backbone hands the lens the negated pretext gradient. ``least_likely``/``random_wrong`` also share the
forward pass, then take two gradients: the backbone sees the lensed images as a detached leaf, the
adversarial loss's gradient with respect to that leaf is taken first and handed to the lens, then the
pretext loss's backward fills the feature extractor's gradients.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pretexts import Pretext
from shortcutlens import distributed as dist
from shortcutlens.checkpoint import NonFiniteLossError, load_checkpoint, save_checkpoint, unwrap
from shortcutlens.data import ImageData
from shortcutlens.data.augment import build_augment
from shortcutlens.data.loader import BatchLoader, to_float
from shortcutlens.data.shortcuts import Shortcut, edit_ratio, shortcut_views, stamp
from shortcutlens.eval.features import extract_features, probe_backbone
from shortcutlens.eval.linear import linear_probe
from shortcutlens.flops import flop_counter, training_compute
from shortcutlens.lens import reverse_gradient
from shortcutlens.train.config import AdversaryConfig, ProbeConfig, TrainerConfig
from shortcutlens.train.optim import build_optimizer, lr_at, param_groups, set_lr
from shortcutlens.train.scaling_recipe import head_body_param_groups
from shortcutlens.visualize import edit_grid, save_png


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1)


class Player(nn.Module):
    """The feature extractor's side of the game as one module: backbone, pretext head and losses.

    One module so that DDP and FSDP see a single forward pass that uses every parameter (a head called
    outside its wrapper's forward would never have its gradient synchronised, and FSDP would find its
    weights still sharded).

    ``forward(inputs, targets, n, adv_mode)`` -> ``(loss, adv_loss | None, metrics)``: the pretext loss on
    ``inputs[:n]`` plus, when ``inputs`` is longer, the same loss on the raw copies ``inputs[n:]``
    (``feed_raw``); ``adv_mode`` adds the lens's adversarial loss on ``inputs[:n]``.
    """

    def __init__(self, backbone: nn.Module, pretext: Pretext) -> None:
        super().__init__()
        self.backbone, self.pretext = backbone, pretext

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, n: int | None = None,
                adv_mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        n = inputs.shape[0] if n is None else n
        features = self.pretext.embed(self.backbone, inputs)
        loss, metrics = self.pretext.loss(features[:n], targets)
        if features.shape[0] > n:
            raw_loss, raw_metrics = self.pretext.loss(features[n:], targets)
            loss = loss + raw_loss
            metrics["acc_raw"] = raw_metrics["acc"]
        adv_loss = self.pretext.adversarial_loss(features[:n], targets, adv_mode) if adv_mode else None
        return loss, adv_loss, metrics


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
        if lens is not None and adversary.mode != "full" and not pretext.classification:
            raise ValueError(
                f"lens mode '{adversary.mode}' needs a classification pretext; {type(pretext).__name__} is not one. "
                "Use lens.mode=full."
            )

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
        compile_ = torch.compile if trainer.compile else (lambda m: m)
        self.train_player: nn.Module = compile_(train_player)
        self.train_lens: nn.Module | None = compile_(train_lens) if train_lens is not None else None
        self.augment = build_augment(trainer.augment, image_size=data.image_size).to(device)
        self.loader = BatchLoader(data.pretrain_split, batch_size=trainer.batch_size, seed=seed, device=device,
                                  rank=self.rank, world_size=self.world)
        self.step = 0
        self.extra_state: dict[str, Any] = {}
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
        targeted = self.lens is not None and self.adv.mode != "full"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.lens is None:
                loss, _, metrics = self.train_player(inputs, targets)
                total = loss
            else:
                lensed = self.train_lens(inputs)
                rec = (lensed.float() - inputs.float()).pow(2).mean()
                n = inputs.shape[0]
                if targeted:
                    # A leaf: the adversarial gradient stops here and is handed to the lens below.
                    seen = leaf = lensed.detach().requires_grad_()
                else:
                    # One pass for both players: identity forward, negated gradient into the lens.
                    seen = reverse_gradient(lensed, self.adv.reverse_scale)
                if self.adv.feed_raw:
                    seen = torch.cat([seen, inputs])
                loss, adv_loss, metrics = self.train_player(seen, targets, n, self.adv.mode if targeted else None)
                metrics["rec"] = rec.detach()
                metrics["edit"] = (lensed.detach() - inputs).abs().mean()
                if targeted:
                    metrics["adv_loss"] = (adv_loss + self.adv.rec_weight * rec).detach()
                else:
                    total = loss + self.adv.rec_weight * rec
        if not targeted:
            total.backward()
        else:
            # ∂adv/∂x' first: the pretext backward below frees the graph (and FSDP's gathered weights).
            # (backward(inputs=...) rather than autograd.grad: the FLOP counter's module hooks reject the latter.)
            adv_loss.backward(inputs=[leaf], retain_graph=True)
            grad_seen, leaf.grad = leaf.grad, None
            loss.backward()
            ((lensed * grad_seen).sum() + self.adv.rec_weight * rec).backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model_params, self.cfg.grad_clip)
        self.optimizer.step()
        if self.lens_optimizer is not None:
            self.lens_optimizer.step()
        metrics["lr"] = torch.tensor(lr)
        return metrics

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
        window: dict[str, list[torch.Tensor]] = {}
        last_log, last_step = time.perf_counter(), self.step
        images_per_step = self.cfg.batch_size * self.world
        self.player.train()
        while self.step < self.cfg.steps:
            if "flops_per_step" not in self.extra_state:
                # Counted once, on the first step: the compute axis of scaling-law fits.
                with flop_counter() as counter:
                    metrics = self.train_step(self.step)
                self.extra_state["flops_per_step"] = int(counter.get_total_flops()) * self.world
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
                    # One text line per interval in run_dir/train.log, whether or not the progress bar is on.
                    shown = " ".join(f"{k.replace('_per_s', '/s')} {means[k]:.4g}" for k in
                                     ("loss", "acc", "lr", "images_per_s", "edit", "edit_ratio") if k in means)
                    with open(self.run_dir / "train.log", "a") as log:
                        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {self.step}/{self.cfg.steps} {shown}\n")
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
        return results

    # ------------------------------------------------------------------ lens diagnostics
    @torch.no_grad()
    def lens_diagnostics(self, player: Player | None = None) -> dict[str, float]:
        """Edit inside/outside the shortcut's region, on upright shortcut-bearing training images.

        Rank 0 alone, on the plain modules (or the given ``player``); under FSDP, during training, every
        rank runs it (the sharded forward is a collective) and rank 0 keeps the numbers."""
        if self.lens is None or (self.rank != 0 and not (self.fsdp and player is None)):
            return {}
        player = player or self.player
        x, _ = self.loader.batch(self.step)
        x = stamp(self.shortcut, to_float(x[:64]))
        lens = unwrap(self.lens)
        out: dict[str, float] = {}
        edit = lens.edit(x) - x
        region = self.shortcut.region(x.shape[-2], x.shape[-1], x.device) if self.shortcut is not None else None
        if region is not None:
            out["edit_ratio"] = edit_ratio(edit, region)
        # Pretext accuracy on raw and on lensed views of the same images (eval mode): how much of the
        # task the lens has taken away, and how much the raw images still give away.
        player.eval()
        inputs, targets = self.make_views(to_float(self.loader.batch(self.step)[0][:64]), pretext=player.pretext)
        for name, seen in (("eval_acc_raw", inputs), ("eval_acc_lensed", lens.edit(inputs))):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out[name] = player(seen, targets)[2]["acc"].item()
        player.train()
        return out

    def save_edit_grid(self) -> None:
        if self.rank != 0:
            return
        x, _ = self.loader.batch(0)
        x = stamp(self.shortcut, to_float(x[:8]))
        grid = edit_grid(x, unwrap(self.lens).edit(x))
        path = save_png(grid, self.run_dir / "edits" / f"step_{self.step:06d}.png")
        save_png(grid, self.run_dir / "edits" / "latest.png")
        if self.writer is not None:
            self.writer.add_image("lens/edits", grid, self.step, dataformats="HWC")
        self.last_edit_png = str(path)

    # ------------------------------------------------------------------ probe and results
    def eval_player(self) -> Player:
        """Whole, unwrapped backbone and pretext for evaluation on rank 0 (under FSDP the host copy,
        brought to the device)."""
        if self.eval_copy is not None:
            return self.eval_copy.to(self.device)
        return self.player

    def run_probe(self, *, desc: str = "probe") -> dict[str, Any]:
        player = self.eval_player()
        lens = unwrap(self.lens) if self.lens is not None else None
        # A trunk trained on a patch task's tiles embeds whole images as the mean over the 3×3 grid (a
        # ResNet, or a backbone built for the whole image, is probed as it is).
        backbone = probe_backbone(player.backbone, player.pretext, self.data.train.images.shape[-1])
        which = self.probe_cfg.features if lens is not None else "raw"
        kw = {"device": self.device, "batch_size": self.probe_cfg.batch_size, "lens": lens, "which": which,
              "amp": self.amp, "progress": self.cfg.progress}
        train = self.data.train
        if 0 < self.probe_cfg.max_train < len(train):
            keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: self.probe_cfg.max_train]
            train = train.subset(keep.sort().values)
        test = self.data.test
        chans = self.shortcut.out_channels(train.images.shape[1]) if self.shortcut is not None else train.images.shape[1]
        if chans != train.images.shape[1]:  # the backbone was built for the shortcut's channels (chromatic
            # aberration makes grayscale colour): probe the clean images replicated to them
            train, test = (type(s)(s.images.expand(-1, chans, -1, -1), s.labels) for s in (train, test))
        train_x, train_y = extract_features(backbone, train, desc=f"{desc}: train features", **kw)
        test_x, test_y = extract_features(backbone, test, desc=f"{desc}: test features", **kw)
        grid: dict[str, Any] = {"l2": self.probe_cfg.l2}
        if self.probe_cfg.l2_grid:  # choose the L2 strength on the validation split
            val = self.data.val
            if chans != val.images.shape[1]:
                val = type(val)(val.images.expand(-1, chans, -1, -1), val.labels)
            val_x, val_y = extract_features(backbone, val, desc=f"{desc}: val features", **kw)
            grid = {"l2": list(self.probe_cfg.l2_grid), "val_x": val_x, "val_y": val_y}
        result = linear_probe(train_x, train_y, test_x, test_y, num_classes=self.data.num_classes,
                              max_iter=self.probe_cfg.max_iter, **grid)
        return {"accuracy": result.accuracy, "train_accuracy": result.train_accuracy, "l2": result.l2, "features": which,
                "train_images": len(train), "test_images": len(self.data.test)}

    @torch.no_grad()
    def pretext_accuracy(self, *, with_shortcut: bool, through_lens: bool, max_images: int = 2048) -> float:
        """Pretext accuracy of the trained head on test images (eval mode)."""
        player = self.eval_player()
        backbone, pretext = player.backbone, player.pretext
        lens = unwrap(self.lens) if (through_lens and self.lens is not None) else None
        player.eval()  # the head too: the patch tasks' heads have dropout
        torch.manual_seed(step_seed(self.seed, 0, 10**9))
        correct, total = 0.0, 0
        images = self.data.test.images[:max_images]
        for start in range(0, images.shape[0], 256):
            x = to_float(images[start : start + 256].to(self.device))
            inputs, targets = self.make_views(x, clean=not with_shortcut, pretext=pretext)
            if lens is not None:
                inputs = lens.edit(inputs)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                _, m = pretext.loss(pretext.embed(backbone, inputs), targets)
            correct += m["acc"].item() * targets.shape[0]
            total += targets.shape[0]
        player.train()
        return correct / max(total, 1)

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
        results["settings"] = {"trainer": asdict(self.cfg), "adversary": asdict(self.adv), "probe": asdict(self.probe_cfg)}
        tmp = self.run_dir / ".metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, default=str))
        tmp.replace(self.run_dir / "metrics.json")
        if self.writer is not None:
            # What the run was (TensorBoard's HPARAMS tab compares runs on these) and what it scored.
            part = {k: dict(self.spec.get(k) or {}) for k in ("data", "pretext", "shortcut", "backbone", "lens")}
            size = part["backbone"].get("variant") or part["backbone"].get("depth") or ""
            lens_spec = part["lens"] if self.lens is not None else {}
            hparams = {"data": str(part["data"].get("name", "?")), "pretext": str(part["pretext"].get("name", "?")),
                       "shortcut": str(part["shortcut"].get("name") or "none"),
                       "backbone": f"{part['backbone'].get('name', '?')} {size}".strip(),
                       "lens": self.adv.mode if self.lens is not None else "none",
                       "lens_constraint": str(lens_spec.get("constraint", "none")),
                       "budget": float(lens_spec.get("budget") or 0.0) if lens_spec.get("constraint") == "budget" else 0.0,
                       "steps": self.cfg.steps, "batch_size": self.cfg.batch_size, "lr": self.cfg.lr, "seed": self.seed}
            figures = {k: float(results[k]) for k in ("probe_acc", "probe_untrained_acc", "pretext_acc", "pretext_acc_clean",
                                                      "pretext_acc_lensed", "edit_ratio") if isinstance(results.get(k), (int, float))}
            for k, v in figures.items():  # the probe results as scalars too, at the final step
                self.writer.add_scalar(f"results/{k}", v, self.step)
            self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in figures.items()}, run_name=".")
        dist.barrier()
        return results

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Whole weights and optimizer state; under FSDP gathered on rank 0 (a collective: every rank
        calls it; the other ranks get partial dicts to throw away)."""
        if self.fsdp:
            full = dist.full_model_state_dict(self.player)
            models = {name: {k[len(name) + 1 :]: v for k, v in full.items() if k.startswith(name + ".")}
                      for name in ("backbone", "pretext")}
            optimizer = dist.full_optimizer_state_dict(self.player, self.optimizer)  # keyed by parameter name
        else:
            models = {"backbone": unwrap(self.backbone).state_dict(), "pretext": unwrap(self.pretext).state_dict()}
            optimizer = self.optimizer.state_dict()
        state: dict[str, Any] = {
            "step": self.step,
            "seed": self.seed,
            "spec": self.spec,
            **models,
            "optimizer": optimizer,
            "strategy": "fsdp" if self.fsdp else "ddp",
            "extra": dict(self.extra_state),
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.lens is not None:
            state["lens"] = unwrap(self.lens).state_dict()
            state["lens_optimizer"] = self.lens_optimizer.state_dict()
        return state

    def save(self, path: Path) -> None:
        state = self.state_dict() if (self.rank == 0 or self.fsdp) else None
        if self.rank == 0:
            save_checkpoint(state, path)
        dist.barrier()

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        saved_with = state.get("strategy", "ddp")
        if saved_with != ("fsdp" if self.fsdp else "ddp"):
            raise ValueError(f"{path} holds {saved_with} optimizer state; resume it with trainer.strategy={saved_with} "
                             "(on several ranks for fsdp)")
        if self.fsdp:  # every rank read the whole checkpoint; each keeps its own shard
            dist.load_full_model_state_dict(self.player, {f"{name}.{k}": v for name in ("backbone", "pretext")
                                                         for k, v in state[name].items()})
            dist.load_full_optimizer_state_dict(self.player, self.optimizer, state["optimizer"])
        else:
            unwrap(self.backbone).load_state_dict(state["backbone"])
            unwrap(self.pretext).load_state_dict(state["pretext"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lens is not None:
            if "lens" not in state:
                raise ValueError(f"{path} was trained without a lens; cannot resume it with one")
            unwrap(self.lens).load_state_dict(state["lens"])
            self.lens_optimizer.load_state_dict(state["lens_optimizer"])
        self.step = int(state["step"])
        self.extra_state = dict(state.get("extra", {}))
        torch.set_rng_state(state["rng_cpu"].cpu())
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
