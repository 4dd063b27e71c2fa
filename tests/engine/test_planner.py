"""SKA Planner and CORAL (Appendix A2)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sembridge_engine.distill import Planner, coral
from sembridge_engine.distill.planner import _cross_modal_weights, _reweight
from sembridge_engine.models import build_backbone
from sembridge_engine.models.backbones import Features

from .planner_reference import ReferencePlanner, reference_coral

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


def test_coral_wide_form_keeps_its_digits_when_covariances_nearly_agree():
    """The Gram form's terms nearly cancel here; computed in float64 it matches the first implementation's
    three-product form on float32 rows, for a loss 1e-6 of each covariance's own squared norm."""
    generator = torch.Generator().manual_seed(3)
    source = torch.randn(32, 2048, generator=generator).relu() * 5
    target = source + 1e-3 * torch.randn(32, 2048, generator=generator)
    value = coral(source, target)
    assert 0 < value < 1e-5 * coral(source, torch.zeros_like(source))   # the latter is ||C_s||^2 / (4 d^2)
    torch.testing.assert_close(value, reference_coral(source, target), rtol=1e-6, atol=0)


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
    # query-mean plans sum to one per head, so eq. 18's normalisation leaves N_own * own (see the docstring)
    torch.testing.assert_close(weights, 4 * own.mean(1))
    torch.testing.assert_close(_cross_modal_weights(own, torch.softmax(torch.randn(2, 8, 9, generator=generator), -1)),
                               weights)
    patches = torch.randn(2, 4, 6, generator=generator)
    refined = _reweight(patches, weights, patches.mean(1))
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


def _feature_map(backbone, bands: int, size: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Random non-negative features (as after a ReLU) in the shape the backbone gives for 32 tiles of size px."""
    with torch.no_grad():
        shape = backbone.forward_features(torch.zeros(1, bands, size, size)).feature_map.shape[1:]
    return scale * torch.randn(32, *shape, generator=generator).relu()


def _losses_and_gradients(planner: nn.Module, z_t: torch.Tensor, z_s: torch.Tensor, reference: bool):
    z_s = z_s.clone().requires_grad_()
    if reference:
        refined, pooled = planner(z_t, z_s)
    else:
        features = [Features(feature_map=z, intermediate=z, embedding=z.mean((2, 3)), logits=z[:, :, 0, 0])
                    for z in (z_t, z_s)]
        refined, pooled = planner(*features)
    (refined + 3 * pooled).backward()
    gradients = {"z_s": z_s.grad, **{name: p.grad for name, p in planner.named_parameters()}}
    return torch.stack([refined.detach(), pooled.detach()]), gradients


def _relative_errors(gradients: dict, exact: dict) -> dict[str, float]:
    """max |g - exact| per tensor, relative to that tensor's largest exact entry, or to 1% of the largest of
    all when smaller: the key biases' gradients are zero in exact arithmetic (softmax ignores a per-query
    shift), so only their size against the rest means anything."""
    overall = max(g.abs().max().item() for g in exact.values())
    return {name: (gradients[name].double() - g).abs().max().item() / max(g.abs().max().item(), 1e-2 * overall)
            for name, g in exact.items()}


@pytest.mark.parametrize("teacher_size, student_arch, student_size, width", [
    (64, "shufflenet_v2_x1_0", 64, None),   # the light pair at the paper's form: 512 vs 1024 channels, 2x2 grids
    (48, "shufflenet_v2_x1_0", 48, None),
    (64, "resnet34", 64, None),             # homogeneous: identity student projection
    (64, "shufflenet_v2_x0_5", 96, 64),     # 2x2 vs 3x3 grids (pooled), reduced width
    (128, "mobilenet_v2", 64, None),        # 4x4 vs 2x2 grids, 512 vs 1280 channels
    (64, "shufflenet_v2_x1_0", 64, 16),     # CORAL's direct (d <= rows) path for both terms
])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: confident plans, subnormal softmax gradients
def test_planner_matches_the_frozen_first_implementation(teacher_and_ms, teacher_size, student_arch, student_size,
                                                         width, scale):
    """Same losses and gradients as the straightforward first implementation from the same parameters:
    to float64 rounding in float64; in float32, losses to 1e-5 and gradients as close to the exact ones
    as the first implementation's own float32 gradients are."""
    teacher = teacher_and_ms[0]
    student = build_backbone(student_arch, 3, 6)
    generator = torch.Generator().manual_seed(teacher_size + student_size)
    z_t = _feature_map(teacher, 13, teacher_size, scale, generator)
    z_s = _feature_map(student, 3, student_size, scale, generator)
    torch.manual_seed(2)
    reference = ReferencePlanner(teacher.feature_channels, student.feature_channels, heads=8, width=width)
    planner = Planner(teacher, student, heads=8, width=width)
    planner.load_state_dict(reference.state_dict())   # same names: checkpoints of either load in the other
    assert planner.state_dict().keys() == reference.state_dict().keys()

    def run(dtype):
        for module in (reference, planner):
            module.to(dtype).zero_grad(set_to_none=True)
        return (_losses_and_gradients(reference, z_t.to(dtype), z_s.to(dtype), True),
                _losses_and_gradients(planner, z_t.to(dtype), z_s.to(dtype), False))

    (exact, exact_gradients), (losses, gradients) = run(torch.float64)
    torch.testing.assert_close(losses, exact, rtol=1e-10, atol=0)
    assert gradients.keys() == exact_gradients.keys()
    assert max(_relative_errors(gradients, exact_gradients).values()) < 1e-9
    (first, first_gradients), (losses, gradients) = run(torch.float32)
    torch.testing.assert_close(losses, first, rtol=1e-5, atol=0)
    first_errors = _relative_errors(first_gradients, exact_gradients)
    for name, error in _relative_errors(gradients, exact_gradients).items():
        assert error <= 2 * first_errors[name] + 1e-6, (name, error, first_errors[name])
