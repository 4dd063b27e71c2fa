"""SKA Planner and CORAL (Appendix A2)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sembridge_engine.distill import Planner, coral
from sembridge_engine.distill.planner import _cross_modal_weights, _reweight
from sembridge_engine.models import build_backbone

torch.set_num_threads(1)


def _covariance_by_hand(rows: torch.Tensor) -> torch.Tensor:
    """Eq. 30: C = 1/(B-1) (R^T R - 1/B (1^T R)^T (1^T R)), element by element."""
    count, width = rows.shape
    column_sums = [sum(rows[b, i].item() for b in range(count)) for i in range(width)]
    return torch.tensor([[(sum(rows[b, i].item() * rows[b, j].item() for b in range(count))
                           - column_sums[i] * column_sums[j] / count) / (count - 1)
                          for j in range(width)] for i in range(width)], dtype=torch.float64)


@pytest.mark.parametrize("rows_s, rows_t, width", [(6, 5, 3), (3, 4, 10)])  # direct and Gram-matrix paths
def test_coral_equals_the_formula(rows_s, rows_t, width):
    generator = torch.Generator().manual_seed(rows_s * width)
    source = torch.randn(rows_s, width, generator=generator, dtype=torch.float64)
    target = 2 * torch.randn(rows_t, width, generator=generator, dtype=torch.float64) + 1
    expected = ((_covariance_by_hand(source) - _covariance_by_hand(target)) ** 2).sum() / (4 * width ** 2)
    torch.testing.assert_close(coral(source, target), expected)


def test_coral_is_zero_for_identical_inputs_and_checks_widths():
    features = torch.randn(8, 5)
    assert coral(features, features.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert coral(torch.randn(4, 50), torch.randn(4, 50)).item() > 0
    wide = torch.randn(4, 50)
    assert coral(wide, wide + 3.0).item() == pytest.approx(0.0, abs=1e-9)  # covariance ignores a shift
    with pytest.raises(ValueError, match="coral needs"):
        coral(torch.randn(4, 5), torch.randn(4, 6))


def test_cross_modal_weights_average_one_and_reweighting_keeps_energy():
    generator = torch.Generator().manual_seed(0)
    own = torch.softmax(torch.randn(2, 8, 4, generator=generator), -1)
    other = torch.softmax(torch.randn(2, 8, 9, generator=generator), -1)
    weights = _cross_modal_weights(own, other)
    assert weights.shape == (2, 4)
    torch.testing.assert_close(weights.mean(1), torch.ones(2))
    patches = torch.randn(2, 4, 6, generator=generator)
    refined = _reweight(patches, weights)
    torch.testing.assert_close(refined.mean(1).norm(dim=1), patches.mean(1).norm(dim=1))


@pytest.fixture(scope="module")
def teacher_and_ms():
    torch.manual_seed(0)
    teacher = build_backbone("resnet34", 13, 6).eval()
    with torch.no_grad():
        return teacher, teacher.forward_features(torch.randn(4, 13, 64, 64))


@pytest.mark.parametrize("student_arch, size, width", [
    ("mobilenet_v2", 48, None),          # 512 vs 1280 channels, 2x2 vs 2x2
    ("shufflenet_v2_x0_5", 48, None),    # 512 vs 1024 channels
    ("shufflenet_v2_x0_5", 96, 64),      # 2x2 vs 3x3 patches, reduced width
])
def test_heterogeneous_pairs_give_finite_losses_and_train_student_and_planner(teacher_and_ms, student_arch, size, width):
    teacher, teacher_features = teacher_and_ms
    torch.manual_seed(1)
    student = build_backbone(student_arch, 3, 6)
    planner = Planner(teacher, student, heads=8, width=width)
    student_features = student.forward_features(torch.randn(4, 3, size, size))
    loss_refined, loss_pooled = planner(teacher_features, student_features)
    assert loss_refined.dim() == loss_pooled.dim() == 0
    assert torch.isfinite(loss_refined) and torch.isfinite(loss_pooled) and loss_refined > 0 and loss_pooled > 0
    (loss_refined + loss_pooled).backward()
    first_conv = next(m for m in student.modules() if isinstance(m, nn.Conv2d)).weight
    assert first_conv.grad is not None and torch.isfinite(first_conv.grad).all() and first_conv.grad.abs().sum() > 0
    for part in (planner.student_projection, planner.student_attention, planner.teacher_attention):
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    if width is not None:
        projection = planner.teacher_projection
        assert "teacher_projection" in dict(planner.named_buffers())
        torch.testing.assert_close(projection @ projection.T, torch.eye(width), atol=1e-5, rtol=0)


def test_homogeneous_pair_uses_the_paper_form(teacher_and_ms):
    teacher, teacher_features = teacher_and_ms
    student = build_backbone("resnet34", 3, 6)
    planner = Planner(teacher, student)
    assert isinstance(planner.student_projection, nn.Identity) and planner.teacher_projection is None
    student_features = student.forward_features(torch.randn(4, 3, 64, 64))
    _, loss_pooled = planner(teacher_features, student_features)
    torch.testing.assert_close(loss_pooled, coral(student_features.embedding, teacher_features.embedding))
