"""Stages (c)-(e) of Algorithm 1: galleries, the initial matching (SSM) and the student with DynM.

The frozen teacher's outputs for every MS tile are computed once (TeacherBank); a student batch
looks up its matched teachers' features by MS index. At the DynM epochs the student re-picks its
teachers (one matrix operation per class); every matching round is written as a match table.
Under torchrun the galleries and DynM's logits are inferred sharded and gathered, and every rank
takes rank 0's match table.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_csv_atomic
from ..data import resize_tiles
from ..distill.hubness import busiest_teacher_shares
from ..distill.matching import dynm_epochs, dynm_match, random_class_consistent_match, ssm_match
from ..distill.objective import TERMS, SemBridgeObjective
from ..events import MatchingUpdated
from ..metrics import classification_metrics, orthogonal_projection, transport_cost
from ..models.backbones import Backbone, build_backbone
from ..models.matcher import Matcher
from .bank import TeacherBank
from .context import RunContext
from .dataset import RunData
from .augment import Augmentation
from .distributed import Step
from .loops import build_optimizer, build_scheduler, epoch_generator
from .stage_loop import StageSpec, run_stage

MATCH_TABLE_HEADER = ("rgb_path", "ms_path", "class", "score")
HUB_SHARE = 0.5   # one MS tile teaching more than half of a class's RGB images


def initial_match(ctx: RunContext, data: RunData, matcher: Matcher | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """SSM with the matcher's embeddings (galleries G1), or random same-class pairs without a matcher."""
    labels = data.rgb_labels[data.rgb_train]
    membership = data.ms_membership
    if matcher is None:
        generator = torch.Generator().manual_seed(ctx.seed)
        match = random_class_consistent_match(labels, membership, generator)
        return match, torch.full((len(match),), float("nan")), "random"
    ctx.log("galleries: matcher embeddings of every MS tile; SSM matching of the RGB train tiles")
    matcher.eval()
    batch = ctx.config.matcher.batch_size
    gallery = ctx.infer(matcher.encode_ms, data.ms_tiles, batch)
    size = ctx.config.data.ms_tile_size
    queries = ctx.infer(lambda tiles: matcher.encode_rgb(resize_tiles(tiles, size)), data.rgb_tiles.subset(data.rgb_train),
                        batch)
    distill = ctx.config.distill
    match, score = ssm_match(queries, labels, gallery, membership, similarity=distill.ssm_similarity,
                             neighbours=distill.csls_neighbours, capacity=distill.teacher_capacity)
    return ctx.dist.broadcast(match.cpu()), ctx.dist.broadcast(score.float().cpu()), "ssm"


def warn_about_hub_teachers(ctx: RunContext, data: RunData, match: torch.Tensor, round_index: int) -> None:
    """Say so when a matching round hands most of a class to one MS tile: its errors then reach most of the
    class's students. SSM (round 0) does this when the matcher has not learnt to tell the class's tiles
    apart: its RGB embeddings gather near one point and the MS tile nearest that point wins
    (tests/benchmarks/hubness.py). DynM rounds match on predictions, not on the matcher, and gather anew."""
    shares = busiest_teacher_shares(match, data.rgb_labels[data.rgb_train], len(data.student_classes),
                                    len(data.ms_tiles))
    crowded = [f"{name} ({share:.0%})" for name, share in zip(data.student_classes, shares.tolist()) if share > HUB_SHARE]
    if not crowded:
        return
    if round_index == 0:
        source, remedy = "SSM", ("The Teachers page shows the pairing; more matcher epochs help the matcher tell the "
                                 "tiles apart, and distill.teacher_capacity = 1 spreads the teaching by construction.")
    else:
        source, remedy = f"DynM round {round_index}", (
            "DynM matches on the teacher's and the student's predictions, so matcher settings do not change this; "
            "distill.teacher_capacity = 1 spreads the teaching by construction.")
    ctx.log(f"{source} pairs most RGB training images of {', '.join(crowded)} with a single MS tile: that tile's "
            f"errors reach most of the class. {remedy}", "warning")


def write_match_table(ctx: RunContext, data: RunData, round_index: int, match: torch.Tensor,
                      score: torch.Tensor) -> Path:
    """matches/round_<k>.csv: which MS tile teaches which RGB training image in matching round k (rank 0 writes it)."""
    path = ctx.folder.match_table(round_index)
    if not ctx.writes:
        return path
    labels = data.rgb_labels[data.rgb_train].tolist()
    rows = [(data.rgb_paths[rgb], data.ms_paths[ms], data.student_classes[label],
             "" if math.isnan(value) else f"{value:.6g}")
            for rgb, ms, label, value in zip(data.rgb_train.tolist(), match.tolist(), labels, score.tolist())]
    write_csv_atomic(path, MATCH_TABLE_HEADER, rows)
    return path


class StudentStage:
    """The student's training step, DynM re-matching, evaluation with transport cost, and its state."""

    def __init__(self, ctx: RunContext, data: RunData, teacher: Backbone | None, matcher: Matcher | None) -> None:
        self.ctx, self.data = ctx, data
        config = ctx.config
        self.section, self.distill = config.student, config.distill
        self.n_classes = len(data.student_classes)
        self.bank: TeacherBank | None = None
        self.match = self.score = None
        self.round = 0
        if teacher is not None:
            ctx.log("teacher features of every MS tile computed once (the teacher is frozen)")
            self.bank = TeacherBank(ctx, teacher, data.ms_tiles, data.teacher_columns, config.teacher.batch_size)
            if not self.bank.keeps_maps:
                ctx.log("teacher feature maps do not fit in memory; they are recomputed per batch", "warning")
            self.match, self.score, kind = initial_match(ctx, data, matcher)
            if kind == "ssm":
                warn_about_hub_teachers(ctx, data, self.match, 0)
            write_match_table(ctx, data, 0, self.match, self.score)
            ctx.emit(MatchingUpdated(0, kind, 1.0, str(ctx.folder.match_table(0))))
        ctx.seed_models("student")
        self.student = build_backbone(self.section.arch, 3, self.n_classes, self.section.pretrained).to(ctx.device)
        self.objective = SemBridgeObjective.build(self.distill, self.student, teacher, self.section.epochs,
                                                  gather=ctx.dist.gather_rows_with_grad,
                                                  label_smoothing=config.train.label_smoothing).to(ctx.device)
        self.modules = {"student": self.student, **self.objective.learnable_parts()}
        self.optimizer = build_optimizer([p for m in self.modules.values() for p in m.parameters()], self.section, config)
        self.step = ctx.parallel(Step(self._forward, student=self.student, objective=self.objective))
        self.rematch_at = (set(dynm_epochs(self.distill.e0, self.distill.delta_e, self.distill.e_mu, self.section.epochs))
                           - {0}) if teacher is not None and self.distill.dynm else set()
        probe = torch.randperm(len(data.rgb_train), generator=epoch_generator(ctx.seed, "probe", 0))
        self.probe = probe[:self.distill.probe_size].sort().values
        self.augment = Augmentation.for_stage(config.augment, rgb=True)
        self.gradient_shares: dict[str, float] = {}
        self.projection = None
        if self.bank is not None and self.bank.embeddings.shape[1] != self.student.embedding_dim:
            widths = (self.bank.embeddings.shape[1], self.student.embedding_dim)
            self.projection = orthogonal_projection(max(widths), min(widths), ctx.seed)

    def _forward(self, tiles: torch.Tensor, teacher, labels: torch.Tensor, epoch: int):
        features = self.student.forward_features(tiles)
        return features, self.objective(features, teacher, labels, epoch)

    def train_step(self, positions: torch.Tensor, generator: torch.Generator, epoch: int) -> dict[str, float]:
        ctx, data = self.ctx, self.data
        part = ctx.dist.part(len(positions))
        index = data.rgb_train[positions[part]]
        tiles = self.augment(data.rgb_tiles[index].to(ctx.device), generator, data.rgb_stats, part=part,
                             total=len(positions))
        labels = data.rgb_labels[index].to(ctx.device)
        with ctx.autocast():
            teacher = self.bank.features(self.match[positions[part]]) if self.bank is not None else None
            features, terms = self.step(tiles, teacher, labels, epoch - 1)
        if teacher is not None and not self.gradient_shares and not ctx.dist.enabled:  # DDP's reducer expects one backward
            self.gradient_shares = self.measure_gradient_shares(terms)
        ctx.backward(self.optimizer, terms["total"], ctx.dist.weight(len(positions)))
        correct = (features.logits.detach().argmax(1) == labels).float().mean()
        values = torch.stack([*(terms[name] for name in TERMS), correct]).float().tolist()
        keys = [f"loss_{name}" for name in TERMS] + ["train_acc"]
        return {"n": len(index), **dict(zip(keys, values))}

    def measure_gradient_shares(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each weighted term's share of the gradient norm on the student's own parameters, on one batch
        (the first of each epoch): how much each term actually steers the student, which its loss value
        alone does not tell (four extra backward passes per epoch)."""
        objective = self.objective
        weights = {"task": 1.0, "kd": objective.lambda1, "ot1": objective.lambda2, "ot2": objective.lambda2}
        parameters = [parameter for parameter in self.student.parameters() if parameter.requires_grad]
        norms = {}
        for name, weight in weights.items():
            if not terms[name].requires_grad or weight == 0:
                norms[name] = 0.0
                continue
            gradients = torch.autograd.grad(terms[name] * weight, parameters, retain_graph=True, allow_unused=True)
            norms[name] = float(torch.sqrt(sum(gradient.float().square().sum() for gradient in gradients
                                               if gradient is not None)))
        total = sum(norms.values()) or 1.0
        return {f"grad_share_{name}": norm / total for name, norm in norms.items()}

    def after_epoch(self, epoch: int) -> dict[str, Any]:
        """This epoch's gradient shares, and DynM at its scheduled epochs: every RGB training tile re-picks
        its same-class teacher."""
        row, self.gradient_shares = dict(self.gradient_shares), {}
        if epoch not in self.rematch_at:
            return row
        ctx, data = self.ctx, self.data
        logits = ctx.infer(self.student, data.rgb_tiles.subset(data.rgb_train), self.section.batch_size)
        new_match, kl = dynm_match(logits, data.rgb_labels[data.rgb_train], self.bank.logits, data.ms_membership,
                                   self.distill.gamma, capacity=self.distill.teacher_capacity)
        new_match, kl = ctx.dist.broadcast(new_match.cpu()), ctx.dist.broadcast(kl.float().cpu())
        changed = float((new_match != self.match).float().mean())
        self.match, self.score, self.round = new_match, kl, self.round + 1
        warn_about_hub_teachers(ctx, data, new_match, self.round)
        path = write_match_table(ctx, data, self.round, new_match, kl)
        ctx.emit(MatchingUpdated(epoch, "dynm", changed, str(path)))
        return {**row, "matching_changed_fraction": changed, "matching_round": self.round}

    def evaluate(self, epoch: int) -> dict[str, Any]:
        ctx, data = self.ctx, self.data
        logits = ctx.infer(self.student, data.rgb_tiles.subset(data.rgb_val), self.section.batch_size)
        result = classification_metrics(data.rgb_labels[data.rgb_val], logits.argmax(1), self.n_classes)
        row = {"val_oa": result["oa"], "val_macro_f1": result["macro_f1"],
               "per_class_f1": result["per_class_f1"], "confusion": result["confusion"],
               "transport_cost_logit": None, "transport_cost_feature": None}
        if self.bank is not None:
            row.update(self.transport_costs())
        return row

    def transport_costs(self) -> dict[str, float]:
        """Exact transport cost between the student and its matched teachers on the fixed probe set."""
        data, bank = self.data, self.bank
        with torch.no_grad():
            features = self.student.forward_features(data.rgb_tiles[data.rgb_train[self.probe]].to(self.ctx.device))
        partners = self.match[self.probe]
        student_embedding, teacher_embedding = features.embedding.float().cpu(), bank.embeddings[partners]
        if self.projection is not None:
            if student_embedding.shape[1] > teacher_embedding.shape[1]:
                student_embedding = student_embedding @ self.projection
            else:
                teacher_embedding = teacher_embedding @ self.projection
        return {"transport_cost_logit": transport_cost(features.logits.float().cpu(), bank.logits[partners]),
                "transport_cost_feature": transport_cost(student_embedding, teacher_embedding)}

    def extra_state(self) -> dict[str, Any]:
        if self.match is None:
            return {}
        return {"match": self.match, "match_score": self.score, "match_round": self.round}

    def restore_extra(self, saved: dict[str, Any]) -> None:
        if "match" in saved:
            self.match, self.score, self.round = saved["match"], saved["match_score"], int(saved["match_round"])

    def meta(self) -> dict[str, Any]:
        return {"arch": self.section.arch, "in_channels": 3, "num_classes": self.n_classes,
                "class_names": list(self.data.student_classes), "tile_size": self.ctx.config.data.rgb_tile_size,
                "rgb_stats": self.data.rgb_stats.to_dict()}

    def run(self) -> Backbone:
        ctx = self.ctx
        run_stage(ctx, StageSpec(
            "student", self.section.epochs, self.section.batch_size, len(self.data.rgb_train), self.modules,
            self.optimizer, build_scheduler(self.optimizer, self.section.epochs, ctx.config), self.train_step,
            self.evaluate, self.meta(), select="student", score=lambda row: (row["val_oa"], row["val_macro_f1"]),
            after_epoch=self.after_epoch, extra_state=self.extra_state, restore_extra=self.restore_extra,
            recalibrate=lambda generator: ctx.recalibrate_batchnorm(
                [self.student], self.student, self.data.rgb_tiles.subset(self.data.rgb_train), self.section.batch_size,
                generator),
        ))
        ctx.stage_info["student"]["matching_rounds"] = self.round if self.match is not None else 0
        return self.student
