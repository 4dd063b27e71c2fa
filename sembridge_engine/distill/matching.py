"""Student-friendly matching: SSM (eqs. 8-10), DynM (eqs. 11-13) and a random baseline.

`ms_membership` is an (M, n_classes) bool matrix, True where MS tile m may teach class c, so
multi-label MS tiles serve every class they carry. `rgb_labels` are (N,) student class indices.
Teacher logits must already be restricted to the student's classes. Work is one matrix
operation per class (row-chunked to bound memory), never a Python loop over tiles;
`dynm_match_loop` is the per-tile reference kept for the test and the benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .hubness import capacity_assignment, csls

_MAX_BLOCK_ELEMENTS = 1 << 24  # rows x candidates per matrix product (64 MB in float32)
SIMILARITIES = ("cosine", "csls")


def dynm_epochs(e0: int, delta_e: int, e_mu: int, total_epochs: int) -> list[int]:
    """Epochs e_t = e0 + sum_{i=1..t} (delta_e + e_mu (i - 1)), t = 0, 1, ..., that are < total_epochs."""
    if e0 < 0 or delta_e < 1 or e_mu < 0:
        raise ValueError(f"DynM schedule needs e0 >= 0, delta_e >= 1, e_mu >= 0; got e0={e0}, "
                         f"delta_e={delta_e}, e_mu={e_mu}")
    epochs: list[int] = []
    epoch, step = e0, delta_e
    while epoch < total_epochs:
        epochs.append(epoch)
        epoch, step = epoch + step, step + e_mu
    return epochs


def _class_groups(rgb_labels: Tensor, ms_membership: Tensor):
    """Yield (RGB row indices, MS candidate indices) for every class the RGB tiles use."""
    if ms_membership.dtype != torch.bool or ms_membership.dim() != 2:
        raise ValueError(f"ms_membership must be an (M, n_classes) bool tensor, got {ms_membership.dtype} "
                         f"{tuple(ms_membership.shape)}")
    rgb_labels = rgb_labels.long()
    if len(rgb_labels) and (rgb_labels.min() < 0 or rgb_labels.max() >= ms_membership.shape[1]):
        raise ValueError(f"rgb_labels must lie in [0, {ms_membership.shape[1]}), got "
                         f"[{int(rgb_labels.min())}, {int(rgb_labels.max())}]")
    for cls in torch.unique(rgb_labels).tolist():
        rows = torch.nonzero(rgb_labels == cls).squeeze(1)
        candidates = torch.nonzero(ms_membership[:, cls]).squeeze(1)
        if len(candidates) == 0:
            raise ValueError(f"class index {cls} has {len(rows)} RGB tiles but no MS tile to match")
        yield rows, candidates


def _row_blocks(rows: Tensor, candidate_count: int):
    block = max(1, _MAX_BLOCK_ELEMENTS // max(candidate_count, 1))
    return rows.split(block)


def ssm_match(rgb_embeddings: Tensor, rgb_labels: Tensor, ms_embeddings: Tensor, ms_membership: Tensor, *,
              similarity: str = "cosine", neighbours: int = 10, capacity: float = 0.0) -> tuple[Tensor, Tensor]:
    """For every RGB tile: the same-class MS tile of highest similarity -> (MS index, cosine).

    ``similarity`` "cosine" is the paper's eq. 8; "csls" corrects it for hubs. ``capacity`` > 0 limits
    how many RGB images one MS tile may teach (see distill/hubness.py); 0 is the paper's free argmax.
    """
    if rgb_embeddings.shape[1] != ms_embeddings.shape[1]:
        raise ValueError(f"embedding widths differ: RGB {rgb_embeddings.shape[1]}, MS {ms_embeddings.shape[1]}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    rgb = F.normalize(rgb_embeddings.float(), dim=1)
    ms = F.normalize(ms_embeddings.float(), dim=1)
    indices = torch.empty(len(rgb), dtype=torch.long, device=rgb.device)
    scores = torch.empty(len(rgb), dtype=rgb.dtype, device=rgb.device)
    for rows, candidates in _class_groups(rgb_labels.to(rgb.device), ms_membership.to(rgb.device)):
        gallery_t = ms[candidates].T
        if similarity == "cosine" and not capacity:
            for block in _row_blocks(rows, len(candidates)):
                best, position = (rgb[block] @ gallery_t).max(dim=1)
                indices[block], scores[block] = candidates[position], best
            continue
        cosine = rgb[rows] @ gallery_t
        ranking = csls(cosine, neighbours) if similarity == "csls" else cosine
        position = capacity_assignment(ranking, capacity) if capacity else ranking.argmax(dim=1)
        indices[rows], scores[rows] = candidates[position], cosine.gather(1, position[:, None]).squeeze(1)
    return indices, scores


def _log_softmax(logits: Tensor) -> Tensor:
    """Row log-softmax; for few classes this is several times faster than F.log_softmax on CPU."""
    return logits - logits.logsumexp(1, keepdim=True)


def dynm_match(student_logits: Tensor, rgb_labels: Tensor, teacher_logits: Tensor, ms_membership: Tensor,
               gamma: float, *, capacity: float = 0.0) -> tuple[Tensor, Tensor]:
    """For every RGB tile: the same-class MS tile minimising KL(p_T || p_S) at temperature gamma.

    Per class, Omega = (p_T log p_T).sum(-1)[None, :] - log_softmax(s / gamma) @ p_T.T, one matrix
    product, computed in float64 (float32 on MPS) so the argmin is not decided by rounding. With
    ``capacity`` > 0 each MS tile teaches at most its share (distill/hubness.py). Returns (MS index, KL).
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        raise ValueError(f"student logits have {student_logits.shape[1]} classes, teacher logits "
                         f"{teacher_logits.shape[1]}: restrict the teacher's logits to the student's classes")
    exact = torch.float32 if student_logits.device.type == "mps" else torch.float64  # MPS has no float64
    log_p_s = _log_softmax(student_logits.to(exact) / gamma)
    log_p_t = _log_softmax(teacher_logits.to(log_p_s.device, exact) / gamma)
    p_t = log_p_t.exp()
    negative_entropy = (p_t * log_p_t).sum(1)
    indices = torch.empty(len(log_p_s), dtype=torch.long, device=log_p_s.device)
    scores = torch.empty(len(log_p_s), dtype=exact, device=log_p_s.device)
    for rows, candidates in _class_groups(rgb_labels.to(log_p_s.device), ms_membership.to(log_p_s.device)):
        p_t_class_t, entropy_class = p_t[candidates].T, negative_entropy[candidates]
        if capacity:
            divergence = entropy_class[None, :] - log_p_s[rows] @ p_t_class_t
            position = capacity_assignment(-divergence, capacity)
            indices[rows], scores[rows] = candidates[position], divergence.gather(1, position[:, None]).squeeze(1)
            continue
        for block in _row_blocks(rows, len(candidates)):
            divergence = entropy_class[None, :] - log_p_s[block] @ p_t_class_t
            best, position = divergence.min(dim=1)
            indices[block], scores[block] = candidates[position], best
    return indices, scores.to(student_logits.dtype)


def dynm_match_loop(student_logits: Tensor, rgb_labels: Tensor, teacher_logits: Tensor, ms_membership: Tensor,
                    gamma: float) -> tuple[Tensor, Tensor]:
    """Reference DynM: one tile at a time with torch.nn.functional.kl_div (slow; tests/benchmark only)."""
    rgb_labels = rgb_labels.long()
    indices = torch.empty(len(student_logits), dtype=torch.long)
    scores = torch.empty(len(student_logits), dtype=torch.float64)
    for n in range(len(student_logits)):
        candidates = torch.nonzero(ms_membership[:, rgb_labels[n]]).squeeze(1)
        p_t = F.softmax(teacher_logits[candidates].double() / gamma, dim=1)
        log_p_s = F.log_softmax(student_logits[n].double() / gamma, dim=0).expand_as(p_t)
        divergence = F.kl_div(log_p_s, p_t, reduction="none").sum(1)
        best, position = divergence.min(dim=0)
        indices[n], scores[n] = candidates[position], best
    return indices, scores.to(student_logits.dtype)


def random_class_consistent_match(rgb_labels: Tensor, ms_membership: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random same-class MS tile for every RGB tile (the no-SSM baseline)."""
    indices = torch.empty(len(rgb_labels), dtype=torch.long)
    for rows, candidates in _class_groups(rgb_labels.cpu(), ms_membership.cpu()):
        indices[rows] = candidates[torch.randint(len(candidates), (len(rows),), generator=generator)]
    return indices
