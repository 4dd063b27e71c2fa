"""SSM / DynM matching and the DynM schedule (eqs. 8-13)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sembridge_engine.distill import matching
from sembridge_engine.distill.matching import (dynm_epochs, dynm_match, dynm_match_loop,
                                               random_class_consistent_match, ssm_match)

torch.set_num_threads(1)


def test_dynm_epochs_follow_eq13():
    assert dynm_epochs(30, 30, 5, 200) == [30, 60, 95, 135, 180]
    assert dynm_epochs(30, 30, 5, 136) == [30, 60, 95, 135]
    assert dynm_epochs(30, 30, 5, 135) == [30, 60, 95]
    assert dynm_epochs(10, 10, 5, 60) == [10, 20, 35, 55]
    assert dynm_epochs(5, 4, 0, 20) == [5, 9, 13, 17]
    assert dynm_epochs(30, 30, 5, 30) == []
    with pytest.raises(ValueError, match="delta_e >= 1"):
        dynm_epochs(0, 0, 5, 10)


def test_ssm_picks_the_cosine_argmax_within_the_class():
    ms = torch.tensor([[1.0, 0.0, 0.0],     # class 0
                       [0.6, 0.8, 0.0],     # class 0
                       [0.0, 0.0, 1.0],     # class 1
                       [0.0, 1.0, 0.05],    # class 1  <- the global best for RGB 0 is here
                       [0.7, 0.7, 0.1]])    # classes 0 and 1 (multi-label)
    membership = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=torch.bool)
    rgb = torch.tensor([[0.0, 3.0, 0.0],    # class 0: best in class is MS 1 (cos 0.8) vs MS 3 overall (0.999)
                        [0.0, 0.2, 2.0],    # class 1: MS 2
                        [2.0, 2.0, 0.0]])   # class 1: the multi-label MS 4 beats MS 3
    labels = torch.tensor([0, 1, 1])
    assert (F.normalize(rgb[:1]) @ F.normalize(ms).T).argmax().item() == 3
    indices, scores = ssm_match(rgb, labels, ms, membership)
    assert indices.tolist() == [1, 2, 4]
    expected = torch.stack([F.cosine_similarity(rgb[n], ms[indices[n]], dim=0) for n in range(3)])
    torch.testing.assert_close(scores, expected)


def _random_problem(seed: int, rgb_count=120, ms_count=90, classes=5):
    generator = torch.Generator().manual_seed(seed)
    student = 2 * torch.randn(rgb_count, classes, generator=generator)
    teacher = 3 * torch.randn(ms_count, classes, generator=generator)
    labels = torch.randint(classes, (rgb_count,), generator=generator)
    membership = torch.rand(ms_count, classes, generator=generator) < 0.3   # multi-label
    membership[torch.arange(ms_count), torch.arange(ms_count) % classes] = True
    return student, labels, teacher, membership


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_dynm_equals_the_per_tile_loop(seed):
    student, labels, teacher, membership = _random_problem(seed)
    assert (membership.sum(1) > 1).any()
    fast_indices, fast_scores = dynm_match(student, labels, teacher, membership, gamma=3.0)
    loop_indices, loop_scores = dynm_match_loop(student, labels, teacher, membership, gamma=3.0)
    assert torch.equal(fast_indices, loop_indices)
    torch.testing.assert_close(fast_scores, loop_scores, atol=1e-6, rtol=1e-5)
    assert membership[fast_indices, labels].all()


def test_dynm_minimises_kl_within_class_and_chunks_consistently(monkeypatch):
    student, labels, teacher, membership = _random_problem(3, rgb_count=40, ms_count=30, classes=3)
    indices, scores = dynm_match(student, labels, teacher, membership, gamma=3.0)
    for n in range(0, 40, 7):
        candidates = torch.nonzero(membership[:, labels[n]]).squeeze(1)
        kl = F.kl_div(F.log_softmax(student[n] / 3, 0).expand(len(candidates), -1),
                      F.softmax(teacher[candidates] / 3, 1), reduction="none").sum(1)
        assert indices[n].item() == candidates[kl.argmin()].item()
        assert scores[n].item() == pytest.approx(kl.min().item(), abs=1e-5)
    monkeypatch.setattr(matching, "_MAX_BLOCK_ELEMENTS", 16)
    chunked_indices, _ = dynm_match(student, labels, teacher, membership, gamma=3.0)
    chunked_ssm, _ = ssm_match(student, labels, teacher, membership)
    monkeypatch.undo()
    assert torch.equal(chunked_indices, indices)
    assert torch.equal(chunked_ssm, ssm_match(student, labels, teacher, membership)[0])


def test_random_matching_is_class_consistent_and_seeded():
    _, labels, _, membership = _random_problem(4)
    first = random_class_consistent_match(labels, membership, torch.Generator().manual_seed(7))
    again = random_class_consistent_match(labels, membership, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert membership[first, labels].all()
    assert len(set(first.tolist())) > 20


def test_a_class_without_ms_tiles_is_reported():
    membership = torch.tensor([[True, False], [True, False]])
    with pytest.raises(ValueError, match="class index 1 has 1 RGB tiles but no MS tile"):
        ssm_match(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(2, 4), membership)
    with pytest.raises(ValueError, match="restrict the teacher's logits"):
        dynm_match(torch.randn(2, 2), torch.tensor([0, 0]), torch.randn(2, 3), membership, 3.0)
