"""What a training run measures, with the evaluators (``shortcutlens.eval``) on its live modules.

- every log interval, ``lens_diagnostics``: the ``lens_edit`` measurements on the current training batch;
- every ``trainer.image_every`` steps, ``edit_picture``: input / lensed / |edit| of training images;
- before training (``probe.untrained``) and at the end, ``linear_probe``: the ``linear`` evaluator on a
  ``FeatureSource`` of the run's modules, as ``shortcutlens-probe`` runs it on a checkpoint;
- at the end, ``test_pretext_accuracy`` (with the shortcut, clean, through the lens) and ``log_results``
  (TensorBoard's hparams and the final figures as scalars).

``make_views`` is the trainer's (``Trainer.make_views``), so views are made exactly as in training (a
per-instance shortcut stamped on each view). Every function leaves the modules in the mode it found them.
Images are uint8 ``(B, C, H, W)`` as the data holds them; ``player`` is the loop's ``Player`` (backbone and
pretext head in one module).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shortcutlens.data import ImageData
from shortcutlens.data.loader import to_float
from shortcutlens.data.shortcuts import Shortcut, stamp
from shortcutlens.eval import FeatureSource
from shortcutlens.eval.base import evaluating
from shortcutlens.eval.features import probe_backbone
from shortcutlens.eval.lens_edit import edit_summary, head_scorer, lens_edits, pretext_accuracy
from shortcutlens.eval.linear import LinearEvaluator
from shortcutlens.train.config import ProbeConfig, TrainerConfig
from shortcutlens.visualize import edit_grid

log = logging.getLogger(__name__)

#: ``make_views(x, clean=..., pretext=...) -> (inputs, targets)`` of float images ``x``.
MakeViews = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def lens_diagnostics(*, player: nn.Module, lens: nn.Module, shortcut: Shortcut | None, images: torch.Tensor,
                     make_views: MakeViews, amp: bool, device_type: str) -> dict[str, float]:
    """``edit_ratio`` (edit inside/outside the shortcut's region, on the images with the shortcut) and
    ``eval_acc_raw``/``eval_acc_lensed`` (pretext accuracy on their views without and through the lens).

    The views are scored through ``player`` itself, so under FSDP the sharded forward runs on every rank."""
    x = to_float(images)
    region = shortcut.regions(x) if shortcut is not None else None
    out = {k: v for k, v in edit_summary(lens_edits(lens, stamp(shortcut, x)), region).items() if k == "edit_ratio"}
    with evaluating(player):  # the views too are made in eval mode, as test_pretext_accuracy makes them
        views = [make_views(x, pretext=player.pretext)]
        out["eval_acc_raw"], out["eval_acc_lensed"] = pretext_accuracy(
            lambda inputs, targets: player(inputs, targets)[2]["acc"], views, lenses=(None, lens), amp=amp,
            device_type=device_type)
    return out


def edit_picture(*, lens: nn.Module, shortcut: Shortcut | None, images: torch.Tensor) -> np.ndarray:
    """The edit grid (``shortcutlens.visualize.edit_grid``) of ``images`` with the shortcut: uint8 ``(H', W', 3)``."""
    x = stamp(shortcut, to_float(images))
    return edit_grid(x, lens.edit(x))


@torch.no_grad()
def test_pretext_accuracy(*, player: nn.Module, lens: nn.Module | None, images: torch.Tensor, make_views: MakeViews,
                          clean: bool, seed: int, amp: bool, device: torch.device) -> float:
    """Pretext accuracy of the head on ``images`` (batches of 256, views seeded once by ``seed``), in eval
    mode (the head too: the patch tasks' heads have dropout), through ``lens`` when given."""
    start = time.perf_counter()
    with evaluating(player):
        torch.manual_seed(seed)
        views = (make_views(to_float(x.to(device)), clean=clean, pretext=player.pretext) for x in images.split(256))
        acc = pretext_accuracy(head_scorer(player.backbone, player.pretext), views, lenses=(lens,), amp=amp,
                               device_type=device.type)[0]
    log.info("pretext accuracy (%s, %s): %.4f on %d test images in %.1f s", "clean" if clean else "with the shortcut",
             "raw" if lens is None else "through the lens", acc, len(images), time.perf_counter() - start)
    return acc


def linear_probe(*, player: nn.Module, lens: nn.Module | None, data: ImageData, shortcut: Shortcut | None,
                 settings: ProbeConfig, device: torch.device, amp: bool, progress: bool,
                 desc: str = "probe") -> dict[str, Any]:
    """The ``linear`` evaluator on clean ``data.train`` images (``settings.max_train`` of them, seed 0)
    replicated to the shortcut's channels, scored on ``data.test``; L2 fixed, or chosen from
    ``settings.l2_grid`` on ``data.val`` and refit on train + val. A trunk trained on a patch task's tiles
    is probed on the mean of its features over the 3×3 grid (``Pretext.probe_backbone``).

    Returns ``{accuracy, train_accuracy, l2, features, train_images, test_images}`` (metrics.json's ``probe``).
    """
    start = time.perf_counter()
    which = settings.features if lens is not None else "raw"
    with evaluating(player, lens):
        source = FeatureSource(backbone=probe_backbone(player.backbone, player.pretext, data.image_size), data=data,
                               lens=lens, shortcut=shortcut, device=device, amp=amp, batch_size=settings.batch_size,
                               progress=progress, seed=0)
        linear = LinearEvaluator(which=[which], l2_grid=list(settings.l2_grid) or [settings.l2], val_split="val",
                                 train_split="train", max_train=settings.max_train, max_iter=settings.max_iter,
                                 precision=settings.precision)
        m = {k.rpartition("/")[2]: v for k, v in linear.run(source)}
    log.info("%s: top-1 %.4f on %d + %d images in %.1f s", desc, m["top1"], m["train_images"], len(data.test),
             time.perf_counter() - start)
    return {"accuracy": m["top1"], "train_accuracy": m["train_top1"], "l2": m["l2"], "features": which,
            "train_images": int(m["train_images"]), "test_images": len(data.test)}


def log_results(writer: Any, results: dict[str, Any], *, spec: dict[str, Any], mode: str, trainer: TrainerConfig,
                seed: int, step: int) -> None:
    """What the run was (TensorBoard's HPARAMS tab compares runs on these) and what it scored, the final
    figures also as ``results/<key>`` scalars at the last step. ``mode``: the lens objective, or ``none``."""
    part = {k: dict(spec.get(k) or {}) for k in ("data", "pretext", "shortcut", "backbone", "lens")}
    size = part["backbone"].get("variant") or part["backbone"].get("depth") or ""
    lens_spec = part["lens"] if mode != "none" else {}
    hparams = {"data": str(part["data"].get("name", "?")), "pretext": str(part["pretext"].get("name", "?")),
               "shortcut": str(part["shortcut"].get("name") or "none"),
               "backbone": f"{part['backbone'].get('name', '?')} {size}".strip(),
               "lens": mode, "lens_constraint": str(lens_spec.get("constraint", "none")),
               "budget": float(lens_spec.get("budget") or 0.0) if lens_spec.get("constraint") == "budget" else 0.0,
               "steps": trainer.steps, "batch_size": trainer.batch_size, "lr": trainer.lr, "seed": seed}
    figures = {k: float(results[k]) for k in ("probe_acc", "probe_untrained_acc", "pretext_acc", "pretext_acc_clean",
                                              "pretext_acc_lensed", "edit_ratio") if isinstance(results.get(k), (int, float))}
    for k, v in figures.items():
        writer.add_scalar(f"results/{k}", v, step)
    writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in figures.items()}, run_name=".")


def log_line(path: Path, means: dict[str, float], *, step: int, steps: int) -> None:
    """One text line per log interval in ``run_dir/train.log``, whether or not the progress bar is on."""
    shown = " ".join(f"{k.replace('_per_s', '/s')} {means[k]:.4g}" for k in
                     ("loss", "acc", "lr", "images_per_s", "edit", "edit_ratio") if k in means)
    with open(path, "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {step}/{steps} {shown}\n")
