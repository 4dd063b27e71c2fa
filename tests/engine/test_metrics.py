"""Metrics against hand-computed values."""
import numpy as np
import pytest
import torch

from sembridge_engine.metrics import (
    classification_metrics,
    confusion_matrix,
    multilabel_metrics,
    orthogonal_projection,
    transport_cost,
)


def test_confusion_oa_and_f1_on_a_hand_made_example():
    truth = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    assert confusion_matrix(truth, predicted, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    result = classification_metrics(torch.tensor(truth), torch.tensor(predicted), 3)
    assert result["oa"] == pytest.approx(4 / 6)
    # class 0: P=1, R=2/3 -> 0.8; class 1: P=1/2, R=1/2 -> 0.5; class 2: P=1/2, R=1 -> 2/3
    assert result["per_class_f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_skips_classes_absent_from_truth_and_prediction():
    result = classification_metrics([0, 1], [0, 1], 4)
    assert result["macro_f1"] == pytest.approx(1.0)
    assert result["per_class_f1"] == [1.0, 1.0, 0.0, 0.0]


def test_multilabel_f1():
    targets = np.array([[1, 0], [1, 1], [0, 1]])
    scores = np.array([[0.9, 0.2], [0.4, 0.8], [0.1, 0.3]])
    result = multilabel_metrics(targets, scores)
    # class 0: TP=1, FN=1 -> 2/3; class 1: TP=1, FN=1 -> 2/3
    assert result["per_class_f1"] == pytest.approx([2 / 3, 2 / 3])


def test_transport_cost_equals_hand_computed_emd():
    source = np.array([[0.0], [1.0]])
    target = np.array([[0.0], [3.0]])
    # best plan pairs 0-0 (cost 0) and 1-3 (cost 4), each with mass 1/2
    assert transport_cost(source, target) == pytest.approx(2.0)
    # one target point takes all mass: (1 + 9) / 2 with target at (1, 3) in 2-D
    assert transport_cost(np.array([[0.0, 3.0], [2.0, 3.0]]), np.array([[1.0, 0.0]])) == pytest.approx(10.0)
    assert transport_cost(torch.ones(3, 4), torch.ones(5, 4)) == pytest.approx(0.0)


def test_orthogonal_projection_is_fixed_and_orthonormal():
    first, second = orthogonal_projection(16, 4, seed=3), orthogonal_projection(16, 4, seed=3)
    assert torch.equal(first, second)
    assert torch.allclose(first.T @ first, torch.eye(4), atol=1e-5)
    with pytest.raises(ValueError):
        orthogonal_projection(4, 16, seed=0)
