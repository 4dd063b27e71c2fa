"""Classification metrics and the transport cost between student and teacher distributions.

Everything is vectorised (bincount / matrix ops); the transport cost is the exact EMD of eq. 1
(POT ``ot.emd2``, uniform weights, squared-Euclidean cost), the quantity in the paper's Figs 2 and 7.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predicted classes."""
    true = _as_numpy(y_true).astype(np.int64).ravel()
    pred = _as_numpy(y_pred).astype(np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} entries but y_pred has {pred.size}")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2TP / (2TP + FP + FN); 0 for a class never true nor predicted."""
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, Any]:
    """OA, macro F1 (over classes that occur in truth or prediction, like scikit-learn),
    per-class F1 and the confusion matrix, as JSON-ready Python values."""
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    total = confusion.sum()
    per_class = f1_from_confusion(confusion)
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return {
        "oa": float(np.trace(confusion) / total) if total else 0.0,
        "macro_f1": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class_f1": [float(value) for value in per_class],
        "confusion": confusion.tolist(),
    }


def multilabel_metrics(targets, scores, threshold: float = 0.5) -> dict[str, Any]:
    """Macro and per-class F1 of a multi-label prediction (scores are probabilities)."""
    truth = _as_numpy(targets) > 0.5
    pred = _as_numpy(scores) >= threshold
    tp = (truth & pred).sum(axis=0).astype(np.float64)
    denominator = truth.sum(axis=0) + pred.sum(axis=0)
    per_class = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = denominator > 0
    return {
        "oa": None,
        "macro_f1": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class_f1": [float(value) for value in per_class],
    }


def transport_cost(source, target) -> float:
    """Exact Wasserstein cost (EMD) between two point clouds with uniform weights and
    squared-Euclidean ground cost: min_P <P, C>, C_ij = ||s_i - t_j||^2."""
    import ot

    source = _as_numpy(source).astype(np.float64)
    target = _as_numpy(target).astype(np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"transport cost needs (n, d) and (m, d) arrays, got {source.shape} and {target.shape}")
    weights_source = np.full(source.shape[0], 1.0 / source.shape[0])
    weights_target = np.full(target.shape[0], 1.0 / target.shape[0])
    cost = ot.dist(source, target, metric="sqeuclidean")
    return float(ot.emd2(weights_source, weights_target, cost))


def orthogonal_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A fixed (in_dim, out_dim) matrix with orthonormal columns (in_dim >= out_dim), seeded.

    Used to compare pooled features of different widths in one space without a learned map,
    so the feature transport cost stays comparable across methods and epochs.
    """
    if out_dim > in_dim:
        raise ValueError(f"cannot project {in_dim} dimensions up to {out_dim} orthogonally")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(in_dim, out_dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).to(torch.float32)
