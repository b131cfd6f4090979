"""Typed settings of the training loop and the adversarial lens game (defaults live here; the YAML
files under experiments/conf hold only overrides)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field


@dataclass
class TrainerConfig:
    steps: int = 500
    batch_size: int = 128
    optimizer: str = "sgd"          # sgd | adamw | adam | adafactor (Zhai et al. 2022, bf16 momentum)
    lr: float = 0.1                 # SGD 0.1 (Kolesnikov et al. 2019 use 0.1 × batch/256); AdamW ~1e-3
    weight_decay: float = 1e-4
    head_weight_decay: float | None = None  # decoupled head decay (Zhai et al. 2022); None: = weight_decay
    momentum: float = 0.9
    warmup_steps: int = 50
    schedule: str = "cosine"        # cosine | constant | rsqrt
    cooldown_steps: int = 0         # rsqrt: linear cooldown to 0 over the last steps
    rsqrt_timescale: int = 10_000   # rsqrt: lr = base/sqrt(1 + (step - warmup)/timescale)
    grad_clip: float = 0.0          # 0 disables
    augment: list[str] = field(default_factory=list)
    log_every: int = 25
    ckpt_every: int = 500
    image_every: int = 250          # lens-edit grid PNGs (0 disables)
    amp: str = "auto"               # auto (bf16 on CUDA) | bf16 | off
    channels_last: bool = False
    compile: bool = False           # torch.compile the feature extractor (backbone + pretext head) and the lens
    progress: bool = True
    # Under torchrun (see README, "Multi-GPU and multi-node"):
    strategy: str = "ddp"           # ddp (replicate) | fsdp (shard parameters, gradients, optimizer state)
    sync_bn: bool = False           # BatchNorm over the combined batch of all ranks (SyncBatchNorm)
    find_unused_parameters: bool = False  # DDP: for models with parameters that some steps do not use


@dataclass
class AdversaryConfig:
    """How the lens plays against the feature extractor (Minderer et al. 2020; docs/architecture.md)."""

    mode: str = "auto"              # auto (random_wrong, or full for a non-classification pretext) | full |
                                    # least_likely | random_wrong | entropy: shortcutlens.adversary
    rec_weight: float = 0.0         # λ of the reconstruction penalty λ·mean((x − x')²); 0 with a budget
    lr: float = 1e-3                # Adam learning rate of the lens
    feed_raw: bool = False          # also train the feature extractor on the raw batch (the paper does): one
                                    # batch of 2N images, the mean of the two losses; the lens sees the lensed half's gradient only
    reverse_scale: float = 1.0      # gradient-reversal multiplier in full mode
    update_every: int = 1           # the lens learns on every k-th step and only edits on the others (k − 1 of k
                                    # steps then cost a no-lens step plus the lens's forward pass)


@dataclass
class ProbeConfig:
    """The end-of-run linear probe: the ``linear`` evaluator on clean train images, scored on test. Its cost
    is feature extraction, linear in the images: ``max_train`` keeps it to seconds on a CPU (README, "Fast
    feedback"; 0 probes on all of train, e.g. for final numbers)."""

    features: str = "raw"           # raw | lensed | concat
    l2: float = 1e-4
    l2_grid: list[float] = field(default_factory=list)  # non-empty: choose l2 from it on the val split, refit on train + val
    untrained: bool = True          # also probe the backbone at initialisation, for comparison
    batch_size: int = 256           # images per forward pass (on a CPU 256 runs ~1.4x faster than 512: cache)
    max_iter: int = 200
    max_train: int = 10_000         # probe on a fixed random subset (seed 0) of this many training images (0 = all)
    precision: str = "float32"      # the L-BFGS solver's: float32 (10x faster, same top-1 to 0.01 point) | float64


def warn_long_warmup(trainer: TrainerConfig) -> None:
    """A run whose warm-up is as long as the run never reaches its learning rate: say so."""
    if 0 < trainer.steps <= trainer.warmup_steps:
        warnings.warn(f"trainer.warmup_steps={trainer.warmup_steps} >= trainer.steps={trainer.steps}: the learning rate "
                      f"never leaves its warm-up (it ends at {trainer.steps / trainer.warmup_steps:.0%} of trainer.lr); "
                      "lower trainer.warmup_steps", stacklevel=3)
