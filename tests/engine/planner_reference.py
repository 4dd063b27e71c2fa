"""The Planner's maths as first implemented (commit b2e8e1f), frozen as the reference for its optimised form.

Written the straightforward way (separate reshapes, the outer product materialised, patches
transposed back to maps before pooling, CORAL's Gram path as three products): the module in
sembridge_engine/distill/planner.py must give the same losses and gradients from the same
parameters, which it loads from this module's state dict (same names).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reference_coral(source: Tensor, target: Tensor) -> Tensor:
    rows_s, rows_t, d = source.shape[0], target.shape[0], source.shape[1]
    centred_s = source - source.mean(0, keepdim=True)
    centred_t = target - target.mean(0, keepdim=True)
    if d <= rows_s + rows_t:
        difference = centred_s.T @ centred_s / (rows_s - 1) - centred_t.T @ centred_t / (rows_t - 1)
        squared_norm = difference.pow(2).sum()
    else:
        centred_s, centred_t = centred_s.double(), centred_t.double()
        squared_norm = ((centred_s @ centred_s.T).pow(2).sum() / (rows_s - 1) ** 2
                        + (centred_t @ centred_t.T).pow(2).sum() / (rows_t - 1) ** 2
                        - 2 * (centred_s @ centred_t.T).pow(2).sum() / ((rows_s - 1) * (rows_t - 1))
                        ).clamp_min(0).to(source.dtype)
    return squared_norm / (4 * d * d)


class ReferenceAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = max(width // heads, 1)
        self.query = nn.Linear(width, heads * self.head_dim)
        self.key = nn.Linear(width, heads * self.head_dim)

    def forward(self, patches: Tensor) -> Tensor:
        batch, count, _ = patches.shape
        queries = self.query(patches).view(batch, count, self.heads, self.head_dim).transpose(1, 2)
        keys = self.key(patches).view(batch, count, self.heads, self.head_dim).transpose(1, 2)
        plan = torch.softmax(queries @ keys.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return plan.mean(dim=2)


def _cross_modal_weights(own: Tensor, other: Tensor) -> Tensor:
    cross = (own.unsqueeze(-1) * other.unsqueeze(-2)).mean(-1)
    cross = cross / cross.mean(-1, keepdim=True).clamp_min(1e-12)
    return cross.mean(1)


def _reweight(patches: Tensor, weights: Tensor) -> Tensor:
    weighted = patches * weights.unsqueeze(-1)
    scale = patches.mean(1).norm(dim=1) / weighted.mean(1).norm(dim=1).clamp_min(1e-12)
    return weighted * scale[:, None, None]


def _pool_to_grid(patches: Tensor, height: int, width: int, grid: tuple[int, int]) -> Tensor:
    maps = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], height, width)
    if (height, width) != grid:
        maps = F.adaptive_avg_pool2d(maps, grid)
    return maps.flatten(1)


class ReferencePlanner(nn.Module):
    def __init__(self, teacher_channels: int, student_channels: int, heads: int, width: int | None):
        super().__init__()
        self.width = width if width is not None else teacher_channels
        if self.width == teacher_channels:
            self.register_buffer("teacher_projection", None)
        else:
            self.register_buffer("teacher_projection", nn.init.orthogonal_(torch.empty(self.width, teacher_channels)))
        self.student_projection = (nn.Identity() if student_channels == self.width
                                   else nn.Linear(student_channels, self.width))
        self.teacher_attention = ReferenceAttention(self.width, heads)
        self.student_attention = ReferenceAttention(self.width, heads)

    def forward(self, z_t: Tensor, z_s: Tensor) -> tuple[Tensor, Tensor]:
        z_t = z_t.detach()
        patches_t = z_t.flatten(2).transpose(1, 2)
        if self.teacher_projection is not None:
            patches_t = patches_t @ self.teacher_projection.T
        patches_s = self.student_projection(z_s.flatten(2).transpose(1, 2))
        weights_t = self.teacher_attention(patches_t)
        weights_s = self.student_attention(patches_s)
        refined_t = _reweight(patches_t, _cross_modal_weights(weights_t, weights_s))
        refined_s = _reweight(patches_s, _cross_modal_weights(weights_s, weights_t))
        grid = (min(z_t.shape[2], z_s.shape[2]), min(z_t.shape[3], z_s.shape[3]))
        loss_refined = reference_coral(_pool_to_grid(refined_s, z_s.shape[2], z_s.shape[3], grid),
                                       _pool_to_grid(refined_t, z_t.shape[2], z_t.shape[3], grid))
        loss_pooled = reference_coral(patches_s.mean(1), patches_t.mean(1))
        return loss_refined, loss_pooled
