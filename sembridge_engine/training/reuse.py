"""Reusing a finished teacher or matcher: from another run (``student.teacher_from``) or the cache.

A teacher and matcher depend only on the MS data and their own settings, so many student runs
can share them. The cache is keyed by everything they depend on; a checkpoint taken from
elsewhere is checked against this run (bands, tile size, classes) before it is used.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_output
from ..config import RunConfig, config_hash, config_to_dict
from ..data import ChannelStats
from .checkpoint import load_checkpoint
from .context import RunContext
from .dataset import RunData
from .rundir import RunFolder, teacher_cache_dir


def training_settings(config: RunConfig, stage: str, *, with_seed: bool = True) -> dict[str, Any]:
    """What a teacher or matcher is, besides its data: its own settings, the augmentation and the training
    recipe (optimiser, schedule, BatchNorm re-estimation, model selection; label smoothing for the
    teacher, whose loss it changes). ``with_seed`` False leaves out the seed, a random draw that does
    not change what was asked for."""
    sections = config_to_dict(config)
    train = sections["train"]
    keys = ("seed",) * with_seed + ("optimizer", "weight_decay", "scheduler", "precise_bn", "selection_window")
    recipe = {key: train[key] for key in keys}
    if stage == "teacher":
        recipe["label_smoothing"] = train["label_smoothing"]
    return {"stage_config": sections[stage], "augment": sections["augment"], "recipe": recipe}


def cache_key(config: RunConfig, data: RunData, stage: str) -> str:
    """Everything the stage's result depends on: its data and its training settings."""
    return config_hash({
        "stage": stage, "engine": __version__, "ms_fingerprint": data.ms_fingerprint,
        "ms_path": config.data.ms_path, "bands": list(data.preset.band_names), "rgb": list(data.preset.rgb_bands),
        "ms_tile_size": config.data.ms_tile_size, "ms_val_fraction": config.data.ms_val_fraction,
        **training_settings(config, stage),
    })


def _cache_path(ctx: RunContext, data: RunData, stage: str) -> Path:
    return teacher_cache_dir() / f"{stage}-{cache_key(ctx.config, data, stage)}.pt"


def _source(ctx: RunContext, data: RunData, stage: str) -> tuple[Path, str] | None:
    """Where a finished teacher/matcher can be taken from: the teacher_from run, else the cache
    (unless the config says not to use it)."""
    source = ctx.config.student.teacher_from
    if source:
        path = RunFolder(Path(source)).checkpoint(stage)
        if stage == "teacher" and not path.exists():
            raise ValueError(f"teacher_from {source}: no teacher checkpoint {path} (is it a SemBridge run folder?)")
        if path.exists() and (stage == "teacher" or _same_matcher_asked(ctx, Path(source))):
            return path, f"run {source}"
    if not ctx.config.student.use_teacher_cache:
        return None
    cached = _cache_path(ctx, data, stage)
    return (cached, f"cache {cached}") if cached.exists() else None


def data_mismatch(meta: dict[str, Any], stage: str, data: RunData, config: RunConfig) -> tuple[str, Any, Any] | None:
    """The first MS setting a teacher/matcher checkpoint was trained with that ``data`` does not have, as
    (key, the checkpoint's value, the data's value); None when the model can run on ``data``."""
    wanted = {"band_names": list(data.preset.band_names), "tile_size": config.data.ms_tile_size}
    if stage == "teacher":
        wanted.update(class_names=list(data.ms_classes), multi_label=data.ms_multi_label)
    for key, value in wanted.items():
        if meta.get(key) != value:
            return key, meta.get(key), value
    return None


def _same_matcher_asked(ctx: RunContext, source: Path) -> bool:
    """Whether the teacher_from run's matcher is the one this run asks for. The teacher is reused because
    the user named it; its run's matcher only comes along, so a run that sets other matcher epochs,
    width or recipe trains its own instead of silently taking one it did not ask for (matcher.epochs = 0
    asks for no training, so it takes the run's matcher)."""
    source_config = RunFolder(source).config()
    if ctx.config.matcher.epochs == 0 or source_config is None:
        return True
    if training_settings(source_config, "matcher", with_seed=False) == training_settings(ctx.config, "matcher",
                                                                                         with_seed=False):
        return True
    ctx.log(f"the matcher of run {source} was trained with other matcher or recipe settings than this run's; "
            "this run trains its own (the teacher is still reused)")
    return False


def _check_compatible(state: dict[str, Any], stage: str, data: RunData, config: RunConfig, origin: str, path: Path) -> None:
    if state["stage"] != stage or not state.get("complete"):
        raise ValueError(f"{origin}: {path} is not a finished {stage} checkpoint; finish or resume that run first")
    mismatch = data_mismatch(state["meta"], stage, data, config)
    if mismatch is not None:
        key, theirs, ours = mismatch
        raise ValueError(f"{origin}: its {stage} was trained with {key} = {theirs!r}, "
                         f"but this run has {ours!r}; the {stage} cannot be reused")


def reused_state(ctx: RunContext, data: RunData, stage: str) -> tuple[dict[str, Any], str] | None:
    """A compatible finished checkpoint of ``stage`` from elsewhere, or None when this run trains its own.

    The MS tiles are re-normalised with the reused model's statistics so it sees what it was trained on.
    Rank 0 decides where from, so every rank of a torchrun job reuses the same checkpoint (or none).
    """
    def decide():
        found = None if ctx.folder.checkpoint(stage).exists() else _source(ctx, data, stage)
        return None if found is None else [str(found[0]), found[1]]

    found = ctx.dist.agree(decide)
    if found is None:
        return None
    path, origin = Path(found[0]), found[1]
    state = load_checkpoint(path)
    _check_compatible(state, stage, data, ctx.config, origin, path)
    stats = ChannelStats.from_dict(state["meta"]["ms_stats"])
    if stats != data.ms_stats:
        data.use_ms_stats(stats)
    return state, origin


def store_in_cache(ctx: RunContext, data: RunData, stage: str) -> None:
    """Copy a finished teacher/matcher checkpoint to the cache so the same set-up is free next time."""
    target = _cache_path(ctx, data, stage)
    if target.exists() or not ctx.writes:
        return
    try:
        with atomic_output(target) as temporary:
            shutil.copyfile(ctx.folder.checkpoint(stage), temporary)
    except OSError as error:
        ctx.log(f"could not cache the {stage}: {error}", "warning")
