"""SKA "Planner" (eqs. 14-20) and CORAL (Appendix A2), as read in docs/method.md.

Shapes, with z_T (B, C_T, H_T, W_T) from the frozen teacher and z_S (B, C_S, H_S, W_S):

1. Patches P_T (B, N_T, C_T), P_S (B, N_S, C_S) are brought to a common width w. By default
   w = C_T: the teacher keeps its own space and the student gets a learned Linear(C_S, w)
   (identity when C_S == w, which makes the homogeneous case the paper's exact form). If a
   smaller `width` is asked for, the teacher is reduced by a FIXED random orthogonal map (a
   buffer): a learned map on the teacher side could shrink both sides towards zero and make
   CORAL vanish without aligning anything.
2. Each side has its own multi-head attention (H heads, per-head size d = w // H):
   pi = softmax(Q K^T / sqrt(d)), (B, H, N, N); mean over queries gives one weight per patch.
3. Cross-modal plans: outer product w_T x w_S (B, H, N_T, N_S), mean over the other modality's
   axis, divided by its own mean over patches (eps_T, eps_S), then averaged over heads (eq. 19).
4. D = patches * weights, rescaled per sample so that ||mean_patch(D)|| equals the unweighted
   ||mean_patch(P)|| (same energy).
5. N_T and N_S usually differ (different tile sizes and strides), so D_T and D_S are average-
   pooled on their spatial layout to the common grid (min(H_T, H_S), min(W_T, W_S)) and
   flattened per sample: rows = batch, d = w * grid cells. For equal grids this is exactly
   flatten(D). L_ot1 = CORAL(flatten(D_T), flatten(D_S)).
6. L_ot2 = CORAL of the pooled features in the common width, i.e. the patch means of the
   projected maps (for w = C_T the teacher side is exactly its pooled embedding).
7. Both CORAL terms use the same scale: the paper's 1 / (4 d^2) or, with ot_scale = "trace",
   each side's covariance divided by its trace (see coral()).

Cost. This runs on every student step, often beside a student far cheaper than attention at
the teacher's width. Most of its time is the projections' matrix products, which the maths
fixes; the rest is kept small: patches are made contiguous once per side in (B, N, w) layout
and later steps keep that layout (no transposes back to maps when the grids agree), the
cross-modal mean is own * mean(other) instead of a materialised outer product, the energy
rescaling folds into the per-patch weights, CORAL's wide form is one Gram product in float64,
and subnormal softmax gradients are flushed before they reach the weight gradients.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import Backbone, Features


OT_SCALES = ("paper", "trace")


def coral(source: Tensor, target: Tensor, scale: str = "paper") -> Tensor:
    """CORAL between the rows of two sides; widths must agree, row counts may differ.

    scale "paper": ||C_s - C_t||_F^2 / (4 d^2), C the unbiased covariance of each side's rows.
    scale "trace": ||C_s / tr C_s - C_t / tr C_t||_F^2, which compares the covariances' shapes
    whatever their magnitudes and lies in [0, 2] (a departure from the paper, docs/method.md).

    Both are ||X^T diag(w) X||_F^2 / norm for the stacked centred rows X, with w_i = 1/(n_s - 1)
    (paper) or 1/||X_s||_F^2 = 1/((n_s - 1) tr C_s) (trace) on source rows and minus the target's
    counterpart on target rows. For wide inputs (d larger than the rows) that equals
    sum_ij w_i w_j (X X^T)_ij^2, from the Gram matrix in float64: O(B^2 d) instead of O(B d^2).
    """
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"coral needs (n, d) and (m, d) tensors, got {tuple(source.shape)} and {tuple(target.shape)}")
    if scale not in OT_SCALES:
        raise ValueError(f"coral scale must be one of {OT_SCALES}, got {scale!r}")
    rows_s, rows_t = source.shape[0], target.shape[0]
    if rows_s < 2 or rows_t < 2:
        return (source.sum() + target.sum()) * 0.0
    dtype = torch.promote_types(torch.promote_types(source.dtype, target.dtype), torch.float32)
    with torch.autocast(source.device.type, enabled=False):  # covariances overflow / lose digits in fp16, bf16
        return _coral_full_precision(source.to(dtype), target.to(dtype), scale)


def _coral_full_precision(source: Tensor, target: Tensor, scale: str) -> Tensor:
    rows_s, rows_t, d = source.shape[0], target.shape[0], source.shape[1]
    centred_s = source - source.mean(0, keepdim=True)
    centred_t = target - target.mean(0, keepdim=True)
    wide = d > rows_s + rows_t
    # float64 (where supported): source and target terms nearly cancel when the covariances agree
    exact = torch.float32 if source.device.type == "mps" else torch.float64
    if wide:
        centred_s, centred_t = centred_s.to(exact), centred_t.to(exact)
    if scale == "paper":
        divisor_s, divisor_t, norm = rows_s - 1, rows_t - 1, 4 * d * d
    else:  # tr(X^T X) = ||X||_F^2; a constant side has no shape to compare and counts as zero covariance
        divisor_s = centred_s.square().sum().clamp_min(torch.finfo(centred_s.dtype).tiny)
        divisor_t = centred_t.square().sum().clamp_min(torch.finfo(centred_t.dtype).tiny)
        norm = 1
    if not wide:
        difference = centred_s.T @ centred_s / divisor_s - centred_t.T @ centred_t / divisor_t
        return difference.pow(2).sum() / norm
    stacked = torch.cat((centred_s, centred_t))
    signs = torch.cat((stacked.new_ones(rows_s) / divisor_s, stacked.new_ones(rows_t) / -divisor_t))
    gram = stacked @ stacked.T
    squared_norm = (signs @ gram.square() @ signs).clamp_min(0).to(source.dtype)
    return squared_norm / norm


class PatchAttention(nn.Module):
    """Per-modality intra-modal transport plans pi = softmax(Q K^T / sqrt(d)) (eqs. 15-17)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = max(width // heads, 1)
        self.query = nn.Linear(width, heads * self.head_dim)
        self.key = nn.Linear(width, heads * self.head_dim)

    def forward(self, patches: Tensor) -> Tensor:
        """(B, N, w) -> patch weights (B, H, N): each plan averaged over its queries."""
        batch, count, _ = patches.shape
        queries = self.query(patches).view(batch, count, self.heads, self.head_dim).transpose(1, 2)
        keys = self.key(patches).view(batch, count, self.heads, self.head_dim).transpose(1, 2)
        products = queries @ keys.transpose(-1, -2)
        if products.requires_grad and products.device.type == "cpu" and products.dtype in (torch.float32, torch.float64):
            products.register_hook(_flush_subnormal)
        return torch.softmax(products * (1.0 / math.sqrt(self.head_dim)), dim=-1).mean(dim=2)


def _flush_subnormal(gradient: Tensor) -> Tensor:
    """Zero the gradient entries below the dtype's smallest normal number (1.2e-38 in float32).

    A confident plan (scores tens apart, as on large teacher features) has softmax gradients that
    small. CPUs compute with such subnormal numbers many times slower, and the weight gradients
    of the projections are built from them: on the benchmark's untrained teacher this made the
    Planner's step half again as expensive. Zeroing them moves no gradient by more than 1e-38.
    GPUs handle subnormals at full speed, so only CPU float32/float64 gradients come here.
    """
    return gradient.masked_fill(gradient.abs() < torch.finfo(gradient.dtype).tiny, 0.0)


def _cross_modal_weights(own: Tensor, other: Tensor) -> Tensor:
    """(B, H, N_own), (B, H, N_other) -> (B, N_own): eq. 18 with eps = the mean, then eq. 19's head mean.

    The outer product's mean over the other modality's axis is own * mean(other), computed as
    such rather than materialising the (B, H, N_own, N_other) product (the same numbers). Note
    what the paper's form amounts to: every plan row sums to one, so mean(own) = 1 / N_own, eps
    = mean(other) / N_own, and the result is N_own * own whatever the other modality's weights.
    """
    cross = own * other.mean(-1, keepdim=True)
    cross = cross / cross.mean(-1, keepdim=True).clamp_min(1e-12)
    return cross.mean(1)


def _reweight(patches: Tensor, weights: Tensor, patch_mean: Tensor) -> Tensor:
    """Scale patches (B, N, w) by their weights (B, N), keeping the squared norm of the patch mean
    (the energy). `patch_mean` is patches.mean(1), which the caller needs anyway for L_ot2; the
    per-sample rescaling joins the weights so the patches are multiplied once."""
    weighted_mean = torch.einsum("bn,bnw->bw", weights, patches) / patches.shape[1]
    scale = patch_mean.norm(dim=1) / weighted_mean.norm(dim=1).clamp_min(1e-12)
    return patches * (weights * scale[:, None]).unsqueeze(-1)


def _pool_to_grid(patches: Tensor, height: int, width: int, grid: tuple[int, int]) -> Tensor:
    """(B, N, w) patches laid out on height x width -> (B, grid cells * w), flattened per sample.

    The coordinates come out cell-major ((cell, channel) rather than flatten(map)'s (channel,
    cell)); CORAL does not change when both sides' coordinates are permuted alike, and both
    sides come through here, so this saves the transposes without changing the loss.
    """
    if (height, width) != grid:
        maps = patches.view(patches.shape[0], height, width, patches.shape[2]).permute(0, 3, 1, 2)
        patches = F.adaptive_avg_pool2d(maps, grid).permute(0, 2, 3, 1)
    return patches.reshape(patches.shape[0], -1)


def _patches(feature_map: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (B, H * W, C): one copy, so no later step copies again."""
    return feature_map.flatten(2).transpose(1, 2).contiguous()


class Planner(nn.Module):
    """Learned SKA module; its parameters are optimised together with the student."""

    def __init__(self, teacher: Backbone, student: Backbone, heads: int = 8, width: int | None = None,
                 gather: Callable[[Tensor], Tensor] | None = None, ot_scale: str = "paper"):
        super().__init__()
        if ot_scale not in OT_SCALES:
            raise ValueError(f"ot_scale must be one of {OT_SCALES}, got {ot_scale!r}")
        self.ot_scale = ot_scale
        # CORAL compares covariances over the batch: when a batch is split over processes, ``gather``
        # brings every process's rows (with gradients) so each computes the whole batch's CORAL.
        self.gather = gather or (lambda rows: rows)
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        teacher_channels, student_channels = teacher.feature_channels, student.feature_channels
        self.width = width if width is not None else teacher_channels
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.heads = heads
        if self.width == teacher_channels:
            self.register_buffer("teacher_projection", None)
        else:
            self.register_buffer("teacher_projection", nn.init.orthogonal_(torch.empty(self.width, teacher_channels)))
        self.student_projection = (nn.Identity() if student_channels == self.width
                                   else nn.Linear(student_channels, self.width))
        self.teacher_attention = PatchAttention(self.width, heads)
        self.student_attention = PatchAttention(self.width, heads)

    def _teacher_patches(self, feature_map: Tensor) -> Tensor:
        patches = _patches(feature_map)
        return patches if self.teacher_projection is None else patches @ self.teacher_projection.T

    def forward(self, teacher: Features, student: Features) -> tuple[Tensor, Tensor]:
        """(L_ot1, L_ot2) for one batch of matched pairs."""
        z_t, z_s = teacher.feature_map.detach(), student.feature_map
        if z_t.shape[0] != z_s.shape[0]:
            raise ValueError(f"teacher batch {z_t.shape[0]} and student batch {z_s.shape[0]} differ")
        patches_t = self._teacher_patches(z_t)
        patches_s = self.student_projection(_patches(z_s))
        pooled_t, pooled_s = patches_t.mean(1), patches_s.mean(1)
        weights_t = self.teacher_attention(patches_t)
        weights_s = self.student_attention(patches_s)
        refined_t = _reweight(patches_t, _cross_modal_weights(weights_t, weights_s), pooled_t)
        refined_s = _reweight(patches_s, _cross_modal_weights(weights_s, weights_t), pooled_s)
        grid = (min(z_t.shape[2], z_s.shape[2]), min(z_t.shape[3], z_s.shape[3]))
        gather = self.gather
        loss_refined = coral(gather(_pool_to_grid(refined_s, z_s.shape[2], z_s.shape[3], grid)),
                             gather(_pool_to_grid(refined_t, z_t.shape[2], z_t.shape[3], grid)), self.ot_scale)
        loss_pooled = coral(gather(pooled_s), gather(pooled_t), self.ot_scale)
        return loss_refined, loss_pooled
