"""Pre-flight estimate of a run: memory of the in-memory tile tensors and an order-of-magnitude time.

The time is a rough table of training throughput (images/s at 64x64 on a 2-thread CPU, measured
with the registered backbones) plus fixed costs per run (loading, evaluation, export) and per epoch
(validation, transport cost, checkpoint). It is shown before a run starts, not promised.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..data.cache import estimate_memory_bytes

TRAIN_IMAGES_PER_SECOND = {"resnet34": 40.0, "mobilenet_v2": 120.0, "shufflenet_v2_x1_0": 270.0,
                           "shufflenet_v2_x0_5": 400.0}
DEFAULT_IMAGES_PER_SECOND = 60.0
RUN_OVERHEAD_SECONDS = 25.0
EPOCH_OVERHEAD_SECONDS = 2.0
DISTILLATION_FACTOR = 1.5   # a student step with a teacher lookup, KD and the Planner
MATCHER_FACTOR = 2.0        # two encoders per step


@dataclass(frozen=True)
class RunEstimate:
    memory_bytes: int
    seconds: float


def _stage_seconds(arch: str, images: float, epochs: int, tile: int, factor: float = 1.0) -> float:
    speed = TRAIN_IMAGES_PER_SECOND.get(arch, DEFAULT_IMAGES_PER_SECOND) * min((64.0 / tile) ** 2, 2.0)
    return factor * images * epochs / speed + EPOCH_OVERHEAD_SECONDS * epochs


def estimate_run(config: RunConfig, n_ms: int, n_rgb: int, ms_channels: int) -> RunEstimate:
    """Memory of the tile tensors and rough CPU seconds for ``n_ms`` MS tiles and ``n_rgb`` RGB images."""
    data = config.data
    memory = estimate_memory_bytes(n_rgb, 3, data.rgb_tile_size)
    seconds = RUN_OVERHEAD_SECONDS + _stage_seconds(
        config.student.arch, n_rgb * data.rgb_split[0], config.student.epochs, data.rgb_tile_size,
        DISTILLATION_FACTOR if config.uses_teacher else 1.0)
    if config.uses_teacher:
        memory += estimate_memory_bytes(n_ms, ms_channels, data.ms_tile_size)
        if not config.student.teacher_from:
            seconds += _stage_seconds(config.teacher.arch, n_ms, config.teacher.epochs, data.ms_tile_size)
            if config.uses_matcher:
                seconds += _stage_seconds(config.matcher.arch, n_ms, config.matcher.epochs, data.ms_tile_size,
                                          MATCHER_FACTOR)
    return RunEstimate(memory, seconds)
