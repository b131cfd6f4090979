"""Distributed helpers shared by the training loop (sets up ranks, wraps and shards models) and the
contrastive pretext (gathers across them). Plain ``torch.distributed``; launched by ``torchrun``.

The backend follows the device: NCCL for CUDA, gloo for CPU. What is here:

- joining the process group torchrun describes, rank and world size, barriers, broadcasting a decision;
- ``all_gather_with_grad`` (contrastive negatives from every rank);
- ``convert_sync_batchnorm``: BatchNorm over the batch of all ranks, also on the CPU (``GlooSyncBatchNorm``);
- ``wrap_ddp`` and ``shard_fsdp`` (FSDP2 ``fully_shard``, torch >= 2.4), and the whole-state-dict
  gathering and loading that checkpoints of sharded models need.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> None:
    """Join the process group that torchrun describes in the environment (no-op otherwise)."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the gradient of its own slice, summed over ranks.

    ``torch.distributed.all_gather`` alone cuts the graph: the other ranks' embeddings become
    constants and the loss of a contrastive batch loses the gradient through the negatives.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(N, ...)`` on each rank) over ranks to ``(world·N, ...)``, keeping gradients."""
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` as rank ``src`` has it, on every rank (a decision one rank makes, e.g. whether to resume)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ---------------------------------------------------------------------------------------------- BatchNorm
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the gradients too, since every rank's loss depends on the sum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the combined batch of all ranks, for any device and backend (gloo on the CPU).

    ``torch.nn.SyncBatchNorm`` only runs on accelerators; this is the same computation in plain
    autograd: the per-channel sum is all-reduced to the global mean, then the sum of squared deviations
    to the global (biased) variance, both differentiably, so the gradient is that of BatchNorm on the
    concatenated batch. Two small all-reduces per layer: meant for CPU runs and tests, the GPU path
    uses ``torch.nn.SyncBatchNorm`` (see ``convert_sync_batchnorm``). Outside training, or in a single
    process, it is ``torch.nn.BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / self.num_batches_tracked.float()) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` in ``module`` made to normalise over the batch of all ranks.

    Without it each rank normalises by its own batch statistics, so N ranks of batch B train a
    different model than one process on batch N·B. ``torch.nn.SyncBatchNorm`` on accelerators;
    ``GlooSyncBatchNorm`` (same mathematics, plain autograd) on the CPU.
    """
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats).to(device)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


# ---------------------------------------------------------------------------------------------- DDP / FSDP
STRATEGIES = ("ddp", "fsdp")


def wrap_ddp(module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` (identity in a single process)."""
    if world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def _fully_shard():
    try:  # torch >= 2.6
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch 2.4 and 2.5
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def shard_fsdp(module: nn.Module, units: list[nn.Module]) -> nn.Module:
    """Shard ``module`` with FSDP2 (``fully_shard``): parameters, gradients and — since the optimizer is
    built on the sharded parameters — optimizer state are split over the ranks along dim 0.

    Each module in ``units`` (transformer blocks, ResNet stages) becomes its own unit: its parameters
    are all-gathered just before it runs and freed right after, so at most one unit is whole at a time;
    ``module`` itself holds the rest (stem, norms, pretext head). Runs on any backend FSDP2 supports,
    gloo on the CPU included (checked with torch 2.13).
    """
    fully_shard = _fully_shard()
    for unit in units:
        fully_shard(unit)
    fully_shard(module)
    return module


def fsdp_units(backbone: nn.Module) -> list[nn.Module]:
    """The natural FSDP units of a backbone: the members of its top-level ``ModuleList``s (ViT and
    Mixer ``blocks``, ResNet ``stages``)."""
    return [unit for child in backbone.children() if isinstance(child, nn.ModuleList) for unit in child]


def _state_dict_options(**kw: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP module, on the CPU of rank 0; ``{}`` on the other
    ranks. A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_state_dict_options(cpu_offload=True))


def load_full_model_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every rank holds it, e.g. read from the same checkpoint) into an FSDP
    module; each rank keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(module, state, options=_state_dict_options())


def full_optimizer_state_dict(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state of an FSDP module gathered whole (keyed by parameter name) on rank 0."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_state_dict_options(cpu_offload=True))


def load_full_optimizer_state_dict(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=_state_dict_options())
