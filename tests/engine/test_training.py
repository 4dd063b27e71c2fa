"""The staged pipeline on the real demo imagery: outputs, metrics, cancel/resume, reuse, baseline.

Runs are tiny (32 px tiles, shufflenet_v2_x0_5, 1-2 epochs) so the whole file stays within a few
minutes on two shared cores.
"""
import contextlib
import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from resources import demo_project
from sembridge_engine.config import apply_overrides, load_config
from sembridge_engine.events import (BatchProgress, CancelToken, EpochFinished, LogLine, RunFailed, RunFinished,
                                     StageStarted)
from sembridge_engine.training import resume, train
from sembridge_engine.training.checkpoint import CheckpointError
from sembridge_engine.device import describe_device, resolve_device
from sembridge_engine.training.rundir import TIMING_KEYS, RunFolder
from sembridge_engine.training.student import HUB_SHARE

TINY = [
    "data.ms_tile_size=32", "data.rgb_tile_size=32", "train.device=cpu", "train.scheduler=cosine",
    "teacher.arch=shufflenet_v2_x0_5", "teacher.epochs=1", "teacher.batch_size=32",
    "matcher.arch=shufflenet_v2_x0_5", "matcher.epochs=1", "matcher.batch_size=32", "matcher.embed_dim=32",
    "student.arch=shufflenet_v2_x0_5", "student.epochs=2", "student.batch_size=32",
    "distill.loss=kd", "distill.ssm=true", "distill.dynm=true", "distill.ot1=true", "distill.ot2=true",
    "distill.e0=1", "distill.delta_e=1", "distill.probe_size=16",
]
COMMON_KEYS = {"stage", "epoch", "val_oa", "val_macro_f1", "epoch_seconds", "loss_task", "loss_kd", "loss_ot1",
               "loss_ot2", "loss_total", "train_acc"}
STUDENT_KEYS = COMMON_KEYS | {"transport_cost_logit", "transport_cost_feature", "per_class_f1", "confusion"}
N_CLASSES = 6


def tiny_config(*extra):
    # One thread: on cores shared with other jobs, two spinning OpenMP threads per process are
    # several times slower than one.
    torch.set_num_threads(1)
    return apply_overrides(load_config(demo_project() / "demo.toml"), [*TINY, *extra])


@contextlib.contextmanager
def teacher_cache(path: Path):
    previous = os.environ.get("SEMBRIDGE_CACHE_DIR")
    os.environ["SEMBRIDGE_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SEMBRIDGE_CACHE_DIR", None)
        else:
            os.environ["SEMBRIDGE_CACHE_DIR"] = previous


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows):
    return [{key: value for key, value in row.items() if key not in TIMING_KEYS} for row in rows]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted kd + SemBridge run (teacher -> matcher -> student with SSM, DynM, OT)."""
    root = tmp_path_factory.mktemp("full")
    events = []
    with teacher_cache(root / "cache"):
        result = train(tiny_config(), run_dir=root / "run", callback=events.append)
    return result, events, root


def test_full_run_writes_metrics_matches_and_model(full_run):
    result, events, _ = full_run
    run_dir = result.run_dir
    assert result.status == "finished"
    rows = read_metrics(run_dir)
    assert [(row["stage"], row["epoch"]) for row in rows] == [("teacher", 1), ("matcher", 1), ("student", 1), ("student", 2)]
    for row in rows:
        assert COMMON_KEYS <= row.keys()
    assert rows[1]["val_retrieval_top1"] is not None
    students = [row for row in rows if row["stage"] == "student"]
    for row in students:
        assert STUDENT_KEYS <= row.keys()
        assert row["transport_cost_logit"] > 0 and row["transport_cost_feature"] > 0
        assert len(row["per_class_f1"]) == N_CLASSES
        assert sum(map(sum, row["confusion"])) == 36
        assert row["loss_total"] == pytest.approx(row["loss_task"] + 0.4 * row["loss_kd"]
                                                  + 0.6 * (row["loss_ot1"] + row["loss_ot2"]), rel=1e-4)
    assert 0 <= students[0]["matching_changed_fraction"] <= 1
    epoch_events = [event.metrics for event in events if isinstance(event, EpochFinished)]
    assert without_timing(epoch_events) == without_timing(rows)
    assert isinstance(events[-1], RunFinished)

    assert (run_dir / "config.toml").exists() and (run_dir / "student.safetensors").exists()
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["status"] == "finished" and run_info["device"].startswith("CPU")
    meta = json.loads((run_dir / "student.json").read_text())
    assert meta["class_names"] == ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Residential", "River"]
    assert meta["in_channels"] == 3 and meta["tile_size"] == 32 and len(meta["channel_stats"]["mean"]) == 3
    assert meta["final_metrics"]["test_oa"] == run_info["summary"]["test_oa"]
    with open(run_dir / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert {row["split"] for row in predictions} == {"val", "test"} and len(predictions) == 72
    correct = [row["true_class"] == row["predicted_class"] for row in predictions if row["split"] == "test"]
    assert sum(correct) / len(correct) == pytest.approx(meta["final_metrics"]["test_oa"])
    for round_index in (0, 1):
        with open(run_dir / "matches" / f"round_{round_index}.csv", newline="") as handle:
            table = list(csv.DictReader(handle))
        assert len(table) == 108
        assert all(Path(row["ms_path"]).parent.name == row["class"] == Path(row["rgb_path"]).parent.name for row in table)
    diversity_by_round = RunFolder(run_dir).teacher_diversity()
    for round_index, opening in ((0, "SSM pairs most"), (1, "DynM round 1 pairs most")):
        crowded = {name for name, diversity in diversity_by_round[round_index].items()
                   if diversity.busiest_share > HUB_SHARE}
        warnings = [event.message for event in events
                    if isinstance(event, LogLine) and event.message.startswith(opening)]
        named = {name for name in meta["class_names"] if any(f"{name} (" in message for message in warnings)}
        assert named == crowded and len(warnings) == int(bool(crowded)), f"round {round_index}'s hub warning"


def test_cancel_mid_epoch_then_resume_reproduces_the_uninterrupted_run(full_run, tmp_path):
    reference = read_metrics(full_run[0].run_dir)
    token, events, seen = CancelToken(), [], []

    def cancel_in_student_epoch_two(event):
        events.append(event)
        if isinstance(event, BatchProgress):
            seen.append(event)
            if event.stage == "student" and event.epoch == 2 and event.done == 2:
                token.cancel()

    with teacher_cache(tmp_path / "cache"):
        cancelled = train(tiny_config(), run_dir=tmp_path / "run", callback=cancel_in_student_epoch_two, cancel=token)
        assert cancelled.status == "cancelled"
        assert isinstance(events[-1], RunFailed) and events[-1].cancelled
        assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "cancelled"
        assert [row["stage"] for row in read_metrics(tmp_path / "run")] == ["teacher", "matcher", "student"]
        resumed_events = []
        resumed = resume(tmp_path / "run", callback=resumed_events.append)
    assert resumed.status == "finished"
    assert not any(isinstance(event, StageStarted) and event.stage != "student" for event in resumed_events)
    assert without_timing(read_metrics(tmp_path / "run")) == without_timing(reference)
    assert resumed.summary["test_oa"] == full_run[0].summary["test_oa"]


def test_corrupt_checkpoint_gives_an_error_naming_the_file(full_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(full_run[0].run_dir, run_dir)
    checkpoint = run_dir / "checkpoints" / "student.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        resume(run_dir)


def test_teacher_from_reuses_teacher_and_matcher(full_run, tmp_path):
    events = []
    config = tiny_config("student.epochs=1", "distill.planner_width=64", f"student.teacher_from={full_run[0].run_dir}")
    with teacher_cache(tmp_path / "empty-cache"):
        result = train(config, run_dir=tmp_path / "run", callback=events.append)
    started = [event.stage for event in events if isinstance(event, StageStarted)]
    assert started == ["student"]
    assert [row["stage"] for row in read_metrics(result.run_dir)] == ["student"]
    assert result.summary["stages"]["teacher"]["source"].startswith("run ")
    assert not (result.run_dir / "checkpoints" / "teacher.pt").exists()
    planner = torch.load(result.run_dir / "checkpoints" / "student.pt", weights_only=True)["modules"]["planner"]
    assert planner["teacher_projection"].shape[0] == 64


def test_teacher_cache_makes_a_rerun_skip_the_teacher(full_run, tmp_path):
    events = []
    with teacher_cache(full_run[2] / "cache"):
        result = train(tiny_config("student.epochs=1"), run_dir=tmp_path / "run", callback=events.append)
    assert [event.stage for event in events if isinstance(event, StageStarted)] == ["student"]
    assert result.summary["stages"]["teacher"]["source"].startswith("cache ")


def first_stage(config, run_dir: Path, cache: Path) -> tuple[list[str], str]:
    """The stage a run starts with, and its status: the run is cancelled as soon as that stage starts."""
    token = CancelToken()
    started = []

    def stop_at_first_stage(event) -> None:
        if isinstance(event, StageStarted):
            started.append(event.stage)
            token.cancel()

    with teacher_cache(cache):
        result = train(config, run_dir=run_dir, callback=stop_at_first_stage, cancel=token)
    return started, result.status


def test_teacher_cache_is_not_used_when_the_config_says_so(full_run, tmp_path):
    """The user can ask for a fresh teacher although a cached one fits."""
    config = tiny_config("student.epochs=1", "student.use_teacher_cache=false")
    assert first_stage(config, tmp_path / "run", full_run[2] / "cache") == (["teacher"], "cancelled")


@pytest.mark.parametrize("change", ["augment.dihedral=false", "train.precise_bn=false", "train.label_smoothing=0.1"])
def test_a_changed_recipe_trains_a_new_teacher_instead_of_the_cached_one(full_run, tmp_path, change):
    config = tiny_config("student.epochs=1", change)
    assert first_stage(config, tmp_path / "run", full_run[2] / "cache") == (["teacher"], "cancelled")


@pytest.mark.parametrize("change, first", [("matcher.epochs=2", "matcher"), ("augment.crop_min=0.8", "matcher"),
                                           ("train.seed=5", "student"), ("matcher.epochs=0", "student")])
def test_teacher_from_brings_its_matcher_only_when_this_run_asks_for_the_same_one(full_run, tmp_path, change, first):
    """The named teacher is always reused; its run's matcher only with this run's matcher settings and recipe
    (a seed is a random draw, not a setting; matcher epochs 0 asks for no training)."""
    config = tiny_config("student.epochs=1", change, f"student.teacher_from={full_run[0].run_dir}")
    assert first_stage(config, tmp_path / "run", tmp_path / "empty-cache") == ([first], "cancelled")


def test_teacher_from_rejects_an_incompatible_run(full_run, tmp_path):
    config = tiny_config("student.epochs=1", "data.ms_tile_size=48", f"student.teacher_from={full_run[0].run_dir}")
    with teacher_cache(tmp_path / "cache"), pytest.raises(ValueError, match="tile_size"):
        train(config, run_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_loss_none_without_ot_is_a_plain_rgb_baseline(tmp_path):
    events = []
    config = tiny_config("student.epochs=1", "distill.loss=none", "distill.ot1=false", "distill.ot2=false")
    result = train(config, run_dir=tmp_path / "run", callback=events.append)
    assert [event.stage for event in events if isinstance(event, StageStarted)] == ["student"]
    (row,) = read_metrics(result.run_dir)
    assert row["loss_kd"] == 0 and row["transport_cost_logit"] is None
    assert row["loss_total"] == pytest.approx(row["loss_task"])
    assert not (result.run_dir / "matches").exists()
    assert (result.run_dir / "student.safetensors").exists()


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    assert "CPU" in describe_device(torch.device("cpu"))


@pytest.mark.slow
def test_teacher_learns_the_demo_ms_tiles_far_above_chance(tmp_path):
    demo = load_config(demo_project() / "demo.toml")
    config = tiny_config(
        f"teacher.arch={demo.teacher.arch}", f"teacher.epochs={demo.teacher.epochs}",
        f"teacher.batch_size={demo.teacher.batch_size}", f"teacher.lr={demo.teacher.lr}",
        f"data.ms_tile_size={demo.data.ms_tile_size}",
        "distill.ssm=false", "distill.dynm=false", "distill.ot1=false", "distill.ot2=false", "student.epochs=1",
    )
    with teacher_cache(tmp_path / "cache"):
        result = train(config, run_dir=tmp_path / "run")
    best = max(row["val_oa"] for row in read_metrics(result.run_dir) if row["stage"] == "teacher")
    assert best >= 0.6, f"teacher val OA {best:.3f}; chance is {1 / N_CLASSES:.3f}"


def test_cli_train_prints_a_summary_and_fails_clearly(tmp_path, capsys):
    from sembridge_engine.cli import main

    overrides = [item for pair in (("--set", value) for value in TINY) for item in pair]
    baseline = ["--set", "student.epochs=1", "--set", "distill.loss=none", "--set", "distill.ot1=false",
                "--set", "distill.ot2=false"]
    config = str(demo_project() / "demo.toml")
    assert main(["train", "--config", config, "--out", str(tmp_path / "run"), *overrides, *baseline]) == 0
    out = capsys.readouterr().out
    assert "student test OA" in out and str(tmp_path / "run") in out
    assert main(["resume", str(tmp_path / "run")]) == 0
    assert main(["train", "--config", config, "--set", "distill.loss=magic"]) == 2
    assert "distill.loss" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "missing")]) == 1


def test_multi_label_manifest_trains_a_bce_teacher_and_matches_within_every_label(tmp_path):
    """A BigEarthNet-style CSV manifest: River tiles also carry Forest; the student stays single-label."""
    ms_root = demo_project() / "ms"
    labels_of = {}
    rows = ["path,labels"]
    for tile in sorted(ms_root.glob("*/*.tif")):
        labels = [tile.parent.name] + (["Forest"] if tile.parent.name == "River" else [])
        labels_of[str(tile)] = set(labels)
        rows.append(f"{tile},{';'.join(labels)}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")

    with teacher_cache(tmp_path / "cache"):
        result = train(tiny_config(f"data.ms_path={manifest}"), run_dir=tmp_path / "run")

    assert result.status == "finished"
    teacher_rows = [row for row in read_metrics(result.run_dir) if row["stage"] == "teacher"]
    assert teacher_rows and all(0.0 <= row["val_macro_f1"] <= 1.0 for row in teacher_rows)
    assert json.loads((result.run_dir / "student.json").read_text())["num_classes"] == N_CLASSES
    for table in sorted((result.run_dir / "matches").glob("round_*.csv")):
        with table.open() as handle:
            for row in csv.DictReader(handle):
                assert row["class"] in labels_of[row["ms_path"]], f"{table.name}: {row}"
