"""distill.ot_scale: CORAL normalised by each side's covariance trace instead of the paper's 4 d^2."""
from __future__ import annotations

import json

import pytest
import torch

from sembridge_engine.distill import Planner, coral
from sembridge_engine.models import build_backbone
from sembridge_engine.models.backbones import Features

from .test_training import teacher_cache, tiny_config

torch.set_num_threads(1)


def _trace_coral_directly(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||C_s / tr C_s - C_t / tr C_t||_F^2 with the d x d unbiased covariances, as written."""
    covariance_s, covariance_t = torch.cov(source.T), torch.cov(target.T)
    return ((covariance_s / covariance_s.trace() - covariance_t / covariance_t.trace()) ** 2).sum()


def _sides(rows_s: int, rows_t: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows_s * width + rows_t)
    source = torch.randn(rows_s, width, generator=generator, dtype=torch.float64)
    mixing = torch.randn(width, width, generator=generator, dtype=torch.float64)
    return source, 3 * torch.randn(rows_t, width, generator=generator, dtype=torch.float64) @ mixing + 1


@pytest.mark.parametrize("rows_s, rows_t, width", [(7, 5, 4), (4, 6, 30)])  # direct and Gram-matrix paths
def test_trace_coral_equals_the_direct_covariance_computation(rows_s, rows_t, width):
    source, target = _sides(rows_s, rows_t, width)
    expected = _trace_coral_directly(source, target)
    torch.testing.assert_close(coral(source, target, "trace"), expected)
    assert 0 < expected <= 2
    torch.testing.assert_close(coral(source.float(), target.float(), "trace").double(), expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("width", [4, 30])
def test_trace_coral_ignores_the_scale_of_either_side_and_the_paper_form_does_not(width):
    source, target = _sides(6, 6, width)
    trace = coral(source, target, "trace")
    for factor in (1e-3, 50.0):
        torch.testing.assert_close(coral(factor * source, target, "trace"), trace)
        torch.testing.assert_close(coral(source, factor * target, "trace"), trace)
    torch.testing.assert_close(coral(10.0 * source, 10.0 * target), 1e4 * coral(source, target))
    assert coral(source, 0.5 * source + 2.0, "trace").item() == pytest.approx(0.0, abs=1e-12)


def test_an_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be one of"):
        coral(torch.randn(4, 3), torch.randn(4, 3), "variance")
    teacher = build_backbone("shufflenet_v2_x0_5", 13, 6)
    with pytest.raises(ValueError, match="ot_scale must be one of"):
        Planner(teacher, build_backbone("shufflenet_v2_x0_5", 3, 6), ot_scale="gradnorm")


def test_the_planner_applies_the_scale_to_both_terms():
    """Equal widths keep the paper's homogeneous form, so L_ot2 is CORAL of the two pooled embeddings."""
    torch.manual_seed(0)
    teacher, student = build_backbone("shufflenet_v2_x0_5", 13, 6).eval(), build_backbone("shufflenet_v2_x0_5", 3, 6)
    with torch.no_grad():
        teacher_features = teacher.forward_features(torch.randn(6, 13, 64, 64))
        student_features: Features = student.forward_features(torch.randn(6, 3, 64, 64))
    paper = Planner(teacher, student)
    planner = Planner(teacher, student, ot_scale="trace")
    planner.load_state_dict(paper.state_dict())
    refined, pooled = planner(teacher_features, student_features)
    refined_paper, pooled_paper = paper(teacher_features, student_features)
    torch.testing.assert_close(pooled, coral(student_features.embedding, teacher_features.embedding, "trace"))
    torch.testing.assert_close(pooled_paper, coral(student_features.embedding, teacher_features.embedding))
    assert 0 < refined <= 2 and refined != refined_paper


def test_a_trace_scaled_run_gives_the_alignment_terms_a_larger_gradient_share(tmp_path):
    from sembridge_engine.training import train

    shares = {}
    with teacher_cache(tmp_path / "cache"):  # the second run reuses the first run's teacher and matcher
        for scale in ("paper", "trace"):
            result = train(tiny_config("student.epochs=1", f"distill.ot_scale={scale}"), run_dir=tmp_path / scale)
            rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            shares[scale] = next(row for row in rows if row["stage"] == "student")
    for term in ("ot1", "ot2"):
        assert shares["trace"][f"grad_share_{term}"] > 10 * shares["paper"][f"grad_share_{term}"] > 0
    assert shares["trace"]["loss_ot1"] > shares["paper"]["loss_ot1"]
