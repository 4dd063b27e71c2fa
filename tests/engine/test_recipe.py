"""The training recipe: augmentation, BatchNorm re-estimation, windowed model selection,
hubness-aware matching, pretrained weights and gradient shares."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision import models

from sembridge_engine.config import AugmentConfig, DistillConfig
from sembridge_engine.data.transforms import ChannelStats
from sembridge_engine.distill.hubness import busiest_teacher_shares, capacity_assignment, csls, teacher_limit
from sembridge_engine.distill.matching import dynm_match, ssm_match
from sembridge_engine.distill.objective import SemBridgeObjective
from sembridge_engine.models.backbones import Features, PretrainedWeightsError, build_backbone, imagenet_weights_path
from sembridge_engine.training.augment import Augmentation, dihedral
from sembridge_engine.training.loops import recalibrate_batchnorm
from sembridge_engine.training.stage_loop import StageSpec, _window_score
from sembridge_engine.training.student import warn_about_hub_teachers

from .test_training import tiny_config


def _tiles(count: int = 8, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(1))


# -- augmentation -------------------------------------------------------------------------------------
def test_dihedral_elements_are_the_eight_exact_symmetries():
    tile = _tiles(1)
    images = [dihedral(tile, torch.tensor([element])) for element in range(8)]
    assert all(torch.equal(torch.sort(image.flatten()).values, torch.sort(tile.flatten()).values) for image in images)
    assert len({image.numpy().tobytes() for image in images}) == 8
    assert torch.equal(images[0], tile) and torch.equal(images[2], tile.flip(-1).flip(-2))


def test_augmentation_is_seeded_and_keeps_shapes():
    tiles = _tiles()
    augment = Augmentation(dihedral=True, crop_min=0.6, jitter=0.2)
    stats = ChannelStats([0.4] * 3, [0.2] * 3)
    first = augment(tiles, torch.Generator().manual_seed(5), stats)
    again = augment(tiles, torch.Generator().manual_seed(5), stats)
    other = augment(tiles, torch.Generator().manual_seed(6), stats)
    assert first.shape == tiles.shape and torch.equal(first, again) and not torch.equal(first, other)


def test_multispectral_tiles_never_get_colour_jitter():
    settings = AugmentConfig(dihedral=False, crop_min=1.0, colour_jitter=0.5)
    tiles = _tiles(channels=13)
    assert Augmentation.for_stage(settings, rgb=False).jitter == 0.0
    assert torch.equal(Augmentation.for_stage(settings, rgb=False)(tiles, torch.Generator()), tiles)
    assert Augmentation.for_stage(settings, rgb=True).jitter == 0.5


# -- BatchNorm re-estimation ------------------------------------------------------------------------------
def test_batchnorm_statistics_are_the_average_over_training_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    model.eval()
    tiles = _tiles(count=32)
    few = nn.BatchNorm2d(3)
    recalibrate_batchnorm([few], few, tiles[:8], torch.device("cpu"), 8, torch.Generator())
    assert torch.equal(few.running_var, torch.ones(3))  # too few tiles: the running averages are kept
    generator = torch.Generator().manual_seed(3)
    recalibrate_batchnorm([model], model, tiles, torch.device("cpu"), 8, generator)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    inputs = [model[0](tiles[part]) for part in order.split(8)]
    expected_mean = torch.stack([batch.mean((0, 2, 3)) for batch in inputs]).mean(0)
    expected_var = torch.stack([batch.transpose(0, 1).flatten(1).var(1, unbiased=True) for batch in inputs]).mean(0)
    layer = model[1]
    assert torch.allclose(layer.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(layer.running_var, expected_var, atol=1e-5)
    assert not layer.training and not model[3].training and layer.momentum == 0.1


def test_selection_averages_the_score_over_the_window():
    spec = StageSpec("teacher", 3, 2, 4, {}, None, None, None, None, {}, score=lambda row: (row["val_oa"],))
    rows = [{"val_oa": value} for value in (0.2, 0.9, 0.5, 0.6)]
    assert _window_score(spec, rows, 1) == [0.6]
    assert _window_score(spec, rows, 3) == [pytest.approx((0.9 + 0.5 + 0.6) / 3)]
    assert _window_score(spec, rows[:1], 3) == [0.2]


# -- hubness-aware matching -------------------------------------------------------------------------------
def test_capacity_assignment_is_optimal_under_the_limit():
    score = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.85, 0.0, 0.2], [0.7, 0.6, 0.5]])
    positions = capacity_assignment(score, capacity=1.0)
    limit = teacher_limit(1.0, 4, 3)
    assert limit == 2 and torch.bincount(positions, minlength=3).max() <= limit
    best = max(sum(score[row, column] for row, column in enumerate(choice))
               for choice in __import__("itertools").product(range(3), repeat=4)
               if max(choice.count(column) for column in range(3)) <= limit)
    assert float(score.gather(1, positions[:, None]).sum()) == pytest.approx(float(best))


def test_busiest_teacher_shares_per_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    match = torch.tensor([2, 2, 2, 3, 0, 1, 4])
    assert busiest_teacher_shares(match, labels, classes=3, teachers=5).tolist() == pytest.approx([3 / 4, 1 / 3, 0])


@pytest.mark.parametrize("round_index, remedy", [(0, "more matcher epochs"), (2, "matcher settings do not change")])
def test_hub_warning_names_the_crowded_classes_and_the_remedy_of_its_round(round_index, remedy):
    lines = []
    ctx = SimpleNamespace(log=lambda message, level="info": lines.append((message, level)))
    data = SimpleNamespace(rgb_labels=torch.tensor([0, 0, 0, 0, 1, 1, 1]), rgb_train=torch.arange(7),
                           student_classes=["Forest", "River"], ms_tiles=[None] * 5)
    warn_about_hub_teachers(ctx, data, torch.tensor([2, 2, 2, 3, 0, 1, 4]), round_index)
    [(message, level)] = lines
    assert level == "warning" and "Forest (75%)" in message and "River" not in message and remedy in message
    assert message.startswith("SSM" if round_index == 0 else "DynM round 2")
    warn_about_hub_teachers(ctx, data, torch.tensor([2, 1, 2, 3, 0, 1, 4]), round_index)
    assert len(lines) == 1, "no warning when no class has a tile teaching more than half of it"


def test_csls_and_capacity_spread_the_teaching_of_a_hub():
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(8, generator=generator)
    rgb = common + 0.7 * torch.randn(40, 8, generator=generator)
    ms = common + 0.7 * torch.randn(10, 8, generator=generator)
    ms[0] = common  # a hub: the centre of the class, close to every RGB embedding
    labels = torch.zeros(40, dtype=torch.long)
    membership = torch.ones(10, 1, dtype=torch.bool)
    plain, _ = ssm_match(rgb, labels, ms, membership)
    corrected, _ = ssm_match(rgb, labels, ms, membership, similarity="csls", neighbours=5)
    balanced, _ = ssm_match(rgb, labels, ms, membership, capacity=1.0)
    share = lambda match: torch.bincount(match, minlength=10).max().item() / len(match)  # noqa: E731
    assert share(plain) > 0.5
    assert share(corrected) < share(plain) and share(balanced) <= 4 / 40
    logits_student, logits_teacher = torch.randn(40, 3, generator=generator), torch.randn(10, 3, generator=generator)
    rematched, _ = dynm_match(logits_student, labels, logits_teacher, membership, 3.0, capacity=1.0)
    assert torch.bincount(rematched, minlength=10).max() <= teacher_limit(1.0, 40, 10)


def test_csls_is_twice_the_cosine_minus_both_neighbourhood_densities():
    similarity = torch.tensor([[0.9, 0.5], [0.8, 0.1], [0.85, 0.2]])
    scores = csls(similarity, neighbours=2)
    row_density = torch.tensor([[0.7], [0.45], [0.525]])
    column_density = torch.tensor([[0.875, 0.35]])
    assert torch.allclose(scores, 2 * similarity - row_density - column_density)


# -- pretrained weights ---------------------------------------------------------------------------------
def test_pretrained_weights_load_with_the_first_conv_adapted(tmp_path):
    torch.manual_seed(0)
    reference = models.shufflenet_v2_x0_5(weights=None)
    path = tmp_path / "shufflenet.pth"
    torch.save(reference.state_dict(), path)
    model = build_backbone("shufflenet_v2_x0_5", 13, 6, str(path))
    first = reference.conv1[0].weight
    adapted = model.to_intermediate.conv1[0].weight
    assert adapted.shape[1] == 13
    assert torch.allclose(adapted[:, :3], first * 3 / 13) and torch.allclose(adapted[:, 3:6], first * 3 / 13)
    assert torch.equal(model.to_feature_map.conv5[0].weight, reference.conv5[0].weight)
    assert model.classifier.out_features == 6


def test_imagenet_weights_missing_offline_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="never downloads"):
        build_backbone("shufflenet_v2_x0_5", 3, 6, "imagenet")
    path = imagenet_weights_path("shufflenet_v2_x0_5")
    path.parent.mkdir(parents=True)
    torch.save(models.shufflenet_v2_x0_5(weights=None).state_dict(), path)
    assert build_backbone("shufflenet_v2_x0_5", 3, 6, "imagenet").classifier.out_features == 6


# -- label smoothing ---------------------------------------------------------------------------------------
def test_label_smoothing_aims_the_task_loss_at_the_softened_label():
    """Smoothing share e over n classes: the loss is lowest where the label gets 1 - e + e/n and every other
    class e/n, so a student more confident than that is pulled back, one less confident pushed on."""
    n, share = 6, 0.1
    student = build_backbone("shufflenet_v2_x0_5", 3, n)
    objective = SemBridgeObjective.build(DistillConfig(loss="none", ot1=False, ot2=False), student, None, 1,
                                         label_smoothing=share)
    labels = torch.tensor([2])
    aimed = torch.full((1, n), share / n)
    aimed[0, 2] += 1 - share

    def target_logit_gradient(probabilities: torch.Tensor) -> float:
        logits = probabilities.log().requires_grad_()
        objective(Features(None, None, None, logits), None, labels, 0)["task"].backward()
        return logits.grad[0, 2].item()

    assert target_logit_gradient(aimed) == pytest.approx(0.0, abs=1e-6)
    confident = torch.full((1, n), 0.001)
    confident[0, 2] = 1 - 0.001 * (n - 1)
    assert target_logit_gradient(confident) > 0, "gradient descent lowers an over-confident target logit"
    assert target_logit_gradient(torch.full((1, n), 1 / n)) < 0


# -- in a real run ---------------------------------------------------------------------------------------
def test_a_run_logs_gradient_shares_and_uses_the_recipe(tmp_path, monkeypatch):
    from sembridge_engine.training import train

    monkeypatch.setenv("SEMBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    config = tiny_config("distill.teacher_capacity=1.0", "distill.ssm_similarity=csls", "train.selection_window=2",
                         "train.label_smoothing=0.1")
    result = train(config, run_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    student = [row for row in rows if row["stage"] == "student"]
    for row in student:
        shares = [row[f"grad_share_{name}"] for name in ("task", "kd", "ot1", "ot2")]
        assert sum(shares) == pytest.approx(1.0) and all(0 <= share <= 1 for share in shares)
    assert result.status == "finished"
    assert "label_smoothing = 0.1" in (result.run_dir / "config.toml").read_text()
