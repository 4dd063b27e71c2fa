"""The SemBridge student objective: L = L_task + lambda1 * L_kd + lambda2 * (L_ot1 + L_ot2), lambda2 = 1 - lambda1.

L_task is cross-entropy with the labels, optionally label-smoothed (``train.label_smoothing``) so an
RGB-only run can be given softened targets too: the control that separates what distillation
teaches from what any softening of the targets does.

One module owns the parts that train with the student (the KD loss's learnable pieces and the
Planner) and returns every term by name, as mdistiller's ``forward_train`` does, so the trainer
logs the terms it optimises and a new term is added here and nowhere else.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import Backbone, Features
from .losses import KDInputs, build_kd_loss
from .planner import Planner

TERMS = ("task", "kd", "ot1", "ot2", "total")


class SemBridgeObjective(nn.Module):
    def __init__(self, kd_loss: nn.Module | None, planner: Planner | None, lambda1: float,
                 ot1: bool, ot2: bool, total_epochs: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.kd_loss, self.planner = kd_loss, planner
        self.label_smoothing = label_smoothing
        self.lambda1, self.lambda2 = lambda1, 1.0 - lambda1
        self.ot1, self.ot2 = ot1, ot2
        self.total_epochs = total_epochs

    @classmethod
    def build(cls, distill, student: Backbone, teacher: Backbone | None, total_epochs: int,
              gather: Callable[[Tensor], Tensor] | None = None, label_smoothing: float = 0.0) -> "SemBridgeObjective":
        """From a DistillConfig: no teacher means the task loss alone (the RGB-only baseline). ``gather`` collects
        the rows of a batch split over processes (torchrun) where a term needs the whole batch (CORAL)."""
        kd_loss = planner = None
        if teacher is not None and distill.loss != "none":
            kd_loss = build_kd_loss(distill.loss, distill.params, student=student, teacher=teacher,
                                    pssm=distill.pssm, pssm_params=distill.pssm_params)
        if teacher is not None and (distill.ot1 or distill.ot2):
            planner = Planner(teacher, student, heads=distill.heads, width=distill.planner_width or None, gather=gather,
                              ot_scale=distill.ot_scale)
        return cls(kd_loss, planner, distill.lambda1, distill.ot1, distill.ot2, total_epochs, label_smoothing)

    def learnable_parts(self) -> dict[str, nn.Module]:
        """The parts trained with the student, by the names checkpoints store them under."""
        return {name: module for name, module in (("kd_loss", self.kd_loss), ("planner", self.planner))
                if module is not None}

    def forward(self, student: Features, teacher: Features | None, labels: Tensor, epoch: int) -> dict[str, Tensor]:
        """Every term for one batch of matched pairs; ``epoch`` is 0-based."""
        zero = torch.zeros((), device=student.logits.device)
        terms = {"task": F.cross_entropy(student.logits, labels, label_smoothing=self.label_smoothing), "kd": zero, "ot1": zero, "ot2": zero}
        if teacher is not None and self.kd_loss is not None:
            terms["kd"] = self.kd_loss(KDInputs(student, teacher, labels, epoch, self.total_epochs))
        if teacher is not None and self.planner is not None:
            refined, pooled = self.planner(teacher, student)
            terms["ot1"] = refined if self.ot1 else zero
            terms["ot2"] = pooled if self.ot2 else zero
        terms["total"] = terms["task"] + self.lambda1 * terms["kd"] + self.lambda2 * (terms["ot1"] + terms["ot2"])
        return terms
