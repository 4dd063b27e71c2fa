"""Frozen-teacher outputs for every MS tile, computed once after the teacher stage.

The teacher never changes during student training, so a student batch looks its teacher
features up by MS index instead of running the teacher: the student epoch does no teacher
forward pass. Feature maps are kept only when they fit in a quarter of the free memory (of every
rank); otherwise they are recomputed per batch (logits and embeddings are always kept). Under
torchrun each rank computes its share and every rank holds the whole bank.
"""
from __future__ import annotations

import psutil
import torch

from ..data.tiles import Tiles
from ..models.backbones import Backbone, Features
from .context import RunContext


class TeacherBank:
    def __init__(self, ctx: RunContext, teacher: Backbone, ms_tiles: Tiles, columns: torch.Tensor, batch_size: int) -> None:
        self.teacher, self.ms_tiles, self.columns, self.device = teacher, ms_tiles, columns, ctx.device
        teacher.eval()
        with torch.no_grad():
            probe = teacher.forward_features(ms_tiles[:2].to(self.device))
        per_tile = sum(t[0].numel() for t in (probe.feature_map, probe.intermediate)) * 4
        self.keeps_maps = ctx.dist.all(per_tile * len(ms_tiles) < psutil.virtual_memory().available // 4)

        def outputs(tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
            features = teacher.forward_features(tiles)
            kept = (features.logits, features.embedding)
            return kept + (features.feature_map, features.intermediate) if self.keeps_maps else kept

        results = ctx.infer(outputs, ms_tiles, batch_size)
        self.all_logits, self.embeddings = results[0], results[1]      # (M, n_ms_classes), (M, E)
        self.logits = self.all_logits[:, columns].contiguous()         # (M, n_student): gallery G2
        self.feature_maps = results[2] if self.keeps_maps else None
        self.intermediates = results[3] if self.keeps_maps else None

    def features(self, ms_index: torch.Tensor) -> Features:
        """Teacher Features of the given MS tiles on the device, logits in student class order."""
        if self.keeps_maps:
            feature_map, intermediate = self.feature_maps[ms_index], self.intermediates[ms_index]
        else:
            with torch.no_grad():
                features = self.teacher.forward_features(self.ms_tiles[ms_index].to(self.device))
            feature_map, intermediate = features.feature_map.float(), features.intermediate.float()
        return Features(
            feature_map=feature_map.to(self.device, non_blocking=True),
            intermediate=intermediate.to(self.device, non_blocking=True),
            embedding=self.embeddings[ms_index].to(self.device, non_blocking=True),
            logits=self.logits[ms_index].to(self.device, non_blocking=True),
        )
