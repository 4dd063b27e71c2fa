"""Hubness-aware matching, beyond the paper: keeping a few "hub" MS tiles from teaching most students.

Nearest-neighbour search across two modalities concentrates on a few gallery items that are close
to everything (hubs): with plain SSM one MS tile can teach most RGB images of its class, and its
errors are then copied into most students' targets. Two standard remedies, both per class and one
matrix operation each:

* CSLS (cross-domain similarity local scaling, Conneau et al. 2018, the usual fix in cross-lingual
  retrieval): CSLS(x, y) = 2 cos(x, y) - r_G(x) - r_V(y), with r the mean cosine of a point to its k
  nearest neighbours in the other set. A hub's r_V is high, so its scores drop.
* Capacity-balanced assignment: every MS tile of a class may teach at most
  ceil(capacity x N_c / K_c) of the class's N_c RGB images; the pairing maximises the total score
  under that limit, solved exactly as a transport problem (POT's network simplex).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

MAX_ASSIGNMENT_ELEMENTS = 50_000_000  # RGB images x MS tiles of one class for an exact assignment


def busiest_teacher_shares(match: Tensor, labels: Tensor, classes: int, teachers: int) -> Tensor:
    """(classes,) share of each class's RGB images taught by its busiest MS tile, from a pairing
    (``match``: MS index per RGB image, ``labels``: its class); 0 for a class without images."""
    counts = torch.bincount(labels.long() * teachers + match.long(), minlength=classes * teachers).view(classes, teachers)
    return counts.max(1).values / counts.sum(1).clamp(min=1)


def csls(similarity: Tensor, neighbours: int) -> Tensor:
    """CSLS scores from an (N_c, K_c) cosine matrix of one class (rows RGB, columns MS)."""
    rows_k, columns_k = min(neighbours, similarity.shape[1]), min(neighbours, similarity.shape[0])
    row_density = similarity.topk(rows_k, dim=1).values.mean(1, keepdim=True)
    column_density = similarity.topk(columns_k, dim=0).values.mean(0, keepdim=True)
    return 2 * similarity - row_density - column_density


def teacher_limit(capacity: float, students: int, teachers: int) -> int:
    """How many RGB images one MS tile may teach: ceil(capacity x N_c / K_c), at least 1."""
    return max(1, math.ceil(capacity * students / teachers))


def capacity_assignment(score: Tensor, capacity: float) -> Tensor:
    """Column chosen for every row, maximising the total score with each column used at most
    ``teacher_limit(capacity, rows, columns)`` times (an exact, integral transport plan)."""
    import ot

    students, teachers = score.shape
    if students * teachers > MAX_ASSIGNMENT_ELEMENTS:
        raise ValueError(f"a capacity-balanced matching of {students} RGB images with {teachers} MS tiles of one class "
                         f"is too large to solve exactly; set distill.teacher_capacity = 0 for this archive")
    limit = teacher_limit(capacity, students, teachers)
    cost = -score.detach().double().cpu().numpy()
    supply = np.ones(students)
    demand = np.full(teachers, float(limit))
    spare = limit * teachers - students
    if spare:  # unused teaching capacity goes to a dummy student at no cost
        cost = np.vstack([cost, np.zeros((1, teachers))])
        supply = np.append(supply, float(spare))
    plan = ot.emd(supply, demand, cost - cost.min(), numItermax=10_000_000)
    return torch.from_numpy(plan[:students].argmax(axis=1)).to(score.device)
