"""What every stage of one run shares: config, run folder, device, mixed precision, events, cancel,
and the process group when torchrun runs it on several processes (``dist``)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..config import RunConfig
from ..device import configure_device, resolve_device, uses_amp
from ..events import CancelToken, EventCallback, LogLine
from ..distributed import ONE_PROCESS, Distributed
from .distributed import data_parallel
from .loops import batched, recalibrate_batchnorm
from .rundir import RunFolder

MODEL_SEED_OFFSET = {"teacher": 11, "matcher": 22, "student": 33}


@dataclass
class RunContext:
    config: RunConfig
    folder: RunFolder
    emit: EventCallback
    cancel: CancelToken | None
    dist: Distributed = ONE_PROCESS
    device: torch.device = field(init=False)
    amp: bool = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    stage_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.config.train.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = self.dist.device  # one GPU per rank
        configure_device(self.device)
        self.amp = uses_amp(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

    @property
    def seed(self) -> int:
        return self.config.train.seed

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run folder (and the caches)."""
        return self.dist.is_main

    def check(self) -> None:
        """Raise Cancelled when the run was cancelled (on any rank: every rank calls this at the same points)."""
        cancelled = self.cancel is not None and self.cancel.cancelled
        if self.dist.any(cancelled):
            from ..events import Cancelled

            raise Cancelled("cancelled by the user")

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogLine(message, level))

    def autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp)

    def backward(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, weight: float = 1.0) -> None:
        """One optimiser step; ``weight`` is this rank's share of the global batch (``Distributed.weight``)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def recalibrate_batchnorm(self, modules: list[nn.Module], forward: Callable[[torch.Tensor], Any], tiles,
                              batch_size: int, generator: torch.Generator) -> None:
        """Precise BN before a validation (loops.recalibrate_batchnorm). With BatchNorm synchronised across
        ranks each rank forwards its share of every batch, otherwise every rank forwards all of it: either
        way every rank ends with the statistics one process would compute."""
        synchronised = self.dist.enabled and self.config.train.sync_batchnorm
        recalibrate_batchnorm(modules, forward, tiles, self.device, batch_size, generator, self.check,
                              share=self.dist.part if synchronised else None)

    def parallel(self, module: nn.Module) -> nn.Module:
        """The module a training step calls: DDP on several ranks (BatchNorm synchronised when configured)."""
        return data_parallel(self.dist, module, self.config.train.sync_batchnorm)

    def seed_models(self, stage: str) -> None:
        """Model initialisation depends only on the seed and the stage."""
        torch.manual_seed(self.seed + MODEL_SEED_OFFSET[stage])

    @torch.no_grad()
    def infer(self, fn: Callable[[torch.Tensor], Any], tiles, batch_size: int):
        """``fn`` over every tile in batches on the device, results (a tensor or a tuple of them) in float32 on
        the CPU; on several ranks each infers its share and every rank receives all rows."""
        dist = self.dist
        sharded = dist.enabled and len(tiles) >= dist.world_size
        span = dist.part(len(tiles)) if sharded else slice(0, len(tiles))
        share = tiles[span] if isinstance(tiles, torch.Tensor) else tiles.subset(torch.arange(span.start, span.stop))
        # The same number of batches, hence of (collective) cancel checks, on every rank.
        steps = math.ceil(max(dist.row_counts(len(share)) if sharded else [len(share)]) / batch_size)
        outputs: list[tuple[torch.Tensor, ...]] = []
        for rows in batched(steps * batch_size, batch_size):
            self.check()
            rows = slice(rows.start, min(rows.stop, len(share)))
            if rows.start < rows.stop:
                result = fn(share[rows].to(self.device))
                outputs.append(tuple(value.float().cpu() for value in (result if isinstance(result, tuple) else (result,))))
        if not outputs:
            return torch.empty(0)
        merged = tuple(torch.cat(values) for values in zip(*outputs))
        if sharded:
            merged = tuple(dist.gather_rows(values) for values in merged)
        return merged if len(merged) != 1 else merged[0]
