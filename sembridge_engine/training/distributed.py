"""Data-parallel training across the processes torchrun starts (torch.distributed with DDP).

One process per device (a rank). Every rank runs the same pipeline on the same data; the seeded
global batch order of each (seed, stage, epoch) is the same on every rank, and each rank trains on
its contiguous share of every global batch (DistributedSampler semantics on the engine's own
seeding), so N processes take the optimisation steps one process takes with the same global batch:

- each rank's loss is weighted by its share of the batch (n_r W / N), so DDP's gradient average is
  the gradient of the global batch mean even when the last batch does not split evenly;
- terms coupling the samples of a batch gather their rows from every rank with gradients (the
  matcher's InfoNCE negatives, the Planner's CORAL covariances), as if the batch were on one device;
- BatchNorm statistics are per rank unless ``train.sync_batchnorm`` (then over the global batch:
  torch's SyncBatchNorm on CUDA, :class:`GlobalBatchNorm` on CPU, where torch has no kernel for it);
- inference over a split (galleries, the teacher bank, DynM, validation) is sharded and
  all-gathered, and match tables come from rank 0, so every rank holds the same tables and metrics;
- a cancel on any rank is agreed at the next batch, so all ranks stop at the same step;
- only rank 0 writes the run folder and holds its writer lock.

The ranks and collectives are ``sembridge_engine.distributed.Distributed``, passed explicitly.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..distributed import ONE_PROCESS, Distributed

def data_parallel(dist: Distributed, module: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
    """``module`` for a training step: wrapped in DDP on several ranks, BatchNorm synchronised if asked."""
    if not dist.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        if dist.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module, dist.group)
        else:
            module = GlobalBatchNorm.convert(module, dist)
    # static_graph: the same parameters take part in every step (some may never, e.g. the Planner's
    # attention when only L_ot2 is used), which DDP then handles without a graph search per step.
    return DistributedDataParallel(module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                                   process_group=dist.group, static_graph=True)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks for CPU/gloo (torch's SyncBatchNorm needs a GPU).

    Mean and variance come from sums all-reduced with gradients (two passes: the mean, then the
    centred squares, for the numerical behaviour of the one-process kernel); eval mode and one
    process are plain BatchNorm.
    """

    dist: Distributed = ONE_PROCESS

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self.dist.enabled):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = self.dist.sum(torch.tensor(float(input.numel() // input.shape[1]), device=input.device))
        mean = self.dist.sum_with_grad(input.sum(dims)) / count
        centred = input - mean.view(shape)
        variance = self.dist.sum_with_grad(centred.square().sum(dims)) / count
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp_min(1), momentum)
        return output

    @classmethod
    def convert(cls, module: nn.Module, dist: Distributed) -> nn.Module:
        """Replace every BatchNorm layer of ``module`` in place (same parameters and buffers, so optimisers
        and checkpoints keep working); returns the module (a new one only when ``module`` itself is BatchNorm)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            converted.dist = dist
            if module.affine:
                converted.weight, converted.bias = module.weight, module.bias
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
            return converted
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child, dist))
        return module



class Step(nn.Module):
    """The differentiable part of one training step as a module, so DDP sees every parameter it trains."""

    def __init__(self, forward: Callable[..., Any], **modules: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.step = forward

    def forward(self, *args: Any) -> Any:
        return self.step(*args)
