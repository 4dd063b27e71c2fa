"""Small building blocks of every stage: seeded batch order, optimisers, batched inference, BatchNorm re-estimation."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from ..config import RunConfig, StageConfig

STAGE_SEED_OFFSET = {"teacher": 0, "matcher": 1_000_003, "student": 2_000_006, "probe": 3_000_009}


def epoch_generator(seed: int, stage: str, epoch: int) -> torch.Generator:
    """Data order and augmentation of one epoch come from (seed, stage, epoch) alone, so a
    resumed run sees exactly the batches the uninterrupted run would have seen."""
    return torch.Generator().manual_seed(seed + STAGE_SEED_OFFSET[stage] + epoch)


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator, smallest: int = 2) -> list[torch.Tensor]:
    """Positions 0..count-1 in seeded random order, cut into batches; a trailing batch smaller than
    ``smallest`` is dropped (BatchNorm cannot train on one sample: 2 per process under torchrun)."""
    order = torch.randperm(count, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < smallest:
        batches.pop()
    return batches


def build_optimizer(parameters, stage: StageConfig, config: RunConfig) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    name, decay = config.train.optimizer, config.train.weight_decay
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=stage.lr, momentum=0.9, weight_decay=decay)
    return torch.optim.Adam(parameters, lr=stage.lr, weight_decay=decay)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, config: RunConfig):
    """Per-epoch LR schedule: cosine to 0 over the stage, or /10 at each third; None = constant."""
    if config.train.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if config.train.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    return None


def batched(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def set_train_mode(modules: list[nn.Module | None], training: bool) -> None:
    for module in modules:
        if module is not None:
            module.train(training)


PRECISE_BN_MAX_TILES = 4096
# Below this many training tiles the batch statistics themselves are too noisy to replace the running
# averages (a channel's variance over a handful of tiles can be ~0 and blow up evaluation).
PRECISE_BN_MIN_TILES = 32


@torch.no_grad()
def recalibrate_batchnorm(modules: list[nn.Module], forward: Callable[[torch.Tensor], object], tiles, device: torch.device,
                          batch_size: int, generator: torch.Generator, check: Callable[[], None] = lambda: None,
                          share: Callable[[int], slice] | None = None) -> None:
    """Re-estimate every BatchNorm layer's running mean and variance as the plain average over
    training batches ("precise BN", as torch.optim.swa_utils.update_bn and detectron2 do).

    During training each layer keeps an exponential average over its last few dozen batches; with a
    few batches per epoch (small archives) that average still remembers the first epochs' weights
    when the model is evaluated, and validation accuracy sits near chance for epochs. Batches are
    drawn in a seeded random order (class-mixed, like training batches; at most
    PRECISE_BN_MAX_TILES tiles); only BatchNorm layers run in training mode, so dropout stays off.
    With fewer than PRECISE_BN_MIN_TILES training tiles the running averages are kept. With
    ``share`` (BatchNorm synchronised across ranks) this rank forwards only its share of each batch.
    """
    layers = [layer for module in modules for layer in module.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(tiles) < PRECISE_BN_MIN_TILES:
        return
    saved = [(layer.momentum, layer.training) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        order = torch.randperm(len(tiles), generator=generator)[:PRECISE_BN_MAX_TILES]
        for rows in order.split(batch_size):
            if len(rows) >= 2:
                check()
                forward(tiles[rows[share(len(rows))] if share else rows].to(device))
    finally:
        for layer, (momentum, training) in zip(layers, saved):
            layer.momentum = momentum
            layer.train(training)
