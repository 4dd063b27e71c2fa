"""The teacher fit check: its maths on constructed views, and teacher_fit on real tiny demo runs."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from resources import demo_project
from sembridge_engine.cli import main
from sembridge_engine.config import apply_overrides, load_config
from sembridge_engine.events import Cancelled, CancelToken
from sembridge_engine.training import train
from sembridge_engine.training.resemblance import (
    TeacherFit, agreement_p_value, class_means, class_permutations, compare, most_resembled, non_target, teacher_fit,
)
from sembridge_engine.training.rundir import RunFolder


def random_means(n: int, seed: int) -> torch.Tensor:
    """A generic (n, n) per-class mean-probability matrix: each class mostly itself, unequal resemblances."""
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, n, generator=generator) + 4 * torch.eye(n), 1)


def paired_means() -> torch.Tensor:
    """Six classes in three pairs, each resembling its partner: relabellings that keep the pairs (2^3 pair
    swaps x 3! pair orders = 48 of 720) give the very same matrix."""
    means = torch.full((6, 6), 0.05)
    for first in (0, 2, 4):
        means[first, first + 1] = means[first + 1, first] = 0.25
    means.fill_diagonal_(0.5)
    return means / means.sum(1, keepdim=True)


def test_non_target_drops_the_class_itself_and_renormalises():
    means = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    view = non_target(means)
    assert torch.allclose(view, torch.tensor([[0.75, 0.25], [2 / 3, 1 / 3], [0.5, 0.5]]))
    assert most_resembled(view).tolist() == [1, 0, 0]


def test_class_means_equals_the_per_class_mean_of_its_members():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 5, generator=generator)
    members = torch.rand(40, 5, generator=generator) > 0.6   # several classes per tile, as multi-label archives
    members[torch.arange(5), torch.arange(5)] = True
    probabilities = torch.softmax(logits / 4.0, 1)
    reference = torch.stack([probabilities[members[:, c]].mean(0) for c in range(5)])
    assert torch.allclose(class_means(logits, members, 4.0), reference, atol=1e-6)


@pytest.mark.parametrize("means, automorphisms", [(random_means(6, 0), 1), (paired_means(), 48)])
def test_identical_views_agree_fully_with_the_exact_p_value(means, automorphisms):
    view = non_target(means)
    same_top, cosine = compare(view, view)
    assert same_top == 6 and cosine == pytest.approx(1.0)
    assert agreement_p_value(means, view) == pytest.approx(automorphisms / math.factorial(6))


def test_a_teacher_with_the_classes_shuffled_agrees_no_better_than_chance():
    rgb_means = paired_means()
    shuffle = torch.tensor([0, 2, 4, 1, 3, 5])   # the teacher pairs 0-3, 1-4, 2-5 where the RGB view pairs 0-1, 2-3, 4-5
    rgb = non_target(rgb_means)
    teacher_means = rgb_means[shuffle][:, shuffle]
    same_top, cosine = compare(non_target(teacher_means), rgb)
    assert same_top == 0 and cosine < 0
    assert agreement_p_value(teacher_means, rgb) > 0.5
    # Over every shuffle of the classes the p-value is uniform, as a test's must be when the views are
    # unrelated: at most 5 % of the shuffles reach p <= 0.05.
    rgb_means = random_means(5, 5)
    rgb = non_target(rgb_means)
    p_values = torch.tensor([agreement_p_value(rgb_means[shuffle][:, shuffle], rgb)
                             for shuffle in class_permutations(5)[0]])
    assert (p_values <= 0.05).sum() <= 0.05 * 120 and 0.4 < p_values.mean() < 0.6
    assert p_values.min() == pytest.approx(1 / 120)


def test_more_than_eight_classes_are_tested_on_a_seeded_sample():
    permutations, exact = class_permutations(9, samples=500, seed=3)
    assert not exact and permutations.shape == (500, 9)
    assert torch.equal(permutations.sort(1).values, torch.arange(9).expand(500, 9))
    assert torch.equal(permutations, class_permutations(9, samples=500, seed=3)[0])
    means = random_means(9, 4)
    assert agreement_p_value(means, non_target(means), samples=500) == pytest.approx(1 / 501)
    assert class_permutations(4)[0].shape == (24, 4) and class_permutations(4)[1]


def fit(p_value: float, cosine: float, classes: int = 6) -> TeacherFit:
    names = [f"c{i}" for i in range(classes)]
    return TeacherFit(names, 2, cosine, p_value, classes / (classes - 1), [(name, name, name) for name in names], 4.0)


def test_the_verdict_reads_the_p_value_and_the_sign_of_the_cosine():
    assert fit(0.01, 0.4).verdict.startswith("the teacher's resemblances match the RGB classes' (p = 0.01)")
    assert "no better than chance" in fit(0.3, 0.4).verdict
    assert "no better than chance" in fit(0.01, -0.4).verdict
    assert "only 3 classes" in fit(0.17, 0.9, classes=3).verdict
    assert fit(0.01, 0.4).to_dict()["per_class"][0] == {"class": "c0", "teacher": "c0", "rgb": "c0"}


TINY = [
    "data.ms_tile_size=32", "data.rgb_tile_size=32", "train.device=cpu",
    "teacher.arch=shufflenet_v2_x0_5", "teacher.epochs=2", "teacher.batch_size=32",
    "student.arch=shufflenet_v2_x0_5", "student.epochs=1", "student.batch_size=32",
    "distill.ssm=false", "distill.dynm=false", "distill.ot1=false", "distill.ot2=false",
]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny real runs on the demo project: a KD run (with its teacher) and an RGB-only run."""
    root = tmp_path_factory.mktemp("fit")
    torch.set_num_threads(1)
    config = load_config(demo_project() / "demo.toml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEMBRIDGE_CACHE_DIR", str(root / "cache"))
        for name, loss in (("kd", "kd"), ("rgb_only", "none")):
            train(apply_overrides(config, [*TINY, f"distill.loss={loss}"]), run_dir=root / name)
    return {name: root / name for name in ("kd", "rgb_only")}


def test_teacher_fit_on_real_runs(demo_runs):
    result = teacher_fit(demo_runs["kd"], demo_runs["rgb_only"])
    print(json.dumps(result.to_dict(), indent=1))
    assert result.classes == ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Residential", "River"]
    assert result.temperature == 4.0 and result.chance_same_top == pytest.approx(1.2)
    assert 0 <= result.same_top <= 6 and -1 <= result.cosine <= 1
    assert 1 / 720 <= result.p_value <= 1
    assert [row[0] for row in result.per_class] == result.classes
    assert all(teacher != name and rgb != name and {teacher, rgb} <= set(result.classes)
               for name, teacher, rgb in result.per_class)
    assert result.verdict.startswith("the teacher's resemblances")
    assert teacher_fit(demo_runs["kd"], demo_runs["rgb_only"], temperature=1.0).temperature == 1.0


def test_teacher_fit_stops_when_cancelled(demo_runs):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        teacher_fit(demo_runs["kd"], demo_runs["rgb_only"], cancel=cancel)


def test_teacher_fit_rejects_runs_that_cannot_serve(demo_runs, tmp_path):
    with pytest.raises(ValueError, match=f"{demo_runs['kd']}: its student learnt from a teacher .*independent RGB view"):
        teacher_fit(demo_runs["kd"], demo_runs["kd"])
    with pytest.raises(ValueError, match=f"{demo_runs['rgb_only']}: no teacher checkpoint"):
        teacher_fit(demo_runs["rgb_only"], demo_runs["rgb_only"])
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'}: no such folder"):
        teacher_fit(demo_runs["kd"], tmp_path / "missing")
    unfinished = shutil.copytree(demo_runs["rgb_only"], tmp_path / "unfinished")
    RunFolder(unfinished).update_run_json(status="cancelled")
    with pytest.raises(ValueError, match=f"{unfinished}: the run is cancelled, not finished"):
        teacher_fit(demo_runs["kd"], unfinished)


def test_cli_teacher_fit_prints_the_check_and_fails_clearly(demo_runs, tmp_path, capsys):
    assert main(["teacher-fit", str(demo_runs["kd"]), str(demo_runs["rgb_only"])]) == 0
    out = capsys.readouterr().out
    assert "centred cosine" in out and "p =" in out and "River" in out
    assert main(["teacher-fit", str(demo_runs["kd"]), str(demo_runs["rgb_only"]), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classes"][0] == "AnnualCrop" and len(printed["per_class"]) == 6 and printed["verdict"]
    assert main(["teacher-fit", str(demo_runs["kd"]), str(demo_runs["kd"])]) == 1
    assert "cannot serve as the independent RGB view" in capsys.readouterr().err
    assert main(["teacher-fit", str(tmp_path / "missing"), str(demo_runs["rgb_only"])]) == 1
    assert "no such folder" in capsys.readouterr().err
