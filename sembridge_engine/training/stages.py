"""Stages (a) teacher and (b) matcher of Algorithm 1, each trained by the generic epoch loop."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..metrics import classification_metrics, multilabel_metrics
from ..models.backbones import Backbone, build_backbone
from ..models.matcher import Matcher, info_nce
from .context import RunContext
from .dataset import RunData
from .augment import Augmentation
from .distributed import Step
from .loops import build_optimizer, build_scheduler
from .reuse import reused_state, store_in_cache
from .stage_loop import StageSpec, run_stage


def teacher_meta(ctx: RunContext, data: RunData) -> dict[str, Any]:
    return {"arch": ctx.config.teacher.arch, "in_channels": data.preset.band_count,
            "num_classes": len(data.ms_classes), "class_names": list(data.ms_classes),
            "band_names": list(data.preset.band_names), "tile_size": ctx.config.data.ms_tile_size,
            "ms_stats": data.ms_stats.to_dict(), "multi_label": data.ms_multi_label}


def teacher_stage(ctx: RunContext, data: RunData) -> Backbone:
    """Stage (a): the MS teacher on every MS class (cross-entropy, or BCE for multi-label archives)."""
    reused = reused_state(ctx, data, "teacher")
    if reused is not None:
        state, origin = reused
        meta = state["meta"]
        teacher = build_backbone(meta["arch"], meta["in_channels"], meta["num_classes"]).to(ctx.device)
        teacher.load_state_dict(state["best"]["state"] if state["best"] else state["modules"]["teacher"])
        teacher.eval()
        ctx.stage_info["teacher"] = {"source": origin, "epochs": 0, "best_epoch": state["best"].get("epoch"),
                                     "best_val_oa": state["best"].get("score", [None])[0], "last": {}}
        ctx.log(f"teacher reused from {origin} ({meta['arch']}); teacher stage skipped")
        return teacher
    config = ctx.config
    ctx.seed_models("teacher")
    teacher = build_backbone(config.teacher.arch, data.preset.band_count, len(data.ms_classes),
                             config.teacher.pretrained).to(ctx.device)
    optimizer = build_optimizer(teacher.parameters(), config.teacher, config)
    multi_label = data.ms_multi_label
    augment = Augmentation.for_stage(config.augment, rgb=False)
    smoothing = config.train.label_smoothing   # multi-label: each 0/1 target moves towards 1/2 by this share
    step = ctx.parallel(teacher)

    def train_step(positions, generator, epoch):
        part = ctx.dist.part(len(positions))
        index = data.ms_train[positions[part]]
        tiles = augment(data.ms_tiles[index].to(ctx.device), generator, part=part, total=len(positions))
        targets = data.ms_labels[index].to(ctx.device)
        with ctx.autocast():
            logits = step(tiles)
            loss = (F.binary_cross_entropy_with_logits(logits, targets * (1 - smoothing) + smoothing / 2) if multi_label
                    else F.cross_entropy(logits, targets, label_smoothing=smoothing))
        ctx.backward(optimizer, loss, ctx.dist.weight(len(positions)))
        if multi_label:
            correct = ((logits.detach() > 0) == (targets > 0.5)).float().mean().item()
        else:
            correct = (logits.detach().argmax(1) == targets).float().mean().item()
        return {"n": len(index), "loss_task": loss.item(), "loss_total": loss.item(), "train_acc": correct}

    def evaluate(epoch):
        logits = ctx.infer(teacher, data.ms_tiles.subset(data.ms_val), config.teacher.batch_size)
        labels = data.ms_labels[data.ms_val]
        if multi_label:
            result = multilabel_metrics(labels, torch.sigmoid(logits))
        else:
            result = classification_metrics(labels, logits.argmax(1), len(data.ms_classes))
        return {"val_oa": result["oa"], "val_macro_f1": result["macro_f1"],
                "per_class_f1": result["per_class_f1"], "confusion": result.get("confusion")}

    run_stage(ctx, StageSpec(
        "teacher", config.teacher.epochs, config.teacher.batch_size, len(data.ms_train), {"teacher": teacher},
        optimizer, build_scheduler(optimizer, config.teacher.epochs, config), train_step, evaluate,
        teacher_meta(ctx, data), select="teacher",
        score=lambda row: (row["val_macro_f1"] if multi_label else row["val_oa"], row["val_macro_f1"]),
        recalibrate=lambda generator: ctx.recalibrate_batchnorm(
            [teacher], teacher, data.ms_tiles.subset(data.ms_train), config.teacher.batch_size, generator),
    ))
    store_in_cache(ctx, data, "teacher")
    return teacher


def matcher_stage(ctx: RunContext, data: RunData) -> Matcher:
    """Stage (b): the contrastive matcher on (MS tile, its own pseudo-RGB) pairs, symmetric InfoNCE."""
    reused = reused_state(ctx, data, "matcher")
    if reused is not None:
        state, origin = reused
        meta = state["meta"]
        matcher = Matcher(meta["arch"], meta["ms_channels"], meta["embed_dim"], meta["temperature"]).to(ctx.device)
        matcher.load_state_dict(state["modules"]["matcher"])
        matcher.eval()
        ctx.stage_info["matcher"] = {"source": origin, "epochs": 0, "best_epoch": None, "last": {}}
        ctx.log(f"matcher reused from {origin}; matcher stage skipped")
        return matcher
    config, section = ctx.config, ctx.config.matcher
    rgb_indices = list(data.preset.rgb_indices)
    ctx.seed_models("matcher")
    matcher = Matcher(section.arch, data.preset.band_count, section.embed_dim, section.temperature,
                      section.pretrained).to(ctx.device)
    optimizer = build_optimizer(matcher.parameters(), section, config)
    augment = Augmentation.for_stage(config.augment, rgb=False)
    encoders = ctx.parallel(Step(lambda ms, rgb: (matcher.encode_ms(ms), matcher.encode_rgb(rgb)), matcher=matcher))
    gather = ctx.dist.gather_rows_with_grad  # InfoNCE's negatives: the whole global batch

    def train_step(positions, generator, epoch):
        part = ctx.dist.part(len(positions))
        index = data.ms_train[positions[part]]
        tiles = augment(data.ms_tiles[index].to(ctx.device), generator, part=part, total=len(positions))
        with ctx.autocast():
            ms, rgb = encoders(tiles, tiles[:, rgb_indices])
            loss = info_nce(gather(ms), gather(rgb), section.temperature)
        ctx.backward(optimizer, loss, ctx.dist.weight(len(positions)))
        return {"n": len(index), "loss_task": loss.item(), "loss_total": loss.item()}

    def evaluate(epoch):
        """Retrieval top-1 MS -> own pseudo-RGB among the tiles of each validation batch (batches shared by rank)."""
        batches = data.ms_val.split(section.batch_size)
        mine = batches[ctx.dist.rank::ctx.dist.world_size]
        totals = torch.zeros(3, dtype=torch.float64)  # hits, loss sum, tiles
        with torch.no_grad():
            for round_index in range(math.ceil(len(batches) / ctx.dist.world_size)):
                ctx.check()
                if round_index >= len(mine):
                    continue
                index = mine[round_index]
                tiles = data.ms_tiles[index].to(ctx.device)
                ms, rgb = matcher.encode_ms(tiles).float(), matcher.encode_rgb(tiles[:, rgb_indices]).float()
                totals += torch.tensor([int(((ms @ rgb.T).argmax(1) == torch.arange(len(index), device=ctx.device)).sum()),
                                        float(info_nce(ms, rgb, section.temperature)) * len(index), len(index)],
                                       dtype=torch.float64)
        hits, losses, count = ctx.dist.sum(totals).tolist()
        return {"val_oa": None, "val_macro_f1": None, "val_retrieval_top1": hits / max(count, 1),
                "val_loss": losses / max(count, 1)}

    meta = {"arch": section.arch, "ms_channels": data.preset.band_count, "embed_dim": section.embed_dim,
            "temperature": section.temperature, "band_names": list(data.preset.band_names),
            "tile_size": config.data.ms_tile_size, "ms_stats": data.ms_stats.to_dict()}
    run_stage(ctx, StageSpec(
        "matcher", section.epochs, section.batch_size, len(data.ms_train), {"matcher": matcher}, optimizer,
        build_scheduler(optimizer, section.epochs, config), train_step, evaluate, meta,
        recalibrate=lambda generator: ctx.recalibrate_batchnorm(
            [matcher], lambda tiles: (matcher.encode_ms(tiles), matcher.encode_rgb(tiles[:, rgb_indices])),
            data.ms_tiles.subset(data.ms_train), section.batch_size, generator),
    ))
    store_in_cache(ctx, data, "matcher")
    return matcher
