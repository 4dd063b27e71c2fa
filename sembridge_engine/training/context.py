"""What every stage of one run shares: config, run folder, device, mixed precision, events, cancel."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import RunConfig
from ..device import configure_device, resolve_device, uses_amp
from ..events import CancelToken, EventCallback, LogLine
from .rundir import RunFolder

MODEL_SEED_OFFSET = {"teacher": 11, "matcher": 22, "student": 33}


@dataclass
class RunContext:
    config: RunConfig
    folder: RunFolder
    emit: EventCallback
    cancel: CancelToken | None
    device: torch.device = field(init=False)
    amp: bool = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    stage_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.config.train.device)
        configure_device(self.device)
        self.amp = uses_amp(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

    @property
    def seed(self) -> int:
        return self.config.train.seed

    def check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogLine(message, level))

    def autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp)

    def backward(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def seed_models(self, stage: str) -> None:
        """Model initialisation depends only on the seed and the stage."""
        torch.manual_seed(self.seed + MODEL_SEED_OFFSET[stage])
