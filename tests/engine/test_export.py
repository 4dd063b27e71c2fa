"""Model bundles: contents, ONNX agreement, a fresh-process round trip, same logits as training, clear errors."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from sembridge_engine.data.cache import load_tiles
from sembridge_engine.data.discovery import TileRecord
from sembridge_engine.bundle import BundleError, load_bundle
from sembridge_engine.training.outputs import export_bundle
from sembridge_engine.colours import LAND_COVER_COLOURS
from sembridge_engine.labelling.classify import classify_files, preprocess_for_bundle, read_for_bundle

from .labelling_fixtures import DEMO_CLASSES, TEST_ARCH, TEST_TILE, demo_non_square_rgb, demo_rgb_files, make_run_folder
from .labelling_fixtures import single_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def bundle_path(run_dir) -> Path:
    return export_bundle(run_dir)


def _logits(bundle, paths) -> torch.Tensor:
    tiles = preprocess_for_bundle(bundle, [read_for_bundle(bundle, path) for path in paths])
    with torch.inference_mode():
        return bundle.model(tiles)


def test_bundle_holds_weights_metadata_and_checked_onnx(run_dir, bundle_path):
    assert bundle_path == run_dir / "model.sembridge"
    with zipfile.ZipFile(bundle_path) as archive:
        assert set(archive.namelist()) == {"weights.safetensors", "metadata.json", "model.onnx"}
        metadata = json.loads(archive.read("metadata.json"))
        onnx_bytes = archive.read("model.onnx")
    assert metadata["architecture"] == TEST_ARCH and metadata["tile_size"] == TEST_TILE
    assert metadata["class_names"] == DEMO_CLASSES and metadata["band_names"] == ["R", "G", "B"]
    assert metadata["format_version"] == 1 and metadata["config_hash"] == "0123456789abcdef"
    assert metadata["training"]["final_metrics"] == {"test_oa": 0.5, "test_f1": 0.4}
    assert len(metadata["channel_stats"]["mean"]) == 3 and metadata["created"]
    colours = dict(zip(metadata["class_names"], metadata["class_colours"]))
    assert colours["Forest"] == LAND_COVER_COLOURS["forest"] and colours["River"] == LAND_COVER_COLOURS["river"]
    assert len(set(metadata["class_colours"])) == len(DEMO_CLASSES)
    contract = metadata["onnx"]["input"]
    assert contract["name"] == "pixels" and contract["raw_dtype"] == "uint8" and contract["divisor"] == 255.0
    assert contract["window"] == TEST_TILE and contract["shape"] == ["batch", 3, TEST_TILE, TEST_TILE]
    assert 0 <= metadata["onnx"]["max_abs_logit_diff"] < 1e-3 and 0 <= metadata["onnx"]["max_abs_prob_diff"] < 1e-4

    # Independent check on real demo images of several sizes and formats: raw pixels into the graph
    # (rewritten for each image's size) against classify's read -> preprocess -> model -> softmax.
    import onnxruntime

    from sembridge_engine.bundle.onnx_graph import graph_for_window
    from sembridge_engine.labelling.predictor import make_predictor

    bundle = load_bundle(bundle_path)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    assert [(value.name, value.shape) for value in session.get_inputs()] == [("pixels", ["batch", 3, TEST_TILE, TEST_TILE])]
    arrays = [read_for_bundle(bundle, path) for path in [*demo_rgb_files(1), demo_non_square_rgb()]]
    assert {array.shape[1:] for array in arrays} >= {(256, 256), (249, 256)}
    torch_probabilities = make_predictor(bundle, "cpu").predict(arrays)
    for array, expected in zip(arrays, torch_probabilities):
        graph = graph_for_window(onnx_bytes, array.shape[1], array.shape[2], TEST_TILE)
        window_session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        logits, probabilities = window_session.run(None, {"pixels": array[None].astype(np.float32)})
        assert logits.shape == probabilities.shape == (1, len(DEMO_CLASSES))
        np.testing.assert_allclose(probabilities[0], expected, atol=1e-5)


def test_pixels_graph_scales_16_bit_reflectance_as_training_did(run_dir):
    """A bundle trained on uint16 imagery: the graph divides by 10000 (as scale_by_dtype), at a 64 px window."""
    from safetensors.torch import load_file

    from sembridge_engine.bundle.model import build_model
    from sembridge_engine.bundle.onnx_export import export_checked_pixels_onnx

    info = json.loads((run_dir / "student.json").read_text())
    model = build_model(info["arch"], 3, info["num_classes"], "test")
    model.load_state_dict(load_file(str(run_dir / "student.safetensors")))
    model.eval()
    metadata = {"in_channels": 3, "tile_size": info["tile_size"], "band_names": ["R", "G", "B"],
                "channel_stats": info["channel_stats"], "input_radiometry": {"source_dtype": "uint16"}}
    _, entry = export_checked_pixels_onnx(model, metadata, "test", window=64)
    assert entry["input"]["raw_dtype"] == "uint16" and entry["input"]["divisor"] == 10000.0
    assert entry["input"]["shape"] == ["batch", 3, 64, 64] and [2, 3, 48, 51] in entry["checked_inputs"]
    assert entry["max_abs_prob_diff"] < 1e-4


def test_bundle_round_trip_in_a_fresh_process(bundle_path):
    files = [str(path) for path in demo_rgb_files(1)[:3]]
    script = (
        "import json, sys, torch\n"
        "from sembridge_engine.bundle import load_bundle\n"
        "from sembridge_engine.labelling.classify import preprocess_for_bundle, read_for_bundle\n"
        "bundle = load_bundle(sys.argv[1])\n"
        "tiles = preprocess_for_bundle(bundle, [read_for_bundle(bundle, p) for p in sys.argv[2:]])\n"
        "with torch.inference_mode():\n"
        "    print(json.dumps(bundle.model(tiles).tolist()))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(bundle_path), *files], capture_output=True, text=True,
                               timeout=120, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    fresh = np.array(json.loads(completed.stdout))
    here = _logits(load_bundle(bundle_path), files).numpy()
    assert fresh.shape == (3, len(DEMO_CLASSES))
    np.testing.assert_allclose(fresh, here, atol=1e-5)


def test_bundle_gives_the_training_pipelines_logits(run_dir, bundle_path):
    """Training: load_tiles (rgb) -> train-split ChannelStats.normalise -> student. Bundle: classify's path."""
    from safetensors.torch import load_file

    from sembridge_engine.data.transforms import ChannelStats
    from sembridge_engine.models.backbones import build_backbone

    files = demo_rgb_files(1)
    info = json.loads((run_dir / "student.json").read_text())
    loaded = load_tiles([TileRecord(path, (path.parent.name,)) for path in files], {name: i for i, name in enumerate(DEMO_CLASSES)},
                        info["tile_size"], modality="rgb", workers=1)
    student = build_backbone(info["arch"], 3, info["num_classes"])
    student.load_state_dict(load_file(str(run_dir / "student.safetensors")))
    student.eval()
    with torch.inference_mode():
        training_logits = student(ChannelStats.from_dict(info["channel_stats"]).normalise(loaded.tiles))
    bundle_logits = _logits(load_bundle(bundle_path), files)
    torch.testing.assert_close(bundle_logits, training_logits, atol=1e-5, rtol=1e-5)


def test_export_without_onnx_to_a_chosen_file_leaves_no_temporaries(run_dir, tmp_path):
    out = export_bundle(run_dir, tmp_path / "sub" / "mine.sembridge", check_onnx=False)
    with zipfile.ZipFile(out) as archive:
        assert "model.onnx" not in archive.namelist()
        assert "onnx" not in json.loads(archive.read("metadata.json"))
    assert [path.name for path in out.parent.iterdir()] == ["mine.sembridge"]
    assert load_bundle(out).num_classes == len(DEMO_CLASSES)


def test_export_of_a_run_without_student_names_the_missing_file(tmp_path):
    with pytest.raises(BundleError, match=r"student\.json: not found"):
        export_bundle(tmp_path)


def _rewrite(source: Path, target: Path, metadata_change=None, tensors_change=None) -> Path:
    with zipfile.ZipFile(source) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        tensors = load_tensors(archive.read("weights.safetensors"))
    if metadata_change:
        metadata_change(metadata)
    if tensors_change:
        tensors_change(tensors)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("weights.safetensors", save_tensors(tensors))
    return target


def _seven_classes(metadata):
    metadata["class_names"].append("SeaLake")
    metadata["class_colours"].append("#08519c")
    metadata["num_classes"] = 7


@pytest.mark.parametrize("metadata_change, tensors_change, message", [
    (lambda m: m.pop("tile_size"), None, r"metadata\.json\]: missing key 'tile_size'"),
    (lambda m: m.update(architecture="vgg99"), None, r"'architecture' 'vgg99' is not one of"),
    (lambda m: m["class_names"].pop(), None, r"'class_names' lists 5 classes but 'num_classes' is 6"),
    (_seven_classes, None, r"weights\.safetensors\]: classifier tensor 'classifier\.weight' has 6 outputs but the metadata lists 7 classes"),
    (None, lambda t: t.update({"to_intermediate.conv1.0.weight": torch.zeros(24, 4, 3, 3)}),
     r"tensor 'to_intermediate\.conv1\.0\.weight' has shape \[24, 4, 3, 3\], architecture 'shufflenet_v2_x0_5' expects \[24, 3, 3, 3\]"),
    (None, lambda t: t.pop("classifier.bias"), r"tensor 'classifier\.bias' is missing"),
    (lambda m: m["channel_stats"]["std"].pop(), None, r"'channel_stats\.std' must list 3 numbers"),
])
def test_bad_bundles_are_rejected_naming_file_and_key(bundle_path, tmp_path, metadata_change, tensors_change, message):
    bad = _rewrite(bundle_path, tmp_path / "bad.sembridge", metadata_change, tensors_change)
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(bad)
    assert str(bad) in str(caught.value)


def test_files_that_are_not_bundles_are_rejected(tmp_path, bundle_path):
    not_zip = tmp_path / "model.sembridge"
    not_zip.write_bytes(b"this is not a zip archive")
    with pytest.raises(BundleError, match=r"model\.sembridge: not a SemBridge model bundle \(not a zip file\)"):
        load_bundle(not_zip)
    no_weights = tmp_path / "partial.sembridge"
    with zipfile.ZipFile(no_weights, "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(BundleError, match=r"partial\.sembridge: bundle has no weights\.safetensors"):
        load_bundle(no_weights)
    with pytest.raises(BundleError, match="model bundle not found"):
        load_bundle(tmp_path / "missing.sembridge")


def test_bundle_loading_never_unpickles(bundle_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("load_bundle must not unpickle anything")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_bundle(bundle_path).class_names == DEMO_CLASSES


def test_export_command_writes_the_bundle(run_dir, tmp_path, capsys):
    from sembridge_engine.cli import main

    out = tmp_path / "cli.sembridge"
    assert main(["export", str(run_dir), "--out", str(out), "--no-onnx"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nothing")]) == 1
    assert "student.json: not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_training_run_exports_a_bundle_that_reproduces_its_predictions(tmp_path):
    """Short real run (plain RGB student, 2 classes, 1 epoch): the pipeline's own export, then its
    predictions.csv reproduced by classify_files and the bundle labelling the demo scene."""
    from resources import demo_project
    from sembridge_engine.config import apply_overrides, load_config
    from sembridge_engine.labelling.options import LabelOptions
    from sembridge_engine.labelling.scene import label_scene
    from sembridge_engine.training import train

    from .labelling_fixtures import demo_scene

    config = apply_overrides(load_config(demo_project() / "demo.toml"), [
        "data.rgb_tile_size=32", "train.device=cpu", "student.arch=shufflenet_v2_x0_5", "student.epochs=1",
        "distill.loss=none", "distill.ot1=false", "distill.ot2=false", 'data.classes=["Forest", "River"]',
    ])
    run_dir = train(config, run_dir=tmp_path / "run").run_dir
    bundle = load_bundle(run_dir / "model.sembridge")
    assert bundle.class_names == ["Forest", "River"] and bundle.metadata["onnx"]["max_abs_logit_diff"] < 1e-3
    with (run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    results = classify_files(bundle, [row["path"] for row in rows], top_k=1, device="cpu")
    assert len(results) == len(rows) > 0
    for row, result in zip(rows, results):
        assert result.top[0][0] == row["predicted_class"]
        assert result.top[0][1] == pytest.approx(float(row["confidence"]), abs=1e-4)
    assert bundle.footprint_m == pytest.approx(76.8, abs=1.0) and bundle.radiometry["source_dtype"] == "uint8"
    # The 300 m demo scene is far coarser than the 0.3 m photos: refused, then labelled with an explicit window.
    with pytest.raises(ValueError, match="far coarser than the training data"):
        label_scene(bundle, demo_scene(), tmp_path / "map", LabelOptions(device="cpu"))
    labelled = label_scene(bundle, demo_scene(), tmp_path / "map", LabelOptions(tile=32, device="cpu", polygons=False))
    summary = json.loads(labelled.summary.read_text())
    assert "trained on images 7" in summary["scale_warning"]
    assert {entry["class_name"] for entry in summary["classes"]} == {"Forest", "River"} and summary["labelled_pixels"] > 0
