"""The generic epoch loop every stage runs: seeded batches, metrics, best-epoch selection, checkpoints.

Every epoch ends with an atomic checkpoint (modules, optimiser, scheduler, history, RNG states), so
a cancelled or killed stage resumes after its last finished epoch and, on CPU, reproduces the
uninterrupted run's metrics exactly.

Under torchrun every rank runs this loop over the same seeded global batches: ``train_step``
receives the GLOBAL batch positions and trains on its rank's share (``ctx.dist.part``), drawing every
random number (augmentation) for the whole global batch so the generator stays the same on every
rank. Loss sums are reduced over ranks, so every rank records the same metrics row; rank 0 writes it.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..events import BatchProgress, CheckpointSaved, EpochFinished, StageFinished, StageStarted
from .checkpoint import CheckpointError, capture_rng_state, cpu_state_dict, load_checkpoint, restore_rng_state, save_checkpoint
from .context import RunContext
from .loops import epoch_generator, set_train_mode, shuffled_batches

LOSS_KEYS = ("loss_task", "loss_kd", "loss_ot1", "loss_ot2", "loss_total", "train_acc")
UNUSED = None  # a loss component that does not exist in a stage is null in metrics.jsonl


class TrainingDiverged(RuntimeError):
    """A stage's loss stopped being a finite number: the run stops instead of training on garbage."""


@dataclass
class StageSpec:
    """What the epoch loop needs to train, evaluate, select and checkpoint one stage."""

    name: str
    epochs: int
    batch_size: int
    train_count: int
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_step: Callable[[torch.Tensor, torch.Generator, int], dict[str, float]]
    evaluate: Callable[[int], dict[str, Any]]
    meta: dict[str, Any]
    select: str | None = None                       # module whose best-val weights are kept
    score: Callable[[dict], tuple] = lambda row: ()
    after_epoch: Callable[[int], dict[str, Any]] = lambda epoch: {}
    extra_state: Callable[[], dict[str, Any]] = lambda: {}
    restore_extra: Callable[[dict[str, Any]], None] = lambda state: None
    recalibrate: Callable[[torch.Generator], None] | None = None   # re-estimates BatchNorm statistics


def _checkpoint_state(ctx: RunContext, spec: StageSpec, epoch: int, history: list, best: dict) -> dict[str, Any]:
    return {
        "stage": spec.name, "epoch": epoch, "epochs": spec.epochs, "complete": epoch == spec.epochs,
        "modules": {name: module.state_dict() for name, module in spec.modules.items()},
        "optimizer": spec.optimizer.state_dict(),
        "scheduler": spec.scheduler.state_dict() if spec.scheduler is not None and epoch else {},
        "scaler": ctx.scaler.state_dict() if ctx.amp else {},
        "history": history, "best": best, "rng": capture_rng_state(), "meta": spec.meta,
        **spec.extra_state(),
    }


def _restore(ctx: RunContext, spec: StageSpec, path) -> tuple[list, dict, int]:
    """(history, best, last finished epoch) from the stage's own checkpoint."""
    state = load_checkpoint(path)
    if state["stage"] != spec.name:
        raise CheckpointError(f"{path}: holds stage {state['stage']!r}, expected {spec.name!r}")
    try:
        for name, module in spec.modules.items():
            module.load_state_dict(state["modules"][name])
        spec.optimizer.load_state_dict(state["optimizer"])
        if spec.scheduler is not None and state.get("scheduler"):
            spec.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            ctx.scaler.load_state_dict(state["scaler"])
        history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"])
        spec.restore_extra(state)
        restore_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: does not fit this run's {spec.name} "
                              f"({type(error).__name__}: {error}); delete it to retrain the stage") from None
    return history, best, start


def _check_finite(spec: StageSpec, epoch: int, batch: int, loss: float | None) -> None:
    if loss is None or math.isfinite(loss):
        return
    raise TrainingDiverged(
        f"{spec.name} stage, epoch {epoch}, batch {batch}: the loss is {loss} (not a finite number), so the run was "
        f"stopped; the last finished epoch's checkpoint is kept. Likely causes: NaN or infinite pixel values in the "
        f"input imagery (check it with `sembridge inspect`), or a learning rate too high for this data "
        f"(now {spec.optimizer.param_groups[0]['lr']:g}).")


def _train_epoch(ctx: RunContext, spec: StageSpec, epoch: int) -> tuple[dict[str, float | None], torch.Generator]:
    """Mean losses of one epoch, and the epoch's generator for whatever else the epoch draws."""
    generator = epoch_generator(ctx.seed, spec.name, epoch)
    batches = shuffled_batches(spec.train_count, spec.batch_size, generator, smallest=2 * ctx.dist.world_size)
    set_train_mode(list(spec.modules.values()), True)
    totals: dict[str, float] = defaultdict(float)
    seen = 0
    for done, positions in enumerate(batches, start=1):
        ctx.check()
        out = spec.train_step(positions, generator, epoch)
        count = out.pop("n")
        loss = out.get("loss_total")
        if ctx.dist.enabled and loss is not None:  # every rank judges the same (global batch) loss
            loss = float(ctx.dist.sum(torch.tensor([loss * count], dtype=torch.float64)).item()) / len(positions)
        _check_finite(spec, epoch, done, loss)
        seen += count
        for key, value in out.items():
            totals[key] += value * count
        ctx.emit(BatchProgress(spec.name, epoch, done, len(batches)))
    set_train_mode(list(spec.modules.values()), False)
    keys = sorted(totals)
    if ctx.dist.enabled:
        summed = ctx.dist.sum(torch.tensor([seen] + [totals[key] for key in keys], dtype=torch.float64)).tolist()
        seen, totals = summed[0], dict(zip(keys, summed[1:]))
    return {key: totals[key] / max(seen, 1) if key in totals else UNUSED for key in LOSS_KEYS}, generator


def _window_score(spec: StageSpec, rows: list[dict[str, Any]], window: int) -> list[float]:
    """The selection score of the newest epoch: each score component averaged over the last ``window``
    epochs. A single epoch's accuracy on a few dozen validation tiles jumps by several points from
    epoch to epoch; the mean over a window keeps an epoch from a good stretch, not a lucky one."""
    scores = [spec.score(row) for row in rows[-window:]]
    return [sum(values) / len(values) for values in zip(*scores)]


def run_stage(ctx: RunContext, spec: StageSpec) -> None:
    """Train ``spec`` from its last checkpoint to its last epoch; keep the best module's weights."""
    path = ctx.folder.checkpoint(spec.name)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    start = 0
    if path.exists():
        history, best, start = _restore(ctx, spec, path)
        if start:
            ctx.log(f"{spec.name}: resuming after epoch {start}/{spec.epochs} from {path}")
    if start < spec.epochs:
        ctx.emit(StageStarted(spec.name, spec.epochs))
    for epoch in range(start + 1, spec.epochs + 1):
        started = time.perf_counter()
        row: dict[str, Any] = {"stage": spec.name, "epoch": epoch, "epochs": spec.epochs,
                               "lr": spec.optimizer.param_groups[0]["lr"]}
        losses, generator = _train_epoch(ctx, spec, epoch)
        row.update(losses)
        if spec.scheduler is not None:
            spec.scheduler.step()
        if spec.recalibrate is not None and ctx.config.train.precise_bn:
            spec.recalibrate(generator)
        row.update(spec.after_epoch(epoch))
        row.update(spec.evaluate(epoch))
        row["epoch_seconds"] = time.perf_counter() - started
        if spec.select is not None:
            score = _window_score(spec, [*history, row], ctx.config.train.selection_window)
            if not best or score >= list(best["score"]):
                best = {"epoch": epoch, "score": score, "state": cpu_state_dict(spec.modules[spec.select])}
        history.append(row)
        if ctx.writes:
            save_checkpoint(path, _checkpoint_state(ctx, spec, epoch, history, best))
            ctx.folder.append_metrics(row)
        ctx.emit(EpochFinished(spec.name, epoch, spec.epochs, dict(row)))
        ctx.emit(CheckpointSaved(spec.name, epoch, str(path)))
    if spec.epochs == 0 and not path.exists() and ctx.writes:
        save_checkpoint(path, _checkpoint_state(ctx, spec, 0, [], {}))
    if spec.select is not None and best:
        spec.modules[spec.select].load_state_dict(best["state"])
    set_train_mode(list(spec.modules.values()), False)
    if start < spec.epochs:
        ctx.emit(StageFinished(spec.name))
    best_row = next((row for row in history if row["epoch"] == best.get("epoch")), {})
    ctx.stage_info[spec.name] = {
        "source": "trained", "epochs": spec.epochs, "best_epoch": best.get("epoch"),
        "best_val_oa": best_row.get("val_oa"),
        "last": {key: value for key, value in (history[-1] if history else {}).items() if not isinstance(value, list)},
    }
